"""Whole-chunk reads of R and F for the batch loader: the store's own encoding decoded directly.

The loader reads thousands of whole ~1 MiB chunks per epoch. Through ``zarr.Array.__getitem__``
each costs ~1.6 ms of CPU on the development machine (README), of which only ~0.8 ms is
reading, Blosc and the transpose; the rest is zarr's general machinery (selection, async hops,
buffers), paid while holding the GIL. For chunks in the layout protstore writes (optional ``transpose``, little- or
native-endian ``bytes`` or UTF-8 strings, ``blosc`` or ``zstd``) on a local store, :class:`ChunkReader` reads the chunk file
and decodes it with numcodecs, which releases the GIL, so a few threads keep every core busy.
Anything else (other codecs, remote stores, a chunk never written) goes through zarr itself.
``tests/test_views_loader.py`` checks both paths bit for bit against zarr.
"""

from __future__ import annotations

from pathlib import Path

import numcodecs.blosc
import numcodecs.vlen
import numcodecs.zstd
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, TransposeCodec, VLenUTF8Codec, ZstdCodec
from zarr.storage import LocalStore


class ChunkReader:
    """Chunk ``c`` of a Zarr v3 array chunked along its first axis only, as a NumPy array.

    ``read(c)`` returns the chunk's frames ``[c*chunk, min((c+1)*chunk, frames))`` with shape
    ``(frames_in_chunk, *shape[1:])``; it may be a non-contiguous view (the transpose is not
    copied: the caller's gather does that copy anyway).
    """

    def __init__(self, array: zarr.Array):
        self.array = array
        self.chunk = array.chunks[0]
        self.direct = _direct_layout(array)
        if self.direct is not None:
            compressor = array.metadata.codecs[-1]
            self._decompress = (numcodecs.blosc.decompress if isinstance(compressor, BloscCodec)
                                else numcodecs.zstd.Zstd().decode)

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
            path, order, dtype = self.direct
            try:
                with open(path / self.array.metadata.encode_chunk_key((c,) + (0,) * (
                        self.array.ndim - 1)), "rb") as fh:
                    raw = fh.read()
            except FileNotFoundError:  # not stored (never written, or all fill value)
                if dtype is None:
                    return self.array[lo:hi]
                return np.full((hi - lo, *self.array.shape[1:]), self.array.fill_value, dtype)
            shape = self.array.chunks
            raw = self._decompress(raw)
            if dtype is None:  # variable-length strings
                stored = numcodecs.vlen.VLenUTF8().decode(raw)
            else:
                stored = np.frombuffer(raw, dtype=dtype)
            stored = stored.reshape([shape[o] for o in order])
            return stored.transpose(np.argsort(order))[: hi - lo]
        return self.array[lo:hi]


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

    ``self[key]`` reads only the chunks that the key's frame range touches (through
    :class:`ChunkReader`), then applies the rest of the key. Shape and dtype are the array's.
    """

    def __init__(self, reader: ChunkReader):
        self.reader = reader
        self.shape = reader.array.shape
        self.dtype = np.dtype(reader.array.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        first, rest = (key[0], key[1:]) if key else (slice(None), ())
        if not isinstance(first, slice) or first.step not in (None, 1):
            return np.asarray(self.reader.read_all()[key])
        lo, hi, _ = first.indices(self.shape[0])
        chunk = self.reader.chunk
        if hi <= lo:
            return np.empty((0, *self.shape[1:]), self.dtype)[(slice(None), *rest)]
        c0, c1 = lo // chunk, (hi - 1) // chunk
        parts = [self.reader.read(c) for c in range(c0, c1 + 1)]
        block = parts[0] if len(parts) == 1 else np.concatenate(parts)
        # may be a view of a transposed chunk: dask's concatenation makes the one copy
        return block[(slice(lo - c0 * chunk, hi - c0 * chunk), *rest)]
