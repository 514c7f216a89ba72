"""What every exporter shares: a plan's frames, protein by protein and one stored chunk at a
time (memory stays flat in the size of the data), the optional prior-delta forces, and the
output file (written locally, then moved or uploaded into place).

An export is one HDF5 file. It is written to a temporary file beside the target (local) or in
the temporary directory (any other fsspec URL) and, once complete, renamed onto the target
or uploaded with ``fs.put_file``: a reader never sees half a file, and HDF5's writes (which
seek back to update its headers and B-trees) never go to object storage, which takes whole
objects only. An interrupted export leaves no target behind.
"""

from __future__ import annotations

import functools
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..batching.plan import PART_CODES, BucketPlan, check_plan
from ..batching.sample import padded_topology
from ..errors import ProtstoreError
from ..prefetch import prefetch
from ..store import Store
from ..location import Location, as_location

#: the parts of a plan an export may hold
SPLITS = ("all", "train", "val", "test")
#: positions and forces as protstore stores them, in the spelling of mdCATH's HDF5 files
LENGTH_UNIT = "Angstrom"
FORCE_UNIT = "kcal/mol/Angstrom"
# prior forces are computed for at most this many (frames x N_max^2) pair entries at once
PRIOR_PAIRS = 1 << 22


@dataclass(frozen=True)
class Part:
    """The frames of one protein that an export holds.

    ``frames`` [S] sorted frame indices in the protein's group (the store's frames: those
    excluded at ingest were never stored); ``labels`` [S] int8 each frame's part of the plan
    (0 train, 1 val, 2 test); per bead (n): ``species`` (protstore's vocabulary ids),
    ``resid``, ``chain`` (labels), ``resname``, and padded to the bucket's ``n_max`` for the
    prior forces (``padded``: mask, species, resid, chain codes)."""

    protein: str
    bucket: int
    n_max: int
    frames: np.ndarray
    labels: np.ndarray
    readers: dict
    species: np.ndarray
    resid: np.ndarray
    chain: np.ndarray
    resname: np.ndarray
    padded: dict

    @property
    def n(self) -> int:
        return len(self.species)


@dataclass
class Block:
    """Consecutive rows ``rows`` of a protein's export: ``R`` [s, n, 3] Å and ``F``
    [s, n, 3] kcal/mol/Å exactly as stored (float32), ``D`` = F minus the priors' forces
    (None without priors); per frame [s]: ``frame`` (index in the protein's group),
    ``temperature`` float32 K (NaN where unknown), ``replica`` and ``source_frame`` (the
    frame's run and its index in the source run), ``split`` int8 part codes; ``types``
    [s, n] the species ids, one row per frame."""

    rows: slice
    R: np.ndarray
    F: np.ndarray
    D: np.ndarray | None
    frame: np.ndarray
    temperature: np.ndarray
    replica: np.ndarray
    source_frame: np.ndarray
    split: np.ndarray
    species: np.ndarray

    def get(self, key: str) -> np.ndarray:
        if key == "types":
            return np.broadcast_to(self.species, (len(self.frame), len(self.species)))
        return getattr(self, key)


def tail(key: str, n: int) -> tuple[int, ...]:
    """The shape of one frame of :meth:`Block.get` ``key`` for a protein of ``n`` beads."""
    return {"R": (n, 3), "F": (n, 3), "D": (n, 3), "types": (n,)}.get(key, ())


def parts(store: Store, plan: BucketPlan, split: str, buckets: list[int]) -> Iterator[Part]:
    """The :class:`Part` of every protein of ``buckets`` with frames in ``split``, bucket by
    bucket in plan order (reads each protein's small per-bead and per-frame arrays only)."""
    for k in buckets:
        bucket = plan.buckets[k]
        for pid in bucket.proteins:
            frames = np.sort(plan.split.frames(pid, plan.frames[pid], split))
            if not len(frames):
                continue
            readers = store.protein_readers(pid)
            n = plan.lengths[pid]
            labels = np.zeros(plan.frames[pid], np.int8)
            for name in ("val", "test"):
                labels[plan.split.frames(pid, plan.frames[pid], name)] = PART_CODES[name]
            yield Part(pid, k, bucket.n_max, frames, labels[frames], readers,
                       species=readers["species"].read_all(), resid=readers["resid"].read_all(),
                       chain=readers["chain"].read_all(), resname=readers["resname"].read_all(),
                       padded=padded_topology(readers, n, bucket.n_max))


def chosen_buckets(plan: BucketPlan, bucket: int | None) -> list[int]:
    """``[bucket]`` (refused unless the plan has it), or every bucket of the plan."""
    if bucket is None:
        return list(range(len(plan.buckets)))
    if not 0 <= bucket < len(plan.buckets):
        raise ProtstoreError(f"plan {plan.name!r} has buckets 0..{len(plan.buckets) - 1}, "
                             f"not {bucket}")
    return [bucket]


def blocks(part: Part, prior_forces: Callable | None) -> Iterator[Block]:
    """A protein's export as :class:`Block` s, one per stored chunk holding its frames (R and F
    of a chunk decoded once), read one chunk ahead of the consumer."""
    R, F = part.readers["R"], part.readers["F"]
    temperature = part.readers["temperature"].read_all().astype(np.float32, copy=False)
    replica = part.readers["replica"].read_all().astype(np.int32, copy=False)
    source_frame = part.readers["source_frame"].read_all().astype(np.int32, copy=False)
    chunk_of = part.frames // R.chunk
    starts = np.flatnonzero(np.r_[True, chunk_of[1:] != chunk_of[:-1]])
    ends = np.r_[starts[1:], len(part.frames)]

    def read() -> Iterator[Block]:
        for lo, hi in zip(starts.tolist(), ends.tolist()):
            c = int(chunk_of[lo])
            sel = part.frames[lo:hi]
            offset = sel - c * R.chunk
            r = np.ascontiguousarray(R.read(c)[offset], np.float32)
            f = np.ascontiguousarray(F.read(c)[offset], np.float32)
            d = None if prior_forces is None else f - prior_forces(part, r)
            yield Block(slice(lo, hi), r, f, d, sel.astype(np.int32), temperature[sel],
                        replica[sel], source_frame[sel], part.labels[lo:hi], part.species)

    return prefetch(read(), 2, name="protstore-export")


class PriorForces:
    """The forces of a set of fitted priors (:mod:`protstore.model.priors`) on a protein's
    frames: ``self(part, R)`` with R [s, n, 3] Å gives [s, n, 3] float32 kcal/mol/Å.

    Frames are padded to the bucket's N_max with protstore's padding (mask 0: padded beads
    enter no prior term, and get no force) and computed in blocks of a fixed size per bucket
    (the last one filled up with copies of its last frame), so one compilation serves a
    bucket, as in training."""

    def __init__(self, params: dict):
        self.params = params
        self._forces = _batch_prior_forces()

    @staticmethod
    def block_frames(n_max: int) -> int:
        """Frames per computed block in a bucket of ``n_max`` beads."""
        return int(np.clip(PRIOR_PAIRS // (n_max * n_max), 1, 64))

    def __call__(self, part: Part, R: np.ndarray) -> np.ndarray:
        n, n_max = part.n, part.n_max
        B = self.block_frames(n_max)
        bead = {key: np.broadcast_to(part.padded[key], (B, n_max))
                for key in ("species", "resid", "chain", "mask")}
        out = np.empty(R.shape, np.float32)
        for lo in range(0, len(R), B):
            block = R[lo:lo + B]
            padded = np.zeros((B, n_max, 3), np.float32)
            padded[:len(block), :n] = block
            padded[len(block):, :n] = block[-1]
            forces = self._forces(self.params, padded, bead["species"], bead["resid"],
                                  bead["chain"], bead["mask"])
            out[lo:lo + len(block)] = np.asarray(forces)[:len(block), :n]
        return out


@functools.cache
def _batch_prior_forces() -> Callable:
    """The jitted prior forces of a batch (one per process, so that its compilations serve
    every export)."""
    import jax

    from ..model.energy import batch_forces
    from ..model.priors import prior_energy

    return jax.jit(batch_forces(lambda p, R, species, mask, topo: prior_energy(p, R, topo)))


def read_priors(path: str, storage_options: dict | None = None) -> dict:
    """The priors document at ``path`` (a file ``protstore fit-priors`` or ``train`` wrote;
    local or a URL), checked against ``schemas/priors.json``."""
    import json

    from ..schemas import check_document

    try:
        doc = json.loads(as_location(path, storage_options).read_bytes(""))
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
        raise ProtstoreError(f"{path}: cannot read priors ({exc})") from None
    if not isinstance(doc, dict):
        raise ProtstoreError(f"{path}: not a priors document (a JSON object)")
    check_document(doc, "priors", str(path))
    return doc


@contextmanager
def output_file(out: Location, overwrite: bool) -> Iterator[str]:
    """A local path to write the export into; once the block exits, it becomes ``out``
    (a rename beside it on a local disk, an upload with ``fs.put_file`` elsewhere). On an
    error the temporary file is removed and ``out`` is left as it was."""
    if out.exists() and not overwrite:
        raise ProtstoreError(f"{out}: exists (pass overwrite / --overwrite to replace it)")
    if out.local:
        if os.path.isdir(out.path):
            raise ProtstoreError(f"{out}: is a directory (--out names the HDF5 file to write)")
        folder = os.path.dirname(out.path) or "."
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(out.path)}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            yield tmp
            os.replace(tmp, out.path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    with tempfile.TemporaryDirectory(prefix="protstore-export-") as folder:
        tmp = os.path.join(folder, out.name or "export.h5")
        yield tmp
        out.fs.put_file(tmp, out.path)


def check_export(store: Store, plan: BucketPlan, split: str) -> None:
    """Refuse an unknown split or a plan that no longer describes the store."""
    if split not in SPLITS:
        raise ProtstoreError(f"split must be one of {SPLITS}, not {split!r}")
    check_plan(store, plan)
