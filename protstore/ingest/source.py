"""What every source reader hands to the ingest pipeline: a protein's topology and frame blocks."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xxhash


@dataclass
class FrameBlock:
    """A block of consecutive source frames, already mapped to CG beads.

    R [b, N, 3] float32 Å; F [b, N, 3] float32 kcal/mol/Å; temperature [b] K (NaN if unknown);
    replica, source_frame [b] int. ``problems`` [b] holds what the reader already found wrong
    with a frame at the atom level (``None`` for a clean frame).
    """

    R: np.ndarray
    F: np.ndarray
    temperature: np.ndarray
    replica: np.ndarray
    source_frame: np.ndarray
    problems: list[str | None] = field(default_factory=list)

    def __post_init__(self):
        if not self.problems:
            self.problems = [None] * len(self.R)

    def take(self, index: np.ndarray) -> dict[str, np.ndarray]:
        return {"R": self.R[index], "F": self.F[index], "temperature": self.temperature[index],
                "replica": self.replica[index], "source_frame": self.source_frame[index]}


@dataclass
class ProteinSource:
    """One protein as found in a source file.

    resname, resid, chain : [N] per bead, as in the source (names not yet canonical).
    sources : provenance entries (path, format, checksum, entry) for the protein document.
    cg_map : how beads were made (name, position rule, force rule).
    n_frames : frames in the source (before validation).
    blocks : ``blocks(block_frames)`` yields :class:`FrameBlock` in source order.
    """

    protein_id: str
    origin: str
    resname: np.ndarray
    resid: np.ndarray
    chain: np.ndarray
    sources: list[dict]
    cg_map: dict
    n_frames: int
    blocks: Callable[[int], Iterator[FrameBlock]]


CHECKSUM = "xxh3_128"


def file_checksum(path: str | Path, algorithm: str = CHECKSUM) -> str:
    """``<algorithm>:<hex>`` of a file's bytes.

    ``xxh3_128`` (the default) is a 128-bit non-cryptographic checksum at ~10 GB/s: it
    identifies a source and detects corruption, cheaply enough to run beside ingest on every
    byte. ``sha256`` (~1.6 GB/s) is what stores of protstore 0.1 recorded; re-ingest compares
    checksums in the algorithm the store recorded.
    """
    if algorithm == "sha256":
        digest = hashlib.sha256()
    elif algorithm == "xxh3_128":
        digest = xxhash.xxh3_128()
    else:
        raise ValueError(f"unknown checksum algorithm {algorithm!r} (xxh3_128 or sha256)")
    buffer = bytearray(8 << 20)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buffer):
            digest.update(view[:n])
    return f"{algorithm}:{digest.hexdigest()}"
