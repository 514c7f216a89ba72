"""Write one protein group into a private staging directory, chunk-aligned and frame-blocked."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import zarr

from .chunks import ChunkWriter
from .digest import arrays_metadata_digests
from ..units import UNITS
from .layout import (ATOM, COORD_DTYPES, FRAME, OBSERVABLES, PER_ATOM, PER_FRAME,
                     PER_FRAME_CHUNK, PROTEIN_DOC, XYZ, Encoding, encode_labels)
from ..location import Location, fsync_paths
from ..pools import codec_pool, io_pool


# R and F are written FLUSH_CHUNKS chunks at a time, compressed on the codec pool while the
# caller goes on (memory: up to twice that many chunks per array).
FLUSH_CHUNKS = 4
FRAME_ARRAYS = ("R", "F", "temperature", "replica", "source_frame")


def directory_size(path: str | os.PathLike) -> int:
    """Bytes of the files under ``path``."""
    total = 0
    with os.scandir(path) as entries:
        for entry in entries:
            total += directory_size(entry.path) if entry.is_dir(follow_symlinks=False) \
                else entry.stat(follow_symlinks=False).st_size
    return total


class ProteinWriter:
    """Buffers frames and writes them into a staging Zarr group in whole chunks.

    The group (the layout xarray writes for the protein's Dataset) is created at once for
    ``max_frames`` frames with its per-atom coordinates; R and F when their first chunk is in
    (it decides their codecs, ``Encoding.shuffle="auto"``). Frames go straight into the chunk
    files (:class:`ChunkWriter`), R and F ``FLUSH_CHUNKS`` whole chunks at a time, compressed
    on a pool of threads while the caller prepares the next frames, and flushed to disk by an
    I/O pool as soon as they are written (so that the commit's fsync finds little left to do).
    ``finish`` trims the frame dimension to the frames actually kept (validation may exclude
    some), writes the protein document and consolidated metadata; the
    :class:`~protstore.store.Store` then moves the group into ``proteins/`` with one atomic
    rename. Memory is bounded by ``2 * FLUSH_CHUNKS`` chunks plus the incoming block.

    Parameters
    ----------
    location : the staging group (must not exist): a local directory or a URL prefix.
    max_frames : frames in the source (an upper bound of the frames written).
    resname, species, resid, chain : [N] per-bead topology.
    encoding : chunking and codecs of R and F.
    observables : names of per-frame float32 observables to store beside the frames
        (:data:`~protstore.store.layout.OBSERVABLES`), each given to every ``append``.
    claim : on object storage, the writer's :class:`~protstore.store.claims.Claim` of the
        protein (renewed as chunks are written, released by ``abort``).
    """

    def __init__(self, location: Location | Path, *, max_frames: int, resname, species, resid,
                 chain, encoding: Encoding, observables: tuple[str, ...] = (), claim=None):
        self.location = location if isinstance(location, Location) else Location(location)
        self.root = Path(self.location.path) if self.location.local else None
        self.claim = claim
        self.max_frames = int(max_frames)
        self.n_atoms = len(resname)
        self.chunk = encoding.frames_per_chunk(self.n_atoms)
        self._encoding = encoding
        unknown = sorted(set(observables) - set(OBSERVABLES))
        if unknown:
            raise ValueError(f"{self.location}: unknown observable {unknown[0]!r}")
        self.observables = tuple(observables)
        self._names = (*FRAME_ARRAYS, *self.observables)
        # dim, values, attributes; the string coordinates as label codes (format 3)
        self._per_atom = {
            "resname": (ATOM, *encode_labels(resname)),
            "species": (ATOM, np.asarray(species, dtype=COORD_DTYPES["species"]), {}),
            "resid": (ATOM, np.asarray(resid, dtype=COORD_DTYPES["resid"]), {}),
            "chain": (ATOM, *encode_labels(chain)),
            "xyz": (XYZ, *encode_labels(["x", "y", "z"])),
        }
        try:
            self._group, self._writers, self._static = _create_layout(
                self.location, self.max_frames, self._per_atom, encoding, self.observables)
        except BaseException:
            self._remove()
            raise
        self._pending: dict[str, list[np.ndarray]] = {name: [] for name in self._names}
        self._written = dict.fromkeys(self._names, 0)  # frames handed to the chunk writers
        self._tasks: list[Future] = []
        self._syncs: list[Future] = []  # fsyncs of written chunk files
        self.synced: set[str] = set()  # files already flushed to disk
        self._temperatures: set[float] = set()
        self.frames_queued = 0  # frames appended so far (written or still buffered)

    @property
    def n_frames(self) -> int:
        """Frames of R handed to the chunk files so far."""
        return self._written["R"]

    def append(self, R, F, temperature, replica, source_frame, **observables) -> None:
        """Queue frames: R, F [b, N, 3] float32; temperature, replica, source_frame [b]; and
        each of the writer's ``observables`` [b] float32.

        The arrays are written later, from other threads: they must not change afterwards."""
        if set(observables) != set(self.observables):
            raise ValueError(f"{self.location}: observables {sorted(observables)} given, the "
                             f"group stores {sorted(self.observables)}")
        b = len(R)
        if b == 0:
            return
        if self.frames_queued + b > self.max_frames:
            raise ValueError(f"{self.location}: more than max_frames={self.max_frames} frames")
        for name, data in zip(FRAME_ARRAYS, (R, F, temperature, replica, source_frame)):
            self._pending[name].append(data)
        for name in self.observables:
            self._pending[name].append(np.asarray(observables[name], np.float32))
        self.frames_queued += b
        self._temperatures.update(float(t) for t in np.unique(temperature))
        if self.frames_queued - self.n_frames >= FLUSH_CHUNKS * self.chunk:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        """Hand the buffered whole chunks (every frame if ``final``) to the codec pool, after
        the previous flush's chunks are written (which bounds memory and re-raises errors)."""
        self._wait()
        if "R" not in self._writers:
            if self.frames_queued < self.chunk and not final:
                return
            first = {name: _frames(self._pending[name], 0, min(self.chunk, self.frames_queued))
                     for name in ("R", "F")} if self.frames_queued else \
                {name: np.zeros((0, self.n_atoms, 3), np.float32) for name in ("R", "F")}
            self._writers.update(_create_vectors(self._group, self.max_frames, self.chunk,
                                                 self._encoding, first, self._fs))
        for name, writer in self._writers.items():
            pending = self._pending[name]
            buffered = sum(len(p) for p in pending)
            min_frames = 1 if final else (FLUSH_CHUNKS * self.chunk if name in ("R", "F")
                                          else writer.chunk)
            if buffered < min_frames:
                continue
            lo = self._written[name]
            n = buffered if final else (buffered // writer.chunk) * writer.chunk
            if lo % writer.chunk:  # appending to a partly written chunk (only in per-frame arrays)
                raise AssertionError(f"{self.location}/{name}: frames {lo}.. not chunk-aligned")
            for a in range(0, n, writer.chunk):
                self._tasks.append(codec_pool().submit(
                    self._write_chunk, writer, (lo + a) // writer.chunk,
                    _frames(pending, a, min(n, a + writer.chunk))))
            self._written[name] = lo + n
            self._pending[name] = [_frames(pending, n, buffered)] if n < buffered else []

    @property
    def _fs(self):
        return None if self.location.local else self.location.fs

    def _write_chunk(self, writer: ChunkWriter, c: int, data: np.ndarray) -> None:
        path = writer.write(c, data)
        if self.claim is not None:
            self.claim.renew()
        if isinstance(path, Path):
            # the file, then the directories only this chunk uses (c/<i>/0 and c/<i> of a
            # 3-d array's c/<i>/0/0): their new entries must reach the disk too
            own_dirs = [str(d) for d in path.parents[:writer.array.ndim - 1]]
            self._syncs.append(io_pool().submit(fsync_paths, [str(path), *own_dirs]))

    def _wait(self) -> None:
        """Wait for every chunk write handed out so far, then re-raise the first failure (a
        chunk still in flight when an error is raised could land after ``abort`` removed the
        staging group)."""
        tasks, self._tasks = self._tasks, []
        error = None
        for task in tasks:
            try:
                task.result()
            except BaseException as exc:  # noqa: BLE001 - re-raised once all are done
                error = error or exc
        if error is not None:
            raise error

    def finish(self, doc: dict) -> None:
        """Flush remaining frames, trim to them, write the protein document and consolidate."""
        self._flush(final=True)
        self._wait()
        for sync in self._syncs:
            self.synced.update(sync.result())
        if self.n_frames < self.max_frames:
            for writer in self._writers.values():
                writer.array.resize((self.n_frames, *writer.array.shape[1:]))
        temps = sorted(t for t in self._temperatures if not np.isnan(t))
        temps += [None] * any(np.isnan(t) for t in self._temperatures)
        doc = dict(doc, n_frames=self.n_frames, temperatures=temps,
                   nbytes_raw=2 * self.n_frames * self.n_atoms * 12)
        doc["nbytes_stored"] = directory_size(self.root) if self.root is not None \
            else self.location.size()
        attrs = write_group_metadata(self.location, {PROTEIN_DOC: doc},
                                     [w.array.basename for w in
                                      [*self._writers.values(), *self._static]],
                                     record_digests=PROTEIN_DOC)
        self.doc = attrs[PROTEIN_DOC]

    def missing_files(self) -> list[str]:
        """The files of the finished group that are not on disk (something removed them after
        they were written): group and array metadata, and every chunk file of the arrays
        written by the direct path."""
        if self.root is None:
            return []  # object storage: a write is a whole object; nothing removes them
        expected = [self.root / "zarr.json"]
        for writer in [*self._writers.values(), *self._static]:
            array = writer.array
            expected.append(self.root / array.basename / "zarr.json")
            if writer.direct is not None:
                expected += [Path(writer.direct.path(c)) for c in range(writer.n_chunks)]
        return [str(p) for p in expected if not p.exists()]

    def abort(self) -> None:
        for task in self._tasks:  # no chunk may land after the directory is removed
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                task.result()
        for task in self._syncs:
            with contextlib.suppress(BaseException):
                task.result()
        self._tasks, self._syncs = [], []
        try:
            self._remove()
        finally:
            if self.claim is not None:
                self.claim.release()

    def _remove(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            self.location.remove("", recursive=True)


def _frames(pieces: list[np.ndarray], lo: int, hi: int) -> np.ndarray:
    """Frames ``[lo, hi)`` of the concatenation of ``pieces``: a view when they lie in one piece
    (blocks are many chunks long, so nearly every chunk), else a copy of the parts."""
    parts, start = [], 0
    for piece in pieces:
        a, b = max(lo - start, 0), min(hi - start, len(piece))
        if a < b:
            parts.append(piece[a:b])
        start += len(piece)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _create_layout(location: Location | Path, n_frames: int, per_atom: dict, encoding: Encoding,
                   observables: tuple[str, ...] = ()
                   ) -> tuple[zarr.Group, dict[str, ChunkWriter], list[ChunkWriter]]:
    """Create the protein group with its per-atom coordinates (written) and its per-frame
    coordinates and ``observables`` (float32 data variables) for ``n_frames`` frames (empty);
    return it, chunk writers of the per-frame arrays and those of the per-atom ones.

    The layout is the one ``xarray.Dataset.to_zarr`` writes for the protein's Dataset (its
    conventions: dimension names in the metadata, the non-index coordinates listed in the
    data variables' ``coordinates`` attribute; zarr's default codecs for the coordinates; no
    ``_FillValue``, so that no value of R or F is ever masked); ``tests/test_store.py`` checks
    it against ``to_zarr``, file by file. Made with zarr directly, it takes half the time.
    R and F come later (:func:`_create_vectors`): their first chunk decides their codecs.
    """
    location = location if isinstance(location, Location) else Location(location)
    fs = None if location.local else location.fs
    group = zarr.create_group(location.zarr_store(read_only=False), zarr_format=3)
    writers = {}
    for name in (*PER_FRAME, *observables):
        writers[name] = ChunkWriter(fs=fs, array=group.create_array(
            name, shape=(n_frames,), chunks=(PER_FRAME_CHUNK,),
            dtype=COORD_DTYPES.get(name, "float32"),
            fill_value=0 if name in ("replica", "source_frame") else np.nan,
            dimension_names=(FRAME,),
            attributes={"units": UNITS[name]} if name in UNITS else {},
            **encoding.codecs_for_coordinates()))
    static = []
    for name, (dim, values, attributes) in per_atom.items():
        static.append(ChunkWriter(fs=fs, array=group.create_array(
            name, shape=values.shape, chunks=values.shape, dtype=values.dtype,
            dimension_names=(dim,), attributes=attributes,
            **encoding.codecs_for_coordinates())))
        static[-1].write(0, values)
    return group, writers, static


def _create_vectors(group: zarr.Group, n_frames: int, chunk: int, encoding: Encoding,
                    first: dict[str, np.ndarray], fs=None) -> dict[str, ChunkWriter]:
    """Create R and F [n_frames, N, 3] (empty) in the protein group of :func:`_create_layout`,
    with the codecs ``encoding`` picks for their ``first`` chunk (may be empty); return their
    chunk writers."""
    n_atoms = first["R"].shape[1]
    coordinates = " ".join(sorted([*PER_ATOM, *PER_FRAME]))
    return {name: ChunkWriter(fs=fs, array=group.create_array(
        name, shape=(n_frames, n_atoms, 3), chunks=(chunk, n_atoms, 3), dtype="float32",
        fill_value=np.nan, dimension_names=(FRAME, ATOM, XYZ),
        attributes={"units": UNITS[name], "coordinates": coordinates},
        **encoding.codecs_for_vectors(first[name] if len(first[name]) else None)))
        for name in ("R", "F")}


def write_group_metadata(location: Location, attributes: dict, children: list[str], *,
                         record_digests: str | None = None) -> dict:
    """Set a group's attributes and consolidate its metadata, in one write of its ``zarr.json``.

    ``children`` are the names of the group's arrays: their ``zarr.json`` documents go in as
    they are, which is what ``zarr.consolidate_metadata`` writes after setting the attributes
    (``tests/test_store.py`` checks it), in a fifth of the time and with no listing.
    ``record_digests``: the attribute whose document gets ``arrays_metadata``, the digest of
    each array's metadata (:func:`~protstore.store.digest.arrays_metadata_digests`), taken
    here once from the documents being consolidated. Returns the attributes written.
    """
    group = location.read_json("zarr.json")
    blobs = location.read_many(f"{name}/zarr.json" for name in sorted(children))
    consolidated = {name: json.loads(blobs[f"{name}/zarr.json"]) for name in sorted(children)}
    attributes = json.loads(json.dumps(attributes))
    if record_digests is not None:
        attributes[record_digests]["arrays_metadata"] = arrays_metadata_digests(consolidated)
    group = {**group, "attributes": attributes,
             "consolidated_metadata": {"kind": "inline", "must_understand": False,
                                       "metadata": consolidated}}
    location.write_bytes("zarr.json", json.dumps(group).encode())
    return attributes
