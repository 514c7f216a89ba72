"""Every exception protstore raises on purpose, in one family.

Library code raises these with the file / protein / frame in the message; only ``cli.py`` turns
them into a one-line message and a non-zero exit code. Other modules re-export some of them
where users expect them (``protstore.batching.PlanError``, ``protstore.train.TrainingDiverged``).
"""


class ProtstoreError(Exception):
    """Base class of every error a user can cause and fix."""


class InputError(ProtstoreError):
    """A source file is unreadable, malformed, or holds data that fails validation."""


class PickleRefusedError(InputError):
    """A file holds pickled Python objects and pickle loading was not explicitly allowed."""


class UnknownResidueError(InputError):
    """A residue name is not in the vocabulary and ``UNK`` was not allowed."""


class DocumentError(ProtstoreError):
    """A metadata document (store, protein, plan, checkpoint, priors, config...) does not match
    its JSON Schema; the message names the file and the field."""


class UndecodableDocument(DocumentError, ValueError):
    """A metadata file that is not JSON (damaged, truncated, or not a document at all); the
    message names the file. Also a ValueError, as ``json.loads`` raises."""


class StoreError(ProtstoreError):
    """The store is missing, malformed, or an operation on it is not allowed."""


class LocationError(ProtstoreError):
    """A path or URL that cannot be opened or written as asked (unknown protocol, missing
    file system library, bad storage options)."""


class ClaimError(StoreError):
    """Another writer holds the claim on a protein being written (object-storage commits)."""


class ChunkError(StoreError):
    """A chunk of a stored array is missing or does not decode: ``where`` names the array and
    the chunk, ``reason`` what is wrong."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


class ProteinExistsError(StoreError):
    """A protein id is already in the store with a different source (use overwrite)."""


class PlanError(ProtstoreError):
    """Invalid bucket-plan parameters, or a plan that does not fit the store."""


class SelectionError(ProtstoreError):
    """A ``--select`` expression that is not valid, names an unknown field, or names a field a
    protein lacks (e.g. secondary structure of a source without DSSP); the message names the
    expression and the protein."""


class ConfigError(ProtstoreError):
    """An invalid training, loader or model option."""


class CheckpointError(ProtstoreError):
    """A checkpoint that cannot be written or read as asked."""


class TrainingDiverged(ProtstoreError):
    """The loss or the parameters became non-finite."""


class TrajectoryError(ProtstoreError):
    """A trajectory that cannot be written, resumed or read as asked (``protstore simulate``)."""


class SimulationUnstable(ProtstoreError):
    """A replica of a simulation failed a stability check (non-finite values, a bond out of
    its physical range, more neighbours than the network's capacity)."""


class ClusterError(ProtstoreError):
    """The dask cluster cannot go on (e.g. no worker has been alive for too long); what was
    committed stays, and a re-run of the same command resumes."""


class StoreVersionWarning(UserWarning):
    """Proteins a run, plan or evaluation uses changed since the store version it recorded
    (named in the message; ``--store-version`` reads the store as it was)."""


class CatalogWarning(UserWarning):
    """A damaged catalog segment, named in the message, was not trusted: the proteins it
    names were read from their groups' own documents (``protstore validate --repair`` replaces
    the segment)."""
