"""Write one protein group into a private staging directory, chunk-aligned and frame-blocked."""

from __future__ import annotations

import os
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from .layout import (ATOM, COORD_DTYPES, FRAME, PER_FRAME_CHUNK, PROTEIN_DOC, UNITS, XYZ,
                     Encoding)


# Frames are written FLUSH_CHUNKS chunks at a time: zarr compresses the chunks of one write in
# parallel, so fewer, larger writes keep every core busy (memory: that many chunks per array).
FLUSH_CHUNKS = 4


def directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


class ProteinWriter:
    """Buffers frames and writes them into a staging Zarr group in whole chunks.

    The group's layout is created once, at the first write (whose first chunk decides the
    codecs), for ``max_frames`` frames, from an xarray template (metadata and per-atom
    coordinates only); frames then go straight into the Zarr arrays,
    ``FLUSH_CHUNKS`` whole chunks at a time, and ``finish`` trims the frame dimension to the
    frames actually kept (validation may exclude some). Memory is bounded by ``FLUSH_CHUNKS``
    chunks plus the incoming block. ``finish`` also writes the protein document and consolidated
    metadata; the :class:`~protstore.store.Store` then moves the group into ``proteins/`` with
    one atomic rename.

    Parameters
    ----------
    path : staging directory (must not exist).
    max_frames : frames in the source (an upper bound of the frames written).
    resname, species, resid, chain : [N] per-bead topology.
    encoding : chunking and codecs of R and F.
    """

    def __init__(self, path: Path, *, max_frames: int, resname, species, resid, chain,
                 encoding: Encoding):
        self.path = Path(path)
        self.max_frames = int(max_frames)
        self.n_atoms = len(resname)
        self.chunk = encoding.frames_per_chunk(self.n_atoms)
        self._encoding = encoding
        self._per_atom = {
            "resname": (ATOM, np.asarray(resname, dtype=object)),
            "species": (ATOM, np.asarray(species, dtype=COORD_DTYPES["species"])),
            "resid": (ATOM, np.asarray(resid, dtype=COORD_DTYPES["resid"])),
            "chain": (ATOM, np.asarray(chain, dtype=object)),
            "xyz": (XYZ, np.array(["x", "y", "z"], dtype=object)),
        }
        self._arrays: dict[str, zarr.Array] | None = None  # created at the first write
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
        if self.frames_queued + b > self.max_frames:
            raise ValueError(f"{self.path}: more than max_frames={self.max_frames} frames")
        self._buffer.append({"R": R, "F": F, "temperature": temperature, "replica": replica,
                             "source_frame": source_frame})
        self._buffered += b
        self._temperatures.update(float(t) for t in np.unique(temperature))
        if self._buffered >= FLUSH_CHUNKS * self.chunk:
            self._flush(whole_chunks_only=True)

    def _flush(self, whole_chunks_only: bool) -> None:
        if not self._buffered:
            return
        cat = {k: np.concatenate([blk[k] for blk in self._buffer]) for k in self._buffer[0]}
        n = (self._buffered // self.chunk) * self.chunk if whole_chunks_only else self._buffered
        if n == 0:
            return
        if self._arrays is None:  # the first chunk decides the codecs (Encoding.shuffle "auto")
            self._create({name: cat[name][:self.chunk] for name in ("R", "F")})
        lo, hi = self.n_frames, self.n_frames + n
        for name, array in self._arrays.items():
            array[lo:hi] = cat[name][:n].astype(array.dtype, copy=False)
        self.n_frames = hi
        rest = {k: v[n:] for k, v in cat.items()}
        self._buffered -= n
        self._buffer = [rest] if self._buffered else []

    def finish(self, doc: dict) -> None:
        """Flush remaining frames, trim to them, write the protein document and consolidate."""
        self._flush(whole_chunks_only=False)
        if self._arrays is None:
            self._create({})
        if self.n_frames < self.max_frames:
            for array in self._arrays.values():
                array.resize((self.n_frames, *array.shape[1:]))
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

    def _create(self, samples: dict[str, np.ndarray]) -> None:
        self._arrays = _create_layout(self.path, self.max_frames, self.chunk, self._encoding,
                                      self._per_atom, samples)

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _create_layout(path: Path, n_frames: int, chunk: int, encoding: Encoding,
                   per_atom: dict, samples: dict[str, np.ndarray]) -> dict[str, zarr.Array]:
    """Create the protein group (metadata, per-atom coordinates) for ``n_frames`` frames and
    return its per-frame arrays (R, F, temperature, replica, source_frame), still empty.
    ``samples``: the first chunk of R and F, for the encoding's choices.

    xarray writes the layout from a zero-frame template (its conventions: dimension names,
    coordinates, units), then the frame dimension is grown to ``n_frames`` without data.
    """
    n_atoms = len(per_atom["resname"][1])
    vec = (FRAME, ATOM, XYZ)
    no_frames = np.empty((0, n_atoms, 3), np.float32)
    template = xr.Dataset(
        {"R": (vec, no_frames, {"units": UNITS["R"]}),
         "F": (vec, no_frames, {"units": UNITS["F"]})},
        coords={
            "temperature": (FRAME, np.empty(0, COORD_DTYPES["temperature"]),
                            {"units": UNITS["temperature"]}),
            "replica": (FRAME, np.empty(0, COORD_DTYPES["replica"])),
            "source_frame": (FRAME, np.empty(0, COORD_DTYPES["source_frame"])),
            **per_atom,
        },
    )
    # NaN is a real value nowhere in R/F, but _FillValue would make xarray mask it:
    vector = {name: {"chunks": (chunk, n_atoms, 3), "_FillValue": None,
                     **encoding.codecs_for_vectors(samples.get(name))} for name in ("R", "F")}
    enc = {**vector,
           "temperature": {"chunks": (PER_FRAME_CHUNK,), "_FillValue": None},
           "replica": {"chunks": (PER_FRAME_CHUNK,)},
           "source_frame": {"chunks": (PER_FRAME_CHUNK,)}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        template.to_zarr(path, mode="w-", zarr_format=3, consolidated=False, encoding=enc)
    group = zarr.open_group(path, mode="r+", zarr_format=3)
    arrays = {name: group[name] for name in ("R", "F", "temperature", "replica", "source_frame")}
    for array in arrays.values():
        array.resize((n_frames, *array.shape[1:]))
    return arrays


def fsync_tree(path: Path) -> None:
    """Flush a freshly written directory tree to disk before it is renamed into place.

    The files are flushed by a few threads at once (fsync releases the GIL, and the device
    can merge the writes), then the directories."""
    files, dirs = [], []
    for dirpath, _, names in os.walk(path):
        dirs.append(dirpath)
        files.extend(os.path.join(dirpath, name) for name in names)
    with ThreadPoolExecutor(8, thread_name_prefix="protstore-fsync") as pool:
        list(pool.map(_fsync, files))
    for d in dirs:
        _fsync(d)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
