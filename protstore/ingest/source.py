"""What every source reader hands to the ingest pipeline: a protein's topology and frame blocks."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xxhash

from .units import SourceUnits


@dataclass
class FrameBlock:
    """A block of consecutive source frames, already mapped to CG beads.

    R [b, N, 3] float32 Å; F [b, N, 3] float32 kcal/mol/Å; temperature [b] K (NaN if unknown);
    replica, source_frame [b] int. ``problems`` [b] holds what the reader already found wrong
    with a frame at the atom level (``None`` for a clean frame). ``ss`` [b, 3] float32: the
    frames' fractions of residues in helix, strand and coil (:func:`protstore.selection.
    ss_fractions` of the source's DSSP), from readers of sources that have one, else None.
    """

    R: np.ndarray
    F: np.ndarray
    temperature: np.ndarray
    replica: np.ndarray
    source_frame: np.ndarray
    problems: list[str | None] = field(default_factory=list)
    ss: np.ndarray | None = None

    def __post_init__(self):
        if not self.problems:
            self.problems = [None] * len(self.R)

    def keep(self, good: np.ndarray) -> dict[str, np.ndarray]:
        """The per-frame arrays of the frames where ``good`` [b] bool is True (no copy if all):
        those :meth:`~protstore.store.writer.ProteinWriter.append` takes, with ``ss`` when the
        block has it."""
        arrays = {"R": self.R, "F": self.F, "temperature": self.temperature,
                  "replica": self.replica, "source_frame": self.source_frame}
        if self.ss is not None:
            arrays["ss"] = self.ss
        return arrays if good.all() else {k: v[good] for k, v in arrays.items()}


@dataclass
class ProteinSource:
    """One protein as found in a source file.

    resname, resid, chain : [N] per bead, as in the source (names not yet canonical).
    sources : provenance entries (path, format, checksum, entry) for the protein document.
    cg_map : how beads were made (name, position rule, force rule).
    n_frames : frames in the source (before validation).
    frame_bytes : bytes of one source frame (all its arrays), to size the frame blocks.
    blocks : ``blocks(block_frames)`` yields :class:`FrameBlock` in source order, already
        converted to store units.
    units : the units the source's numbers were in, and whether they were declared.
    not_read : parts of the source that were left out, one line each with the reason.
    runs : (temperature K, replica, frames) of each run, in order, when the reader knows them
        before reading frames (mdCATH), else empty.
    with_runs : ``with_runs(indices)`` is the same protein with only those of its ``runs``
        (None when the reader cannot leave runs out).
    has_ss : its frame blocks carry ``ss`` (the source has DSSP secondary structure).
    """

    protein_id: str
    origin: str
    resname: np.ndarray
    resid: np.ndarray
    chain: np.ndarray
    sources: list[dict]
    cg_map: dict
    n_frames: int
    frame_bytes: int
    blocks: Callable[[int], Iterator[FrameBlock]]
    units: SourceUnits = field(default_factory=SourceUnits)
    not_read: tuple[str, ...] = ()
    runs: tuple[tuple[float, int, int], ...] = ()
    with_runs: Callable[[list[int]], ProteinSource] | None = None
    has_ss: bool = False


CHECKSUM = "xxh3_128"


def file_checksum(path: str | Path, algorithm: str = CHECKSUM) -> str:
    """``<algorithm>:<hex>`` of a file's bytes.

    ``xxh3_128`` (the default) is a fast 128-bit non-cryptographic checksum: it identifies a
    source and detects corruption, cheaply enough to run beside ingest on every byte.
    ``sha256`` (several times slower) is what stores of protstore 0.1 recorded; re-ingest
    compares checksums in the algorithm the store recorded.
    """
    with open(path, "rb", buffering=0) as fh:
        return StreamChecksum(fh.fileno(), algorithm).finish()


def _new_digest(algorithm: str):
    if algorithm == "sha256":
        return hashlib.sha256()
    if algorithm == "xxh3_128":
        return xxhash.xxh3_128()
    raise ValueError(f"unknown checksum algorithm {algorithm!r} (xxh3_128 or sha256)")


class StreamChecksum:
    """:func:`file_checksum` of an open file, from the bytes a reader reads anyway.

    The reader reports each range it reads (``update(offset, data)``); the bytes between those
    ranges are read here. It gives the same checksum as :func:`file_checksum` when the ranges
    come in file order; otherwise (or after ``abandon()``) ``finish()`` returns None, and the
    file must be hashed on its own. One pass over the file instead of two: a cold file comes
    from the disk once, and its bytes are copied once.
    """

    def __init__(self, fd: int, algorithm: str = CHECKSUM):
        self.fd, self.algorithm = fd, algorithm
        self._digest = _new_digest(algorithm)
        self._pos = 0  # bytes hashed so far
        self.ok = True

    def update(self, offset: int, data) -> None:
        if not self.ok:
            return
        if offset < self._pos:
            self.abandon()
            return
        self._hash_file_until(offset)
        self._digest.update(data)
        self._pos = offset + len(data)

    def abandon(self) -> None:
        self.ok = False

    def finish(self) -> str | None:
        """The checksum (reading the rest of the file), or None if the reads were not in order."""
        if not self.ok:
            return None
        self._hash_file_until(None)
        return f"{self.algorithm}:{self._digest.hexdigest()}"

    def _hash_file_until(self, end: int | None) -> None:
        """Hash the file's bytes from where hashing stopped up to ``end`` (None: its end)."""
        if end is not None and end <= self._pos:
            return
        buffer = memoryview(bytearray(8 << 20 if end is None else min(8 << 20, end - self._pos)))
        while end is None or self._pos < end:
            want = len(buffer) if end is None else min(len(buffer), end - self._pos)
            n = os.preadv(self.fd, [buffer[:want]], self._pos)
            if n == 0:
                return
            self._digest.update(buffer[:n])
            self._pos += n
