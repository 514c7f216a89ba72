"""The direct chunk path: whole chunks of the store's own arrays read and written without
zarr-python's per-chunk machinery, with zarr itself as the fallback for everything else.

Why it exists: the batch loader reads thousands of whole ~1 MiB chunks per epoch from many
threads. Through ``zarr.Array.__getitem__`` each chunk pays zarr's general machinery (selection,
async hops, buffers) while holding the GIL; reading the chunk file and decoding it with
numcodecs releases the GIL, so a few threads keep every core busy. The per-chunk figures are in
``docs/performance.md`` (``benchmarks/bench_store.py`` measures them).

Which layouts it handles: a Zarr v3 array in a local directory store (``zarr.storage.LocalStore``)
or, given the location's fsspec file system, in an ``FsspecStore`` (object storage: one GET or
PUT per chunk, many in flight from the threads that call it), chunked along its first axis
only, whose metadata document (the spec JSON, read with ``array.metadata.to_dict()``, never
zarr-python's codec objects) has

- a ``regular`` chunk grid and the ``default`` or ``v2`` chunk key encoding;
- the codec chain ``[transpose]? -> bytes (any endian) | vlen-utf8 -> blosc | zstd -> [crc32c]?``.

Anything else (another codec, sharding, a remote store, a field it does not know) and any
exception while recognising a layout sends that array through zarr's own ``Array`` API, never to
a crash. Readers and writers here are checked against zarr bit for bit in the tests.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import crc32c
import numcodecs
import numcodecs.vlen
import numpy as np
import zarr
from zarr.storage import FsspecStore, LocalStore

from ..errors import ChunkError
from .labels import decode_labels, is_labelled

_BLOSC_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
_ENDIAN = {"little": "<", "big": ">"}


def chunk_key(metadata: dict, coords: tuple[int, ...]) -> str:
    """The store key (relative to the array) of the chunk at grid ``coords``, from the array's
    Zarr v3 metadata document (``chunk_key_encoding``: ``default`` or ``v2``)."""
    return _chunk_key(metadata, [str(int(c)) for c in coords])


def _chunk_key(metadata: dict, parts: list[str]) -> str:
    encoding = metadata.get("chunk_key_encoding") or {"name": "default"}
    name = encoding.get("name")
    separator = (encoding.get("configuration") or {}).get(
        "separator", "/" if name == "default" else ".")
    if name == "default":
        return separator.join(["c", *parts])
    if name == "v2":
        return separator.join(parts) or "0"
    raise ValueError(f"unknown chunk key encoding {name!r}")


def compressor_from_spec(codec: dict):
    """The numcodecs codec doing what the Zarr v3 ``blosc`` or ``zstd`` codec document
    (``{"name": ..., "configuration": {...}}``) describes."""
    name, config = codec["name"], codec.get("configuration") or {}
    if name == "zstd":
        return numcodecs.get_codec({"id": "zstd", "level": int(config.get("level", 0)),
                                    "checksum": bool(config.get("checksum", False))})
    if name == "blosc":
        return numcodecs.get_codec({
            "id": "blosc", "cname": config["cname"], "clevel": int(config["clevel"]),
            "shuffle": _BLOSC_SHUFFLE[config["shuffle"]],
            "blocksize": int(config.get("blocksize") or 0)})
    raise ValueError(f"no direct codec for {name!r}")


@dataclass(frozen=True)
class DirectLayout:
    """How one array's chunks are stored, as far as the direct path needs to know.

    directory : the array's directory (a local Path, or the fsspec path of its prefix);
    fs : the fsspec file system holding it (None: the local disk, read with ``open``);
    metadata : its Zarr v3 metadata document;
    order : the transpose order (identity without a transpose codec); dtype : the stored dtype
    with its byte order (None for UTF-8 strings); compressor : the numcodecs codec;
    crc32c : chunks end in a CRC32C checksum of the compressed bytes.
    """

    directory: Path | str
    fs: object
    metadata: dict
    order: tuple[int, ...]
    dtype: np.dtype | None
    compressor: object
    crc32c: bool

    @functools.cached_property
    def stored_shape(self) -> tuple[int, ...]:
        """A chunk's shape as stored (after the transpose)."""
        chunks = self.metadata["chunk_grid"]["configuration"]["chunk_shape"]
        return tuple(int(chunks[o]) for o in self.order)

    @functools.cached_property
    def inverse_order(self) -> tuple[int, ...]:
        """The axes order that undoes the transpose."""
        return tuple(int(i) for i in np.argsort(self.order))

    @functools.cached_property
    def chunk_nbytes(self) -> int:
        """A decoded chunk's size in bytes (fixed-size dtypes)."""
        return int(np.prod(self.stored_shape)) * self.dtype.itemsize

    @functools.cached_property
    def _path_around(self) -> tuple[str, str]:
        """The path of chunk (c, 0, ..., 0) before and after c (a path is made per chunk read:
        pathlib and the key encoding's logic, each time, held the GIL measurably)."""
        zeros = ["0"] * (len(self.metadata["shape"]) - 1)
        before, _, after = _chunk_key(self.metadata, ["\0", *zeros]).partition("\0")
        return f"{os.fspath(self.directory)}/{before}", after

    def path(self, c: int) -> str:
        """The path of the chunk holding frames [c * chunk, (c + 1) * chunk): a local file, or
        the object's fsspec path."""
        before, after = self._path_around
        return f"{before}{int(c)}{after}"


def direct_layout(meta: "ArrayMeta", fs=None) -> DirectLayout | None:
    """The array's :class:`DirectLayout` when the direct path handles it (module docstring),
    else None. ``fs``: the (synchronous) fsspec file system of an ``FsspecStore``. Never
    raises: whatever it does not recognise goes to zarr."""
    try:
        return _recognise(meta, fs)
    except Exception:  # noqa: BLE001 - anything unexpected: zarr reads and writes it instead
        return None


def _recognise(array: "ArrayMeta", fs) -> DirectLayout | None:
    if isinstance(array.store, LocalStore):
        directory, fs = Path(array.store.root) / array.path, None
    elif fs is not None and isinstance(array.store, FsspecStore):
        directory = f"{array.store.path.rstrip('/')}/{array.path}"
    else:
        return None
    meta = array.document
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
        return None
    grid = meta.get("chunk_grid") or {}
    shape = list(meta["shape"])
    chunks = list((grid.get("configuration") or {}).get("chunk_shape") or [])
    if grid.get("name") != "regular" or len(chunks) != len(shape) or not shape \
            or chunks[1:] != shape[1:] or chunks[0] < 1:
        return None
    if meta.get("storage_transformers"):
        return None
    codecs = [dict(c) for c in meta["codecs"]]
    order = tuple(range(len(shape)))
    if codecs and codecs[0]["name"] == "transpose":
        order = tuple(int(i) for i in codecs.pop(0)["configuration"]["order"])
        if sorted(order) != list(range(len(shape))):
            return None
    checksum = bool(codecs) and codecs[-1]["name"] == "crc32c"
    if checksum:
        codecs.pop()
    if len(codecs) != 2 or codecs[1]["name"] not in ("blosc", "zstd"):
        return None
    array_to_bytes = codecs[0]
    if array_to_bytes["name"] == "vlen-utf8" and meta["data_type"] == "string":
        dtype = None
    elif array_to_bytes["name"] == "bytes":
        dtype = np.dtype(array.dtype)
        if dtype.kind not in "fiub":
            return None
        endian = (array_to_bytes.get("configuration") or {}).get("endian")
        if endian is not None:
            dtype = dtype.newbyteorder(_ENDIAN[endian])
    else:
        return None
    compressor = compressor_from_spec(codecs[1])
    return DirectLayout(directory, fs, meta, order, dtype, compressor, checksum)


def missing_chunks(array: zarr.Array) -> list[str]:
    """Keys of the chunks of an array in a local directory store whose files are missing
    (zarr would read them as fill value); [] for other stores, which are not checked here."""
    if not isinstance(array.store, LocalStore):
        return []
    meta = array.metadata.to_dict()
    grid = [-(-s // c) if c else 0 for s, c in zip(array.shape, array.chunks)]
    directory = Path(array.store.root) / array.path
    keys = [chunk_key(meta, coords) for coords in np.ndindex(*grid)]
    return [key for key in keys if not (directory / key).is_file()]


@dataclass(frozen=True, eq=False)
class ArrayMeta:
    """A Zarr v3 array as its metadata document describes it: what the direct path needs,
    without building zarr-python's ``Array`` (which parses and validates the whole document: a
    protein has ten arrays and a bucket thousands of proteins). zarr's own array is opened only
    when a read falls back to it (:attr:`zarr`).

    document : the array's ``zarr.json`` document; store : the ``zarr.abc.store.Store`` holding
    it; path : its path in the store; array : the ``zarr.Array`` when the caller has one.
    """

    document: dict
    store: object
    path: str
    array: zarr.Array | None = None

    @classmethod
    def of(cls, array: zarr.Array, document: dict | None = None) -> "ArrayMeta":
        """The metadata of an open ``zarr.Array`` (``document``: its metadata document when the
        caller has it, else ``array.metadata.to_dict()``)."""
        return cls(document if document is not None else array.metadata.to_dict(),
                   array.store, array.path, array)

    def checked(self) -> "ArrayMeta":
        """Itself, once its shape, chunks and dtype parse: KeyError, TypeError or ValueError
        for a document it does not know."""
        self.shape, self.chunks, self.dtype
        return self

    @functools.cached_property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.document["shape"])

    @functools.cached_property
    def chunks(self) -> tuple[int, ...]:
        """The chunk shape (zarr's: a sharded array's inner chunks when the array is open;
        from the document alone, its chunk grid's, which the direct path never reads)."""
        if self.array is not None:
            return tuple(self.array.chunks)
        return tuple(int(n) for n in
                     self.document["chunk_grid"]["configuration"]["chunk_shape"])

    @functools.cached_property
    def dtype(self) -> np.dtype:
        """The array's NumPy dtype (object for UTF-8 strings)."""
        if self.array is not None:
            return np.dtype(self.array.dtype)
        kind = self.document["data_type"]
        return np.dtype(object) if kind == "string" else np.dtype(kind)

    @property
    def attrs(self) -> dict:
        return dict(self.document.get("attributes") or {})

    @property
    def dimension_names(self) -> tuple[str, ...]:
        return tuple(self.document.get("dimension_names") or ())

    @property
    def basename(self) -> str:
        return self.path.rpartition("/")[2]

    @functools.cached_property
    def zarr(self) -> zarr.Array:
        """zarr-python's ``Array`` of it (for the reads the direct path does not handle)."""
        if self.array is not None:
            return self.array
        from zarr.storage import StorePath

        return zarr.Array(zarr.AsyncArray(self.document, StorePath(self.store, self.path)))


class _FrameChunks:
    """A Zarr v3 array chunked along its first axis (``meta``: its :class:`ArrayMeta`), with
    its :class:`DirectLayout` (``direct``; None: zarr reads and writes it)."""

    def __init__(self, meta: ArrayMeta, fs=None):
        self.meta = meta
        self.chunk = meta.chunks[0]
        self.direct = direct_layout(meta, fs)

    @property
    def n_chunks(self) -> int:
        return -(-self.meta.shape[0] // self.chunk)

    def _where(self, c: int) -> str:
        return f"{self.meta.store}/{self.meta.path} chunk {c}"


class ChunkReader(_FrameChunks):
    """Chunk ``c`` of a Zarr v3 array chunked along its first axis only, as a NumPy array.

    ``read(c)`` returns the chunk's frames ``[c*chunk, min((c+1)*chunk, frames))`` with shape
    ``(frames_in_chunk, *shape[1:])``; it may be a non-contiguous view (the transpose is not
    copied: the caller's gather does that copy anyway). A chunk file that is missing or does
    not decode is a :class:`~protstore.errors.ChunkError` naming the array and the chunk:
    protstore writes every chunk of its arrays, so a missing one is damage, not fill value.

    ``array``: a ``zarr.Array`` or its :class:`ArrayMeta`; ``fs``: the fsspec file system of
    an ``FsspecStore`` (else only local arrays take the direct path).
    """

    def __init__(self, array: zarr.Array | ArrayMeta, fs=None):
        super().__init__(array if isinstance(array, ArrayMeta) else ArrayMeta.of(array), fs)

    def read_all(self) -> np.ndarray:
        """The whole array (all chunks), contiguous; a labelled array (codes with their labels
        in its attributes, :func:`~protstore.store.layout.encode_labels`) as its labels."""
        if self.direct is None or self.n_chunks == 0:
            values = np.ascontiguousarray(self.meta.zarr[:])
        else:
            values = np.ascontiguousarray(
                np.concatenate([self.read(c) for c in range(self.n_chunks)]))
        attrs = self.meta.attrs
        if is_labelled(attrs):
            return decode_labels(values, attrs, f"{self.meta.store}/{self.meta.path}")
        return values

    def read(self, c: int, scratch: Scratch | None = None) -> np.ndarray:
        """Chunk ``c`` (class docstring). With ``scratch`` the chunk is read and decoded into
        its buffers instead of new ones: the result is then a view of them, valid until their
        next use."""
        lo = c * self.chunk
        shape = self.meta.shape
        hi = min(lo + self.chunk, shape[0])
        if not 0 <= lo < shape[0]:
            raise IndexError(f"{self.meta.path}: no chunk {c} (shape {shape})")
        if self.direct is None:
            return self.meta.zarr[lo:hi]
        layout = self.direct
        try:
            if layout.fs is None:
                raw = _read_file(layout.path(c), scratch)
            else:
                raw = layout.fs.cat_file(layout.path(c))
        except FileNotFoundError:
            raise ChunkError(self._where(c), "chunk file missing") from None
        try:
            stored = self._decode(raw, scratch)
        except Exception as exc:  # noqa: BLE001 - any decode failure is a damaged chunk
            raise ChunkError(self._where(c),
                             f"corrupt chunk ({type(exc).__name__}: {exc})") from None
        return stored.transpose(layout.inverse_order)[: hi - lo]

    def _decode(self, raw, scratch: Scratch | None = None) -> np.ndarray:
        layout = self.direct
        shape = layout.stored_shape
        if layout.crc32c:
            raw = _check_crc32c(raw)
        if layout.dtype is None:  # variable-length strings
            return numcodecs.vlen.VLenUTF8().decode(layout.compressor.decode(raw)).reshape(shape)
        out = None
        if scratch is not None and layout.compressor.codec_id == "blosc":
            # numcodecs takes an ``out`` of exactly the decoded size: a chunk of the wrong size
            # fails here, as it does without scratch (in reshape). A Blosc1 header holds the
            # decoded size in bytes 4-7, little endian.
            nbytes = int.from_bytes(memoryview(raw).cast("B")[4:8], "little")
            if nbytes != layout.chunk_nbytes:
                raise ValueError(f"decodes to {nbytes} bytes, not {layout.chunk_nbytes}")
            out = scratch.buffer(1, nbytes)
        return np.frombuffer(layout.compressor.decode(raw, out), layout.dtype).reshape(shape)


class Scratch:
    """Reusable byte buffers for one thread's chunk reads (0: the stored bytes, 1: the decoded
    ones). Read into new objects, every ~1 MiB chunk is a fresh block that the allocator maps
    and the kernel zeroes, page by page; a reader going through thousands of chunks reuses
    these instead."""

    def __init__(self):
        self._buffers = [np.empty(0, np.uint8), np.empty(0, np.uint8)]

    def buffer(self, i: int, nbytes: int) -> np.ndarray:
        """Buffer ``i``'s first ``nbytes`` bytes (uint8), grown when it is smaller."""
        if len(self._buffers[i]) < nbytes:
            self._buffers[i] = np.empty(nbytes, np.uint8)
        return self._buffers[i][:nbytes]


def _read_file(path: str, scratch: Scratch | None) -> bytes | np.ndarray:
    """The bytes of a local file, in scratch buffer 0 when given."""
    with open(path, "rb", buffering=0) as fh:
        if scratch is None:
            return fh.readall()
        out = scratch.buffer(0, os.fstat(fh.fileno()).st_size)
        n = 0
        while n < len(out) and (got := fh.readinto(out[n:])):
            n += got
        return out[:n]


class ChunkWriter(_FrameChunks):
    """Writes whole chunks of a Zarr v3 array chunked along its first axis (the counterpart of
    :class:`ChunkReader`: arrays the direct path handles are encoded with numcodecs, which
    releases the GIL; anything else goes through zarr).

    ``write(c, data)`` stores frames ``[c*chunk, c*chunk + len(data))``; ``data`` is shorter
    than a chunk only for the array's last chunk, which is padded with the fill value as zarr
    does. Chunks may be written from several threads at once.
    """

    def __init__(self, array: zarr.Array, fs=None):
        self.array = array  # the writes that fall back to zarr, and resize
        super().__init__(ArrayMeta.of(array), fs)

    @property
    def n_chunks(self) -> int:
        """Chunks of the array as it is now (``array.resize`` trims it)."""
        return -(-self.array.shape[0] // self.chunk)

    def write(self, c: int, data: np.ndarray) -> Path | str | None:
        """Store chunk ``c``; returns the chunk file written (a local Path, or the fsspec path
        of the object), None when zarr wrote it."""
        lo = c * self.chunk
        if not (0 < len(data) <= self.chunk and lo + len(data) <= self.array.shape[0]) \
                or data.shape[1:] != self.array.shape[1:]:
            raise IndexError(f"{self.array.path}: {data.shape} frames do not fit chunk {c} "
                             f"(shape {self.array.shape}, chunks {self.array.chunks})")
        if self.direct is None:
            self.array[lo:lo + len(data)] = data
            return None
        layout = self.direct
        if len(data) < self.chunk:
            full = np.full(self.array.chunks, self.array.fill_value, layout.dtype or object)
            full[:len(data)] = data
            data = full
        if layout.dtype is None:  # variable-length strings
            raw = numcodecs.vlen.VLenUTF8().encode(
                np.asarray(data, dtype=object).transpose(layout.order))
        else:
            raw = np.ascontiguousarray(np.asarray(data, dtype=layout.dtype).transpose(layout.order))
        encoded = layout.compressor.encode(raw)
        if layout.crc32c:
            encoded = _with_crc32c(encoded)
        if layout.fs is not None:
            path = layout.path(c)
            layout.fs.pipe_file(path, bytes(encoded))
            return path
        path = Path(layout.path(c))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(encoded)
        return path


def _check_crc32c(raw):
    """The payload of a chunk ending in its CRC32C (the Zarr v3 ``crc32c`` codec: 4 bytes,
    little endian), without a copy; raises on a mismatch. The ``crc32c`` package computes it
    with the GIL released (``google_crc32c``, numcodecs' choice, holds it: ~0.15 ms per MiB
    that no other reader thread could use)."""
    view = memoryview(raw).cast("B")
    if len(view) < 4:
        raise ValueError("chunk shorter than its CRC32C checksum")
    payload, stored = view[:-4], int.from_bytes(view[-4:], "little")
    actual = crc32c.crc32c(payload)
    if actual != stored:
        raise ValueError(f"CRC32C mismatch: stored {stored:#010x}, computed {actual:#010x}")
    return payload


def _with_crc32c(payload) -> bytes:
    """``payload`` followed by its CRC32C (4 bytes, little endian)."""
    payload = memoryview(payload).cast("B")
    return b"".join((payload, crc32c.crc32c(payload).to_bytes(4, "little")))
