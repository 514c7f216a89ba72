"""Names, units, chunking and codecs of the on-disk layout: the one place they are chosen.

::

    STORE.zarr/
      zarr.json                 root group; attrs["protstore"] = store document (schemas/store.json)
      proteins/<protein_id>/    one group per protein, opens with xr.open_zarr(STORE/proteins/<id>)
        R, F                    float32 (frame, atom, xyz), chunked along frame only
        resname species resid chain           per-atom coordinates (resname, chain and xyz:
                                              int32 codes, labels in the array's attributes)
        temperature replica source_frame      per-frame coordinates (provenance)
        rg [helix sheet coil]                 per-frame observables for selections (optional)
      generations/<id>@<gen>/   a protein's data as older store versions saw it (set aside by
                                an overwrite, removed by ``protstore gc``)
      catalog/                  the catalog's segments; catalog/history/ the compacted ones
      plans/<name>              bucket plans (attrs["protstore_plan"])
      .staging/                 proteins being written (not a zarr node; invisible to readers)
      .lock                     advisory lock taken while committing
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np

from zarr.codecs import BloscCodec, Crc32cCodec, TransposeCodec, ZstdCodec

from ..errors import StoreError
from .chunks import compressor_from_spec
from .digest import json_digest
from .labels import encode_labels  # noqa: F401 - the layout's one encoder of labels

# 3: resname, chain and xyz are int32 codes with their labels in the array's attributes (read
# by tensorstore and other Zarr v3 readers without zarr-python's string extension); 2: the
# catalog; 1: the root's consolidated metadata listed every node
FORMAT_VERSION = 3
STORE_DOC = "protstore"
PROTEIN_DOC = "protstore_protein"
PROTEINS = "proteins"
PLANS = "plans"
GENERATIONS = "generations"
STAGING = ".staging"
LOCK = ".lock"
CREATING = ".creating-"  # prefix of the hidden directory a store is made in


FRAME, ATOM, XYZ = "frame", "atom", "xyz"
PER_ATOM = ("resname", "species", "resid", "chain")
PER_FRAME = ("temperature", "replica", "source_frame")
# per-frame float32 data variables ingest measures for selections (protstore.selection): the
# beads' radius of gyration (Å), and the secondary-structure fractions of the source's DSSP
# when it has one; absent from groups written before they existed
OBSERVABLES = ("rg", "helix", "sheet", "coil")
# the string coordinates, stored as label codes (format 3; variable-length strings before)
LABELLED = ("resname", "chain", "xyz")
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


SHUFFLES = ("shuffle", "bitshuffle")


@dataclass(frozen=True)
class Encoding:
    """How R and F are chunked and compressed. Config as data: every field lands in the store doc.

    The default (Blosc/zstd level 2 with 128 KiB blocks on the frame-last transposed chunk,
    with the better of byte- and bit-shuffle per array) was measured the best balance among
    lossless options (``benchmarks/bench_codecs.py``, figures in docs/performance.md): which
    shuffle wins depends on the data (bit-shuffle on smooth trajectories, byte-shuffle on
    decorrelated frames), so ``shuffle="auto"`` compresses each array's first chunk both ways
    and keeps the smaller; the choice is in the array's own codec metadata. ``block_bytes`` 0
    is Blosc's automatic size (what stores written before the field existed used).
    ``checksum`` ends every chunk of every array with a CRC32C of its bytes (Zarr v3's
    ``crc32c`` codec), so a damaged chunk is an error on read and in ``validate``, never data;
    stores made before the field existed have none.
    """

    chunk_bytes: int = 1 << 20
    cname: str = "zstd"
    clevel: int = 2
    shuffle: str = "auto"
    transpose: bool = True
    block_bytes: int = 1 << 17
    checksum: bool = True

    def frames_per_chunk(self, n_atoms: int) -> int:
        """Frames per chunk so that one uncompressed R or F chunk is about ``chunk_bytes``."""
        return max(1, round(self.chunk_bytes / (n_atoms * 3 * 4)))

    def codecs_for_vectors(self, sample: np.ndarray | None = None) -> dict:
        """xarray/zarr encoding entries (minus chunks) for a (frame, atom, xyz) float32 array;
        ``sample`` (its first chunk) decides ``shuffle="auto"`` (bit-shuffle without one)."""
        enc: dict = {}
        if self.transpose:
            # Each coordinate's time series becomes contiguous: exponents and high mantissa
            # bits then repeat along the stream, which the shuffle + zstd exploit.
            enc["filters"] = [TransposeCodec(order=(1, 2, 0))]
        shuffle = self.shuffle
        if shuffle == "auto":
            shuffle = "bitshuffle" if sample is None else min(
                SHUFFLES, key=lambda sh: self._compressed_size(sample, sh))
        enc["compressors"] = [self._blosc(shuffle), *self._checksums()]
        return enc

    def codecs_for_coordinates(self) -> dict:
        """zarr encoding entries for the small coordinate arrays: zarr's default compressor
        (zstd level 0), and the checksum."""
        if not self.checksum:
            return {}
        return {"compressors": [ZstdCodec(level=0, checksum=False), *self._checksums()]}

    def _checksums(self) -> list:
        return [Crc32cCodec()] if self.checksum else []

    def _blosc(self, shuffle: str) -> BloscCodec:
        return BloscCodec(cname=self.cname, clevel=self.clevel, shuffle=shuffle, typesize=4,
                          blocksize=self.block_bytes)

    def _compressed_size(self, sample: np.ndarray, shuffle: str) -> int:
        if self.transpose:
            sample = sample.transpose(1, 2, 0)
        codec = compressor_from_spec(self._blosc(shuffle).to_dict())
        return len(codec.encode(np.ascontiguousarray(sample, dtype=np.float32)))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def protein_path(protein_id: str) -> str:
    return f"{PROTEINS}/{protein_id}"


def generation_of(doc: dict) -> str:
    """The generation of a protein document: the short digest (16 hex digits) of the whole
    document, so two writes of the same source with the same options are one generation (the
    same data, which ingest writes deterministically), and any other write another."""
    return json_digest(doc, short=True).removeprefix("sha256:")


def generation_path(protein_id: str, generation: str) -> str:
    """Where an overwrite sets aside the data of ``protein_id``'s ``generation``."""
    return f"{GENERATIONS}/{protein_id}@{generation}"


def chain_codes(labels) -> np.ndarray:
    """[N] int32 chain numbers 0, 1, ... in order of first appearance of the chain labels."""
    labels = np.array([str(c) for c in labels])
    _, first, codes = np.unique(labels, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[codes].astype(np.int32)


PROTEIN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
RESERVED_IDS = ("zarr.json",)  # a group named so would be its parent's metadata file


def check_protein_id(protein_id: str) -> str:
    """Return ``protein_id`` if it is a safe group name, else raise :class:`StoreError`."""
    if not isinstance(protein_id, str) or not PROTEIN_ID.match(protein_id) \
            or protein_id in RESERVED_IDS:
        shown = protein_id if len(str(protein_id)) <= 40 else f"{protein_id[:40]}..."
        raise StoreError(f"invalid protein id {shown!r}: use 1-128 characters from "
                         f"A-Z a-z 0-9 _ . - , starting with a letter or digit (not zarr.json)")
    return protein_id
