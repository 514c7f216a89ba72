"""Names, units, chunking and codecs of the on-disk layout: the one place they are chosen.

::

    STORE.zarr/
      zarr.json                 root group; attrs["protstore"] = store document (schemas/store.json)
      proteins/<protein_id>/    one group per protein, opens with xr.open_zarr(STORE, group=...)
        R, F                    float32 (frame, atom, xyz), chunked along frame only
        resname species resid chain           per-atom coordinates
        temperature replica source_frame      per-frame coordinates (provenance)
      plans/<name>              bucket plans (attrs["protstore_plan"])
      .staging/                 proteins being written (not a zarr node; invisible to readers)
      .lock                     advisory lock taken while committing
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zarr.codecs import BloscCodec, TransposeCodec

FORMAT_VERSION = 1
STORE_DOC = "protstore"
PROTEIN_DOC = "protstore_protein"
PROTEINS = "proteins"
PLANS = "plans"
STAGING = ".staging"
LOCK = ".lock"

UNITS = {
    "R": "angstrom",
    "F": "kcal/mol/angstrom",
    "energy": "kcal/mol",
    "temperature": "kelvin",
}
KB_KCAL_PER_MOL_K = 0.0019872041

FRAME, ATOM, XYZ = "frame", "atom", "xyz"
PER_ATOM = ("resname", "species", "resid", "chain")
PER_FRAME = ("temperature", "replica", "source_frame")
# frames per chunk of the per-frame coordinates: tiny arrays, so one chunk for any mdCATH protein
# (25 x 440 frames) and one read when a protein is opened
PER_FRAME_CHUNK = 1 << 16
COORD_DTYPES = {
    "species": "int32",
    "resid": "int32",
    "temperature": "float32",
    "replica": "int32",
    "source_frame": "int32",
}


@dataclass(frozen=True)
class Encoding:
    """How R and F are chunked and compressed. Config as data: every field lands in the store doc.

    The default (Blosc/zstd level 3 with bit-shuffle, on the frame-last transposed chunk) was
    measured best among lossless options (``benchmarks/bench_codecs.py``): bit-shuffle gains
    ~0.07x over byte-shuffle at the same decode speed (~1.9 GB/s per core); zstd levels above 3
    gain < 0.02x at a third of the write speed; lz4 decodes no faster once bit-shuffled.
    """

    chunk_bytes: int = 1 << 20
    cname: str = "zstd"
    clevel: int = 3
    shuffle: str = "bitshuffle"
    transpose: bool = True

    def frames_per_chunk(self, n_atoms: int) -> int:
        """Frames per chunk so that one uncompressed R or F chunk is about ``chunk_bytes``."""
        return max(1, round(self.chunk_bytes / (n_atoms * 3 * 4)))

    def codecs_for_vectors(self) -> dict:
        """xarray/zarr encoding entries (minus chunks) for a (frame, atom, xyz) float32 array."""
        enc: dict = {
            "compressors": [BloscCodec(cname=self.cname, clevel=self.clevel,
                                       shuffle=self.shuffle, typesize=4)],
        }
        if self.transpose:
            # Each coordinate's time series becomes contiguous: exponents and high mantissa
            # bits then repeat along the stream, which bit-shuffle + zstd exploit.
            enc["filters"] = [TransposeCodec(order=(1, 2, 0))]
        return enc

    def as_dict(self) -> dict:
        return {"chunk_bytes": self.chunk_bytes, "cname": self.cname, "clevel": self.clevel,
                "shuffle": self.shuffle, "transpose": self.transpose}


def protein_path(protein_id: str) -> str:
    return f"{PROTEINS}/{protein_id}"


def chain_codes(labels) -> np.ndarray:
    """[N] int32 chain numbers 0, 1, ... in order of first appearance of the chain labels."""
    labels = np.array([str(c) for c in labels])
    _, first, codes = np.unique(labels, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[codes].astype(np.int32)
