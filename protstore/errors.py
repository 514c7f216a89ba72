"""One exception family for user-facing errors.

Library code raises these with the file / protein / frame in the message; only ``cli.py`` turns
them into a one-line message and a non-zero exit code.
"""


class ProtstoreError(Exception):
    """Base class of every error a user can cause and fix."""


class InputError(ProtstoreError):
    """A source file is unreadable, malformed, or holds data that fails validation."""


class PickleRefusedError(InputError):
    """A file holds pickled Python objects and pickle loading was not explicitly allowed."""


class UnknownResidueError(InputError):
    """A residue name is not in the vocabulary and ``UNK`` was not allowed."""


class StoreError(ProtstoreError):
    """The store is missing, malformed, or an operation on it is not allowed."""


class ProteinExistsError(StoreError):
    """A protein id is already in the store with a different source (use overwrite)."""
