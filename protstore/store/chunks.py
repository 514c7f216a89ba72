"""Whole-chunk reads and writes of frame-chunked arrays: the store's own encoding, directly.

The batch loader reads thousands of whole ~1 MiB chunks per epoch, and reading a protein reads
all of its chunks. Through ``zarr.Array.__getitem__`` each chunk costs ~1.6 ms of CPU on the
development machine (README), of which only ~0.8 ms is reading, Blosc and the transpose; the
rest is zarr's general machinery (selection, async hops, buffers), paid while holding the GIL.
For chunks in the layout protstore writes (an optional ``transpose``; little- or native-endian
``bytes`` or UTF-8 strings; ``blosc`` or ``zstd``) on a local store, :class:`ChunkReader`
reads the chunk file and decodes it with numcodecs, which releases the GIL, so a few threads
keep every core busy. Anything else (other codecs, remote stores) goes through zarr itself.
:class:`LazyFrames` puts chunk readers behind dask (``Store.protein``), and
:class:`FramesBackendArray` behind xarray's own lazy indexing (``Store.protein(chunks=None)``).
:class:`ChunkWriter` is the same for writing (ingest): it encodes a chunk with numcodecs and
writes its file.
``tests/test_views_loader.py`` and ``tests/test_store.py`` check both paths against zarr, bit
for bit.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numcodecs.blosc
import numcodecs.vlen
import numcodecs.zstd
import numpy as np
import zarr
from xarray.backends import BackendArray
from xarray.core import indexing
from zarr.codecs import BloscCodec, BytesCodec, TransposeCodec, VLenUTF8Codec, ZstdCodec
from zarr.storage import LocalStore


class _FrameChunks:
    """A Zarr v3 array chunked along its first axis, with the numcodecs codec and the chunk
    file paths of the fast path (``direct``: the store's own local layout, else None)."""

    def __init__(self, array: zarr.Array):
        self.array = array
        self.chunk = array.chunks[0]
        self.direct = _direct_layout(array)
        if self.direct is not None:
            self._codec = numcodecs_compressor(array.metadata.codecs[-1])

    def _chunk_path(self, c: int) -> Path:
        return self.direct[0] / self.array.metadata.encode_chunk_key(
            (c,) + (0,) * (self.array.ndim - 1))


class ChunkReader(_FrameChunks):
    """Chunk ``c`` of a Zarr v3 array chunked along its first axis only, as a NumPy array.

    ``read(c)`` returns the chunk's frames ``[c*chunk, min((c+1)*chunk, frames))`` with shape
    ``(frames_in_chunk, *shape[1:])``; it may be a non-contiguous view (the transpose is not
    copied: the caller's gather does that copy anyway).
    """

    def read_all(self) -> np.ndarray:
        """The whole array (all chunks), contiguous."""
        n_chunks = -(-self.array.shape[0] // self.chunk)
        if n_chunks == 0:
            return self.array[:]
        if n_chunks == 1:
            return np.ascontiguousarray(self.read(0))
        return np.concatenate([self.read(c) for c in range(n_chunks)])

    def read(self, c: int) -> np.ndarray:
        lo = c * self.chunk
        hi = min(lo + self.chunk, self.array.shape[0])
        if not 0 <= lo < self.array.shape[0]:
            raise IndexError(f"{self.array.path}: no chunk {c} (shape {self.array.shape})")
        if self.direct is not None:
            _, order, dtype = self.direct
            try:
                with open(self._chunk_path(c), "rb") as fh:
                    raw = fh.read()
            except FileNotFoundError:  # not stored (never written, or all fill value)
                if dtype is None:
                    return self.array[lo:hi]
                return np.full((hi - lo, *self.array.shape[1:]), self.array.fill_value, dtype)
            shape = self.array.chunks
            raw = self._codec.decode(raw)
            if dtype is None:  # variable-length strings
                stored = numcodecs.vlen.VLenUTF8().decode(raw)
            else:
                stored = np.frombuffer(raw, dtype=dtype)
            stored = stored.reshape([shape[o] for o in order])
            return stored.transpose(np.argsort(order))[: hi - lo]
        return self.array[lo:hi]


class ChunkWriter(_FrameChunks):
    """Writes whole chunks of a Zarr v3 array chunked along its first axis (the counterpart of
    :class:`ChunkReader`; arrays in the store's own local layout are encoded with numcodecs,
    which releases the GIL; anything else goes through zarr).

    ``write(c, data)`` stores frames ``[c*chunk, c*chunk + len(data))``; ``data`` is shorter
    than a chunk only for the array's last chunk, which is padded with the fill value as zarr
    does. Chunks may be written from several threads at once.
    """

    def write(self, c: int, data: np.ndarray) -> Path | None:
        """Store chunk ``c``; returns the chunk file written (None when zarr wrote it)."""
        lo = c * self.chunk
        if not (0 < len(data) <= self.chunk and lo + len(data) <= self.array.shape[0]) \
                or data.shape[1:] != self.array.shape[1:]:
            raise IndexError(f"{self.array.path}: {data.shape} frames do not fit chunk {c} "
                             f"(shape {self.array.shape}, chunks {self.array.chunks})")
        if self.direct is None:
            self.array[lo:lo + len(data)] = data
            return None
        _, order, dtype = self.direct
        if len(data) < self.chunk:
            full = np.full(self.array.chunks, self.array.fill_value, dtype or object)
            full[:len(data)] = data
            data = full
        if dtype is None:  # variable-length strings
            raw = numcodecs.vlen.VLenUTF8().encode(np.asarray(data, dtype=object).transpose(order))
        else:
            raw = np.ascontiguousarray(np.asarray(data, dtype=dtype).transpose(order))
        key = self._chunk_path(c)
        encoded = self._codec.encode(raw)
        key.parent.mkdir(parents=True, exist_ok=True)
        with open(key, "wb") as fh:
            fh.write(encoded)
        return key


def numcodecs_compressor(codec: BloscCodec | ZstdCodec):
    """The numcodecs codec that does what zarr's ``blosc`` or ``zstd`` codec does."""
    if isinstance(codec, ZstdCodec):
        return numcodecs.zstd.Zstd(level=codec.level, checksum=codec.checksum)
    shuffle = {"noshuffle": numcodecs.blosc.NOSHUFFLE, "shuffle": numcodecs.blosc.SHUFFLE,
               "bitshuffle": numcodecs.blosc.BITSHUFFLE}[codec.shuffle.value]
    return numcodecs.blosc.Blosc(cname=codec.cname.value, clevel=codec.clevel, shuffle=shuffle,
                                 blocksize=codec.blocksize, typesize=codec.typesize)


def _direct_layout(array: zarr.Array) -> tuple[Path, tuple[int, ...], np.dtype | None] | None:
    """(array directory, transpose order, stored dtype or None for UTF-8 strings) when the fast
    path applies, else None."""
    if not isinstance(array.store, LocalStore) or array.metadata.zarr_format != 3:
        return None
    if any(array.chunks[d] != array.shape[d] for d in range(1, array.ndim)):
        return None
    codecs = list(array.metadata.codecs)
    order = tuple(range(array.ndim))
    if codecs and isinstance(codecs[0], TransposeCodec):
        order = tuple(codecs.pop(0).order)
    if len(codecs) != 2 or not isinstance(codecs[0], (BytesCodec, VLenUTF8Codec)) \
            or not isinstance(codecs[1], (BloscCodec, ZstdCodec)):
        return None
    if isinstance(codecs[0], VLenUTF8Codec):
        return Path(array.store.root) / array.path, order, None
    dtype = np.dtype(array.metadata.data_type.to_native_dtype())
    if codecs[0].endian is not None:
        dtype = dtype.newbyteorder("<" if codecs[0].endian.value == "little" else ">")
    return Path(array.store.root) / array.path, order, dtype


class LazyFrames:
    """Array-like view of a frame-chunked Zarr array for ``dask.array.from_array``.

    ``self[key]`` reads only the chunks holding the frames the key selects (a slice, an integer
    or an integer array along the first axis), decoding several chunks at once on a shared
    pool of threads, each copying its frames straight into the result; then it applies the
    rest of the key. Shape and dtype are the array's.
    """

    def __init__(self, reader: ChunkReader):
        self.reader = reader
        self.shape = reader.array.shape
        self.dtype = np.dtype(reader.array.dtype)
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


@functools.cache
def codec_pool() -> ThreadPoolExecutor:
    """The process's pool for chunk decodes and encodes (Blosc and zstd release the GIL)."""
    return ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="protstore-codec")


os.register_at_fork(after_in_child=codec_pool.cache_clear)  # a forked child has no threads
