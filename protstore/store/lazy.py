"""Lazy arrays over the direct chunk path: the frames of a protein's R and F, read on first
access for dask (:class:`LazyFrames`) and for xarray's lazily indexed arrays
(:class:`FramesBackendArray`), decoding only the chunks a selection touches, several at a time
on the codec pool."""

from __future__ import annotations

import numpy as np
from xarray.backends import BackendArray
from xarray.core import indexing

from ..pools import codec_pool
from .chunks import ChunkReader


class LazyFrames:
    """Array-like view of a frame-chunked Zarr array for ``dask.array.from_array``.

    ``self[key]`` reads only the chunks holding the frames the key selects (a slice, an integer
    or an integer array along the first axis), decoding several chunks at once on a shared
    pool of threads, each copying its frames straight into the result; then it applies the
    rest of the key. Shape and dtype are the array's.
    """

    def __init__(self, reader: ChunkReader):
        self.reader = reader
        self.shape = reader.meta.shape
        self.dtype = reader.meta.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        first, rest = (key[0], key[1:]) if key else (slice(None), ())
        if isinstance(first, slice) and first.step in (None, 1):
            lo, hi, _ = first.indices(self.shape[0])
            frames, consecutive = np.arange(lo, max(lo, hi)), True
        elif isinstance(first, (int, np.integer)):  # drops the first axis
            return self._frames(np.arange(self.shape[0])[[first]], True)[(0, *rest)]
        elif _is_int_array(first) and not any(_is_int_array(k) for k in rest):
            frames, consecutive = np.arange(self.shape[0])[np.asarray(first)], False  # bounds
        else:  # anything else (steps, booleans, several arrays): NumPy on the whole array
            return np.asarray(self.reader.read_all()[key])
        return self._frames(frames, consecutive)[(slice(None), *rest)]

    def _frames(self, frames: np.ndarray, consecutive: bool) -> np.ndarray:
        """[len(frames), ...] the given frames; ``consecutive``: frames is a range."""
        out = np.empty((len(frames), *self.shape[1:]), self.dtype)
        chunk = self.reader.chunk
        chunk_of = frames // chunk
        chunks = np.unique(chunk_of)

        def copy(c: int) -> None:
            if consecutive:  # slices: one strided copy, no fancy indexing
                a, b = max(frames[0], c * chunk), min(frames[-1] + 1, (c + 1) * chunk)
                first = frames[0]
                out[a - first:b - first] = self.reader.read(c)[a - c * chunk:b - c * chunk]
            else:
                rows = np.flatnonzero(chunk_of == c)
                out[rows] = self.reader.read(c)[frames[rows] - c * chunk]

        if len(chunks) == 1:
            copy(int(chunks[0]))
        else:
            for task in [codec_pool().submit(copy, int(c)) for c in chunks]:
                task.result()
        return out


class FramesBackendArray(BackendArray):
    """xarray's lazily indexed (not dask) face of :class:`LazyFrames`: ``Store.protein(id,
    chunks=None)``. xarray hands it outer-indexing keys with at most one integer array
    (``IndexingSupport.OUTER_1VECTOR``) and indexes nothing until values are asked for; then
    the frames are decoded on the codec pool straight into the result, with none of dask's
    scheduling or its copy of the computed array.
    """

    def __init__(self, frames: LazyFrames):
        self.frames = frames
        self.shape = frames.shape
        self.dtype = frames.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER_1VECTOR, self._outer)

    def _outer(self, key: tuple) -> np.ndarray:
        # An array after the first axis is applied on its own: in one NumPy key it would be
        # broadcast against the integers (vectorized, not outer, indexing).
        vector = next((d for d, k in enumerate(key) if d > 0 and _is_int_array(k)), None)
        if vector is None:
            return self.frames[key]
        out = self.frames[key[:vector] + (slice(None),) + key[vector + 1:]]
        axis = vector - sum(isinstance(k, (int, np.integer)) for k in key[:vector])
        return np.take(out, key[vector], axis=axis)


def _is_int_array(key) -> bool:
    return isinstance(key, (list, np.ndarray)) and np.asarray(key).dtype.kind in "iu"
