"""Where things are: a local directory or an fsspec URL (``s3://``, ``gs://``, ``memory://``...),
read and written through one small interface.

Every place protstore reads or writes (a store, a run directory, a checkpoint, an evaluation
output) is a :class:`Location`. Local paths keep what only a POSIX file system gives (atomic
renames, ``fsync``, ``O_EXCL``); on object storage, writes are whole objects (atomic by
nature), an exclusive create is a conditional PUT (``If-None-Match: *``, which S3 and
S3-compatible servers honour), and nothing relies on rename, locks or process ids.

Credentials and endpoints come from the standard environment of the file system's library
(for S3, s3fs/botocore read ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), and from ``storage_options`` where the user
needs more (the ``--storage-options JSON`` flag of every command).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .errors import LocationError, UndecodableDocument
from .pools import io_pool


class Location:
    """A directory-like place: a local path or an fsspec URL.

    ``url`` is kept as given (without a trailing ``/``) for messages and for the libraries
    that take URLs (zarr, xarray); ``fs`` and ``path`` are the fsspec file system and its path
    of the place. Keys are ``/``-separated paths relative to the place.
    """

    def __init__(self, url: str | os.PathLike, storage_options: dict | None = None):
        url = os.fspath(url)
        if not url:
            raise LocationError("an empty path is not a location")
        self.url = url.rstrip("/") or "/"
        self.storage_options = dict(storage_options or {})
        if fsspec.core.split_protocol(self.url)[0] in ("s3", "s3a"):
            # s3fs otherwise asks for every object's size (a HEAD) before its GET, to decide
            # whether to fetch it in parts; protstore's objects are a few MiB at most
            self.storage_options.setdefault("max_concurrency", 1)
        try:
            self.fs, self.path = fsspec.core.url_to_fs(self.url, **self.storage_options)
        except (ImportError, ValueError, TypeError) as exc:
            raise LocationError(f"{self.url}: cannot open this location: "
                                f"{str(exc).splitlines()[0]}") from None
        self.path = self.path.rstrip("/") or self.path
        self.local = isinstance(self.fs, LocalFileSystem)

    def __repr__(self) -> str:
        return f"Location({self.url!r})"

    def __str__(self) -> str:
        return self.url

    @property
    def address(self) -> str:
        """How documents record this place: the absolute local path, or the URL."""
        return self.path if self.local else self.url

    def __fspath__(self) -> str:
        """A local location is a path (``open``, ``shutil``, ``Path(...)`` take it)."""
        if not self.local:
            raise TypeError(f"{self.url} is not a local path")
        return self.path

    def sibling(self, name: str) -> "Location":
        """The place ``name`` beside this one."""
        other = object.__new__(Location)
        other.__dict__.update(self.__dict__)
        other.url = f"{self.url.rpartition('/')[0]}/{name}"
        other.path = f"{self.path.rpartition('/')[0]}/{name}"
        return other

    @property
    def suffix(self) -> str:
        name = self.name
        return name[name.rindex("."):] if "." in name else ""

    def with_suffix(self, suffix: str) -> "Location":
        name = self.name
        return self.sibling((name[:name.rindex(".")] if "." in name else name) + suffix)

    def __truediv__(self, key: str) -> "Location":
        child = object.__new__(Location)
        child.__dict__.update(self.__dict__)
        child.url, child.path = f"{self.url}/{key}", self.key(key)
        return child

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rpartition("/")[2]

    def key(self, key: str = "") -> str:
        """The file system path of ``key`` (relative to this place)."""
        return f"{self.path}/{key}" if key else self.path

    # ------------------------------------------------------------------------------ reading
    def read_bytes(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError if there is none."""
        return self.fs.cat_file(self.key(key))

    def read_json(self, key: str) -> dict:
        """The JSON document ``key``; :class:`~protstore.errors.UndecodableDocument` naming
        the file when it is not JSON (FileNotFoundError if there is none)."""
        return decode_json(self.read_bytes(key), f"{self.url}/{key}" if key else self.url)

    def read_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """key -> bytes, fetched concurrently where the file system can (one request each);
        FileNotFoundError if any is missing."""
        keys = list(keys)
        if not keys:
            return {}
        paths = [self.key(k) for k in keys]
        got = self.fs.cat(paths, on_error="return")
        out = {}
        for key, path in zip(keys, paths):
            value = got.get(path, FileNotFoundError(path))
            if isinstance(value, BaseException):
                raise value if isinstance(value, FileNotFoundError) else \
                    OSError(f"{self.url}/{key}: {value}")
            out[key] = value
        return out

    def exists(self, key: str = "") -> bool:
        self._fresh(key)
        return self.fs.exists(self.key(key))

    def listdir(self, key: str = "") -> list[str]:
        """Names directly under ``key`` (one LIST request on object storage); [] if none."""
        path = self.key(key)
        self._fresh(key)
        try:
            entries = self.fs.ls(path, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted({e.rstrip("/").rpartition("/")[2] for e in entries} - {""})

    def size(self, key: str = "") -> int:
        """Bytes of the objects under ``key``."""
        self._fresh(key)
        return int(self.fs.du(self.key(key), total=True))

    def _fresh(self, key: str) -> None:
        # fsspec caches listings of remote file systems; another writer may have changed them
        if not self.local:
            self.fs.invalidate_cache(self.key(key))

    # ------------------------------------------------------------------------------ writing
    def write_bytes(self, key: str, data: bytes) -> None:
        """Write the object whole: a reader sees the old or the new bytes, never a part (a
        rename on a local disk, flushed to it; one PUT on object storage)."""
        if not self.local:
            self.fs.pipe_file(self.key(key), bytes(data))
        else:
            self._local_publish(key, data, os.replace)

    def write_many(self, items: dict[str, bytes]) -> None:
        """Write several objects (key -> bytes), concurrently where the file system can (one
        PUT each on object storage, many in flight); each as :meth:`write_bytes` writes it, in
        no particular order."""
        if not items:
            return
        if self.local:
            for key, data in items.items():
                self.write_bytes(key, data)
        else:
            self.fs.pipe({self.key(k): bytes(v) for k, v in items.items()})

    def create_bytes(self, key: str, data: bytes) -> None:
        """Write the object only if there is none: FileExistsError otherwise, decided
        atomically (a hard link of a complete file on a local disk, a conditional PUT on
        object storage), so that of two writers exactly one wins."""
        if not self.local:
            self.fs.pipe_file(self.key(key), bytes(data), mode="create")
        else:
            self._local_publish(key, data, os.link)  # never replaces: FileExistsError

    def _local_publish(self, key: str, data: bytes, publish) -> None:
        """Write a flushed temporary file beside ``key``, then ``publish(tmp, path)`` it."""
        path = self.key(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            publish(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        fsync_paths([os.path.dirname(path)])

    def write_json(self, key: str, doc: dict, *, schema: str | None = None,
                   exclusive: bool = False) -> None:
        """Write ``doc`` as strict JSON (checked against ``schema`` when given)."""
        from .schemas import dumps_document

        text = dumps_document(doc, schema, f"{self.url}/{key}", indent=None) if schema \
            else json.dumps(doc, allow_nan=False)
        (self.create_bytes if exclusive else self.write_bytes)(key, text.encode())

    def append_text(self, key: str, text: str) -> None:
        """Add ``text`` at the end of a text object (object storage has no append: the object
        is read and written whole, which suits the small logs this is for)."""
        if self.local:
            path = self.key(key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a") as fh:
                fh.write(text)
            return
        try:
            old = self.read_bytes(key)
        except FileNotFoundError:
            old = b""
        self.write_bytes(key, old + text.encode())

    def mkdir(self) -> None:
        """Make the directory on a local disk (object storage has none to make)."""
        if self.local:
            os.makedirs(self.path, exist_ok=True)

    def publish(self, dest: "Location", each=None) -> None:
        """Move the tree here to ``dest``, which appears whole or not at all: one rename on a
        local disk (flushed first); on object storage a server-side copy of every object, data
        first, array and group documents (``zarr.json``) next and this tree's own
        ``zarr.json`` last, then this tree is removed. ``each()`` is called after every copy."""
        if self.local:
            fsync_tree(Path(self.path))
            os.makedirs(os.path.dirname(dest.path), exist_ok=True)
            os.rename(self.path, dest.path)  # fails rather than replace a non-empty directory
            return
        prefix = self.path.rstrip("/") + "/"
        keys = [p[len(prefix):] for p in self.fs.find(self.path) if p.startswith(prefix)]
        for key in sorted(keys, key=lambda k: (k == "zarr.json", k.endswith("zarr.json"), k)):
            self.copy(key, dest / key)
            if each is not None:
                each()
        self.remove("zarr.json")  # first: a half-removed tree is never taken for a whole one
        self.remove("", recursive=True)

    def remove(self, key: str, *, recursive: bool = False) -> None:
        """Remove an object (or everything under ``key``); nothing there is not an error."""
        path = self.key(key)
        try:
            self.fs.rm(path, recursive=recursive)
        except FileNotFoundError:
            pass
        self._fresh(key)

    def copy(self, key: str, dest: "Location") -> None:
        """Copy one object to ``dest`` on the same file system (server-side on object
        storage: the bytes do not pass through this machine)."""
        self.fs.cp_file(self.key(key), dest.path)

    def zarr_store(self, read_only: bool = True):
        """A zarr store of this place (``LocalStore`` on a local disk, else ``FsspecStore``)."""
        import zarr

        if self.local:
            return zarr.storage.LocalStore(self.path, read_only=read_only)
        return zarr.storage.FsspecStore.from_url(self.url, storage_options=self.storage_options
                                                 or None, read_only=read_only)


def fsync_paths(paths: list[str]) -> list[str]:
    """Flush files and directories to disk, in order; returns ``paths``."""
    for path in paths:
        _fsync(path)
    return paths


def _fsync(path: str) -> str:
    if os.name == "nt":  # Windows: no directory handles to flush; a file's needs write access
        if os.path.isdir(path):
            return path
        fd = os.open(path, os.O_RDWR)
    else:
        fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def parse_storage_options(text: str | None) -> dict | None:
    """The ``--storage-options`` flag: a JSON object, or None."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LocationError(f"--storage-options: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise LocationError("--storage-options: must be a JSON object")
    return value


def decode_json(blob: bytes | str, where: str):
    """``json.loads(blob)``, or :class:`~protstore.errors.UndecodableDocument` naming
    ``where`` and the position."""
    try:
        return json.loads(blob)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UndecodableDocument(f"{where}: not a JSON document "
                                  f"({getattr(exc, 'msg', None) or exc}"
                                  f"{f' at line {exc.lineno} column {exc.colno}' if hasattr(exc, 'lineno') else ''})") from None


def as_location(where, storage_options: dict | None = None) -> Location:
    """``where`` (a path, a URL or a Location) as a :class:`Location`."""
    return where if isinstance(where, Location) else Location(where, storage_options)


def fsync_tree(path: Path, skip: set[str] = frozenset()) -> None:
    """Flush a freshly written directory tree to disk before it is renamed into place.

    The files (but those in ``skip``, paths already flushed) are flushed by a few threads at
    once (fsync releases the GIL, and the device can merge the writes), then the directories
    (but those in ``skip``): their new entries must reach the disk too."""
    files, dirs = [], []
    for dirpath, _, names in os.walk(path):
        if dirpath not in skip:
            dirs.append(dirpath)
        files.extend(f for f in (os.path.join(dirpath, name) for name in names) if f not in skip)
    list(io_pool().map(_fsync, files))
    list(io_pool().map(_fsync, dirs))
