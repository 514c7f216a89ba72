"""Write one protein group into a private staging directory, chunk-aligned and frame-blocked."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from .layout import ATOM, COORD_DTYPES, FRAME, PROTEIN_DOC, UNITS, XYZ, Encoding


def directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


class ProteinWriter:
    """Buffers frames and appends them to a staging Zarr group in whole chunks.

    Memory is bounded by one chunk plus the incoming block. ``finish`` writes the protein
    document and consolidated metadata; the :class:`~protstore.store.Store` then moves the group
    into ``proteins/`` with one atomic rename.

    Parameters
    ----------
    path : staging directory (must not exist).
    resname, species, resid, chain : [N] per-bead topology.
    encoding : chunking and codecs of R and F.
    """

    def __init__(self, path: Path, *, resname, species, resid, chain, encoding: Encoding):
        self.path = Path(path)
        self.n_atoms = len(resname)
        self.chunk = encoding.frames_per_chunk(self.n_atoms)
        self._encoding = encoding
        self._atoms = {
            "resname": (ATOM, np.asarray(resname, dtype=object)),
            "species": (ATOM, np.asarray(species, dtype=COORD_DTYPES["species"])),
            "resid": (ATOM, np.asarray(resid, dtype=COORD_DTYPES["resid"])),
            "chain": (ATOM, np.asarray(chain, dtype=object)),
            "xyz": (XYZ, np.array(["x", "y", "z"], dtype=object)),
        }
        self._buffer: list[dict[str, np.ndarray]] = []
        self._buffered = 0
        self._temperatures: set[float] = set()
        self.n_frames = 0

    @property
    def frames_queued(self) -> int:
        """Frames appended so far (written or still buffered)."""
        return self.n_frames + self._buffered

    def append(self, R, F, temperature, replica, source_frame) -> None:
        """Queue frames: R, F [b, N, 3] float32; temperature, replica, source_frame [b]."""
        b = len(R)
        if b == 0:
            return
        self._buffer.append({"R": R, "F": F, "temperature": temperature, "replica": replica,
                             "source_frame": source_frame})
        self._buffered += b
        self._temperatures.update(float(t) for t in np.unique(temperature))
        if self._buffered >= self.chunk:
            self._flush(whole_chunks_only=True)

    def _flush(self, whole_chunks_only: bool) -> None:
        if not self._buffered:
            return
        cat = {k: np.concatenate([blk[k] for blk in self._buffer]) for k in self._buffer[0]}
        n = (self._buffered // self.chunk) * self.chunk if whole_chunks_only else self._buffered
        if n == 0:
            return
        self._write({k: v[:n] for k, v in cat.items()})
        rest = {k: v[n:] for k, v in cat.items()}
        self._buffered -= n
        self._buffer = [rest] if self._buffered else []

    def _write(self, block: dict[str, np.ndarray]) -> None:
        vec = (FRAME, ATOM, XYZ)
        ds = xr.Dataset(
            {
                "R": (vec, block["R"].astype(np.float32, copy=False), {"units": UNITS["R"]}),
                "F": (vec, block["F"].astype(np.float32, copy=False), {"units": UNITS["F"]}),
            },
            coords={
                "temperature": (FRAME, block["temperature"].astype(COORD_DTYPES["temperature"]),
                                {"units": UNITS["temperature"]}),
                "replica": (FRAME, block["replica"].astype(COORD_DTYPES["replica"])),
                "source_frame": (FRAME, block["source_frame"].astype(COORD_DTYPES["source_frame"])),
            },
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            if self.n_frames == 0:
                ds = ds.assign_coords(self._atoms)
                vector_encoding = {"chunks": (self.chunk, self.n_atoms, 3),
                                   **self._encoding.codecs_for_vectors()}
                per_frame = {"chunks": (self.chunk,)}
                encoding = {"R": vector_encoding, "F": vector_encoding,
                            "temperature": per_frame, "replica": per_frame,
                            "source_frame": per_frame}
                # NaN is a real value nowhere in R/F, but _FillValue would make xarray mask it:
                for name in ("R", "F", "temperature"):
                    encoding[name]["_FillValue"] = None
                ds.to_zarr(self.path, mode="w-", zarr_format=3, consolidated=False,
                           encoding=encoding)
            else:
                ds.to_zarr(self.path, append_dim=FRAME, consolidated=False)
        self.n_frames += len(block["R"])

    def finish(self, doc: dict) -> None:
        """Flush remaining frames, then write the protein document and consolidated metadata."""
        self._flush(whole_chunks_only=False)
        group = zarr.open_group(self.path, mode="r+", zarr_format=3)
        temps = sorted(t for t in self._temperatures if not np.isnan(t))
        temps += [None] * any(np.isnan(t) for t in self._temperatures)
        doc = dict(doc, n_frames=self.n_frames, temperatures=temps,
                   nbytes_raw=2 * self.n_frames * self.n_atoms * 12)
        doc["nbytes_stored"] = directory_size(self.path)
        group.attrs[PROTEIN_DOC] = doc
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            zarr.consolidate_metadata(str(self.path))
        self.doc = doc

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def fsync_tree(path: Path) -> None:
    """Flush a freshly written directory tree to disk before it is renamed into place."""
    for dirpath, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
