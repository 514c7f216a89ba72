"""The Store: open, list, summarise, read proteins as lazy xarray Datasets, commit new ones."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

import dask.array as da
import dask.base
import fsspec
import pandas as pd
import xarray as xr
import zarr
from xarray.core.indexing import LazilyIndexedArray
from zarr.core.group import GroupMetadata
from zarr.storage import StorePath

from .. import __version__
from ..errors import ProteinExistsError, StoreError
from ..vocab import PAD_ID, UNK_ID, VOCABULARY
from .chunks import ChunkReader, FramesBackendArray, LazyFrames
from .consolidate import CONTAINERS, inline_consolidated, merge_consolidated
from .layout import (ATOM, CREATING, FORMAT_VERSION, FRAME, LOCK, PER_ATOM, PER_FRAME, PLANS,
                     PROTEIN_DOC, PROTEINS, STAGING, STORE_DOC, UNITS, XYZ, Encoding, protein_path)
from .lock import store_lock
from .quiet import quiet_zarr
from .schemas import check_document
from .staging import REPLACED, WRITE, parse_staging, staging_name
from .writer import ProteinWriter, fsync_paths, fsync_tree

DASK_CHUNK_BYTES = 128 << 20  # dask's own default chunk size
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


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


class Store:
    """A protstore: proteins as Zarr v3 groups, read lazily as xarray Datasets.

    Use :func:`open_store` to get one. Reading works on any path or URL zarr can open; writing
    (ingest, plans) needs a local directory, where commits are atomic renames under a file lock.
    """

    def __init__(self, url: str, mode: str, storage_options: dict | None = None):
        self.url = url
        self.mode = mode
        self.storage_options = storage_options
        self.local = _is_local(url)
        self.root = Path(url.removeprefix("file://")) if self.local else None
        self._load()

    # ----------------------------------------------------------------------------- reading
    def _load(self) -> None:
        # The root's zarr.json, read as JSON: zarr would build objects for every node of the
        # consolidated metadata, and listing and summarising need only the protein documents.
        try:
            with fsspec.open(f"{self.url.rstrip('/')}/zarr.json", "rb",
                             **(self.storage_options or {})) as fh:
                root = json.loads(fh.read())
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise StoreError(f"{self.url}: not a protstore (no Zarr v3 group): {exc}") from None
        if root.get("zarr_format") != 3 or root.get("node_type") != "group":
            raise StoreError(f"{self.url}: not a protstore (no Zarr v3 group)")
        doc = (root.get("attributes") or {}).get(STORE_DOC)
        if doc is None:
            raise StoreError(f"{self.url}: a Zarr group but not a protstore "
                             f"(root attrs lack {STORE_DOC!r})")
        self.doc = doc
        # path -> node metadata (JSON) of the nodes at the last consolidation
        self._consolidated = (root.get("consolidated_metadata") or {}).get("metadata") or {}
        self._docs: dict[str, dict] = {}
        self._nodes: dict[str, dict[str, dict]] | None = None
        self.__dict__.pop("_group", None)

    @functools.cached_property
    def _group(self) -> zarr.Group:
        """The root group (its metadata read at first use, without the consolidated part)."""
        with quiet_zarr():
            return zarr.open_group(self.url, mode="r", zarr_format=3, use_consolidated=False,
                                   storage_options=self.storage_options)

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return tuple(self.doc["vocabulary"])

    @property
    def encoding(self) -> Encoding:
        # stores before 0.3 had no block size (0: automatic), before 0.5 no chunk checksums
        return Encoding(**{"block_bytes": 0, "checksum": False, **self.doc["encoding"]})

    @property
    def proteins(self) -> list[str]:
        """Sorted ids of the proteins in the store (complete ones only)."""
        if self.local:
            base = self.root / PROTEINS
            names = [p.name for p in base.iterdir() if (p / "zarr.json").is_file()]
        else:
            with quiet_zarr():
                names = list(self._group[PROTEINS].group_keys())
        return sorted(names)

    def __contains__(self, protein_id: str) -> bool:
        """From the metadata ``open_store`` read; a protein committed since is found with one
        read of its own ``zarr.json`` (never a listing of ``proteins/``)."""
        try:
            check_protein_id(protein_id)
        except StoreError:
            return False
        if protein_id in self._protein_nodes():
            return True
        if self.local:
            return (self.root / protein_path(protein_id) / "zarr.json").is_file()
        fs, path = fsspec.core.url_to_fs(self.url, **(self.storage_options or {}))
        return fs.exists(f"{path.rstrip('/')}/{protein_path(protein_id)}/zarr.json")

    def __len__(self) -> int:
        return len(self.proteins)

    def __repr__(self) -> str:
        return f"<protstore.Store {self.url!r} mode={self.mode!r} proteins={len(self)}>"

    def protein_doc(self, protein_id: str) -> dict:
        """The protein document (metadata only; reads no array data)."""
        if protein_id not in self._docs:
            meta = self._consolidated.get(protein_path(protein_id))
            if meta is not None:
                attrs = meta.get("attributes") or {}
            else:  # committed after the last consolidation
                if protein_id not in self:
                    raise StoreError(f"{self.url}: no protein {protein_id!r} in the store")
                attrs = {PROTEIN_DOC: self._read_doc(protein_id)}
            self._docs[protein_id] = attrs[PROTEIN_DOC]
        return self._docs[protein_id]

    def _read_doc(self, protein_id: str) -> dict:
        with quiet_zarr():
            group = zarr.open_group(self.url, path=protein_path(protein_id), mode="r",
                                    storage_options=self.storage_options)
        return group.attrs[PROTEIN_DOC]

    def protein_group(self, protein_id: str) -> zarr.Group:
        """The protein's Zarr group, read-only. Built from the root's consolidated metadata
        when the protein is in it (no I/O), else opened (one read of its own)."""
        path = protein_path(check_protein_id(protein_id))
        nodes = self._protein_nodes().get(protein_id)
        with quiet_zarr():
            if nodes is None:  # committed after the last consolidation
                return zarr.open_group(self.url, path=path, mode="r",
                                       storage_options=self.storage_options)
            meta = dict(nodes[""], consolidated_metadata=inline_consolidated(
                {name: m for name, m in nodes.items() if name}))
            return zarr.Group(zarr.AsyncGroup(GroupMetadata.from_dict(meta),
                                              StorePath(self._zarr_store, path)))

    def _protein_nodes(self) -> dict[str, dict[str, dict]]:
        """protein id -> {"": group metadata, array name: its metadata} (JSON), from the
        consolidated metadata; indexed once, at first use."""
        if self._nodes is None:
            self._nodes = {}
            prefix = PROTEINS + "/"
            for key, meta in self._consolidated.items():
                if key.startswith(prefix):
                    pid, _, name = key[len(prefix):].partition("/")
                    self._nodes.setdefault(pid, {})[name] = meta
            self._nodes = {pid: nodes for pid, nodes in self._nodes.items() if "" in nodes}
        return self._nodes

    @functools.cached_property
    def _zarr_store(self) -> zarr.abc.store.Store:
        if self.local:
            return zarr.storage.LocalStore(self.root, read_only=True)
        return zarr.storage.FsspecStore.from_url(self.url, storage_options=self.storage_options,
                                                 read_only=True)

    def protein(self, protein_id: str, chunks: str | None = "auto") -> xr.Dataset:
        """Lazy ``xr.Dataset`` of one protein.

        Dims ``(frame, atom, xyz)``; data ``R`` [Å] and ``F`` [kcal/mol/Å] float32; per-atom
        coordinates ``resname species resid chain``; per-frame ``temperature replica
        source_frame``; ``attrs["protstore_protein"]`` is the protein document. The group is the
        one ``xr.open_zarr(store, group="proteins/<id>")`` opens; here the small coordinates are
        read at once, and R and F decode whole chunks with
        :class:`~protstore.store.chunks.ChunkReader` (the direct chunk path),
        several at a time on the codec pool.

        ``chunks``: as in ``xr.open_zarr``: ``"auto"`` makes R and F dask arrays (one task per
        up to 128 MiB); ``None`` makes them xarray's lazily indexed arrays, read on first
        access without dask, which is the faster way to load a whole protein into memory
        (``store.protein(pid, chunks=None).load()``: no task graph and no copy of the result).
        """
        if chunks not in ("auto", None):
            raise StoreError(f"chunks must be 'auto' (dask) or None (no dask), not {chunks!r}")
        if protein_id not in self:
            raise StoreError(f"{self.url}: no protein {protein_id!r} in the store")
        group = self.protein_group(protein_id)
        readers = self.protein_readers(protein_id, group)
        n_atoms, zarr_chunk = readers["R"].array.shape[1], readers["R"].chunk

        def lazy(name: str):
            if chunks is None:
                return LazilyIndexedArray(FramesBackendArray(LazyFrames(readers[name])))
            # one dask task per array up to 128 MiB: the task decodes its chunks in parallel
            frames = zarr_chunk * max(1, DASK_CHUNK_BYTES // (zarr_chunk * n_atoms * 12))
            token = dask.base.tokenize(self.url, protein_id, group.attrs.get(PROTEIN_DOC))
            return da.from_array(LazyFrames(readers[name]), chunks=(frames, -1, -1),
                                 name=f"protstore-{name}-{token}", lock=False, asarray=False)

        data = {name: ((FRAME, ATOM, XYZ), lazy(name),
                       {k: v for k, v in readers[name].array.attrs.items() if k != "coordinates"})
                for name in ("R", "F")}
        coords = {name: (readers[name].array.metadata.dimension_names[0],
                         readers[name].read_all(), dict(readers[name].array.attrs))
                  for name in (*PER_ATOM, *PER_FRAME, XYZ)}
        return xr.Dataset(data, coords=coords, attrs=dict(group.attrs))

    def protein_readers(self, protein_id: str,
                        group: zarr.Group | None = None) -> dict[str, ChunkReader]:
        """A :class:`~protstore.store.chunks.ChunkReader` per array of the protein (R, F and
        every coordinate), from one metadata call; no data is read until asked for."""
        group = group if group is not None else self.protein_group(protein_id)
        return {name: ChunkReader(array) for name, array in group.arrays()}

    def summary(self) -> pd.DataFrame:
        """One row per protein from metadata only: atoms, frames, temperatures, excluded, bytes."""
        rows = []
        for pid in self.proteins:
            d = self.protein_doc(pid)
            rows.append({
                "protein": pid, "n_atoms": d["n_atoms"], "n_frames": d["n_frames"],
                "n_chains": d["n_chains"],
                "temperatures": " ".join(f"{t:g}" for t in d["temperatures"] if t is not None),
                "n_excluded": len(d["excluded_frames"]), "nbytes_raw": d["nbytes_raw"],
                "nbytes_stored": d["nbytes_stored"],
            })
        columns = ["protein", "n_atoms", "n_frames", "n_chains", "temperatures", "n_excluded",
                   "nbytes_raw", "nbytes_stored"]
        return pd.DataFrame(rows, columns=columns).set_index("protein")

    def lengths(self) -> pd.Series:
        """Beads per protein (metadata only), indexed by protein id."""
        return self.summary()["n_atoms"]

    def plans(self) -> list[str]:
        """Names of the bucket plans stored in the store."""
        return self.list_attrs_groups(PLANS)

    def plan(self, name: str):
        """The stored :class:`~protstore.batching.BucketPlan` ``name``."""
        from ..batching import load_plan

        return load_plan(self, name)

    def bucket(self, plan, k: int, split: str = "all") -> xr.Dataset:
        """Lazy padded view of bucket ``k`` of ``plan`` (a plan or its name); see bucket_view."""
        from ..batching import bucket_view

        return bucket_view(self, self.plan(plan) if isinstance(plan, str) else plan, k, split)

    # ----------------------------------------------------------------------------- writing
    def _require_writable(self) -> Path:
        if self.mode == "r":
            raise StoreError(f"{self.url}: store opened read-only (mode='r')")
        if not self.local:
            raise StoreError(f"{self.url}: writing needs a local directory store")
        return self.root

    @contextlib.contextmanager
    def lock(self):
        """Exclusive inter-process lock for commits into this store."""
        with store_lock(self._require_writable()):
            yield

    def writer(self, protein_id: str, *, max_frames: int, resname, species, resid,
               chain) -> ProteinWriter:
        """A :class:`ProteinWriter` (at most ``max_frames`` frames) into a fresh private
        staging directory."""
        root = self._require_writable()
        check_protein_id(protein_id)
        staging = root / STAGING
        staging.mkdir(exist_ok=True)
        path = staging / staging_name(WRITE, protein_id)
        return ProteinWriter(path, max_frames=max_frames, resname=resname, species=species,
                             resid=resid, chain=chain, encoding=self.encoding)

    def commit(self, writer: ProteinWriter, *, overwrite: bool = False) -> str:
        """Move a finished staging group into ``proteins/`` atomically.

        Returns 'written', 'replaced', or 'skipped' when another process committed the same
        source meanwhile.
        """
        root = self._require_writable()
        pid = writer.doc["protein_id"]
        fsync_tree(writer.path, skip=writer.synced)
        dest = root / protein_path(pid)
        with self.lock():
            missing = writer.missing_files()
            if missing:
                writer.abort()
                raise StoreError(f"{self.url}: protein {pid!r}: {len(missing)} file(s) of its "
                                 f"staging group vanished before the commit (e.g. {missing[0]}); "
                                 f"nothing was committed, ingest it again")
            if not dest.exists():
                os.rename(writer.path, dest)
                status = "written"
            elif _checksums(self._read_doc(pid)) == _checksums(writer.doc) and not overwrite:
                writer.abort()  # a concurrent ingest committed the same source first
                status = "skipped"
            elif not overwrite:
                raise ProteinExistsError(f"protein {pid!r} is already in {self.url} from "
                                         f"another source; pass --overwrite to replace it")
            else:
                # Two renames; if interrupted between them, recover_staging() puts it back.
                old = root / STAGING / staging_name(REPLACED, pid)
                os.rename(dest, old)
                os.rename(writer.path, dest)
                shutil.rmtree(old, ignore_errors=True)
                status = "replaced"
        self._docs.pop(pid, None)
        return status

    def consolidate(self, changed: Iterable[str] | None = None) -> None:
        """Bring the root's consolidated metadata up to date (one read lists the whole store).

        ``changed``: group paths (``"proteins/<id>"``, ``"plans/<name>"``) rewritten since the
        last consolidation; groups added or removed are found on their own. Only those groups
        are read (:func:`~protstore.store.consolidate.merge_consolidated`). None: a full
        consolidation, which walks the whole store.
        """
        root = self._require_writable()
        with self.lock(), quiet_zarr():
            if changed is None or not merge_consolidated(root, changed):
                zarr.consolidate_metadata(str(root))
        self._load()

    def recover_staging(self) -> list[str]:
        """Clean ``.staging/`` of dead writers' leftovers; restore half-replaced proteins.

        Only entries whose writer is known to be gone are touched: a write of a live process,
        or of another host (:mod:`~protstore.store.staging`), is left alone. Returns what was
        done, one line each.
        """
        root = self._require_writable()
        staging = root / STAGING
        done = []
        if not staging.is_dir():
            return done
        with self.lock():
            for entry in staging.iterdir():
                info = parse_staging(entry.name)
                if info is None or not info.abandoned():
                    continue
                if info.kind == REPLACED:
                    dest = root / protein_path(info.protein_id)
                    if not dest.exists():
                        os.rename(entry, dest)
                        done.append(f"restored protein {info.protein_id!r} from an "
                                    f"interrupted replace")
                        continue
                shutil.rmtree(entry, ignore_errors=True)
                done.append(f"removed unfinished staging group {entry.name}")
        return done

    # ----------------------------------------------------------------------------- plans
    def write_attrs_group(self, path: str, key: str, doc: dict, *, overwrite: bool) -> None:
        """Write (or replace) a metadata-only group ``path`` with ``attrs[key] = doc``."""
        self._require_writable()
        with self.lock(), quiet_zarr():
            group = zarr.open_group(self.url, mode="r+", zarr_format=3)
            parent_name, _, name = path.rpartition("/")
            parent = group.require_group(parent_name) if parent_name else group
            if name in parent and not overwrite:
                raise StoreError(f"{self.url}: {path} exists; pass --overwrite to replace it")
            child = parent.create_group(name, overwrite=True)
            child.attrs[key] = json.loads(json.dumps(doc))
            if parent_name not in CONTAINERS or not merge_consolidated(self.root, [path]):
                zarr.consolidate_metadata(str(self.root))
        self._load()

    def read_attrs_group(self, path: str, key: str) -> dict:
        attrs = (self._consolidated.get(path) or {}).get("attributes") or {}
        if key in attrs:
            return attrs[key]
        with quiet_zarr():
            try:
                group = zarr.open_group(self.url, path=path, mode="r",
                                        storage_options=self.storage_options)
            except (FileNotFoundError, zarr.errors.GroupNotFoundError):
                raise StoreError(f"{self.url}: no {path}") from None
        if key not in group.attrs:
            raise StoreError(f"{self.url}: {path} has no {key!r} document")
        return group.attrs[key]

    def list_attrs_groups(self, parent: str) -> list[str]:
        if self.local:
            base = self.root / parent
            return sorted(p.name for p in base.iterdir() if (p / "zarr.json").is_file()) \
                if base.is_dir() else []
        with quiet_zarr():
            return sorted(self._group[parent].group_keys()) if parent in self._group else []


def _checksums(doc: dict) -> set[str]:
    return {s["checksum"] for s in doc["sources"]}


def store_document(encoding: Encoding) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "vocabulary": list(VOCABULARY),
        "pad_id": PAD_ID,
        "unk_id": UNK_ID,
        "units": dict(UNITS),
        "encoding": encoding.as_dict(),
        "created_by": f"protstore {__version__}",
    }


def create_store(path: str | os.PathLike, encoding: Encoding | None = None) -> None:
    """Create an empty store at a local ``path`` (an existing protstore is left untouched).

    Safe against concurrent creators (they take the store's lock) and against a kill at any
    point: the skeleton is made in a hidden directory and the root ``zarr.json``, which makes
    the directory a store, is renamed into place last; a later call finishes an interrupted
    creation."""
    root = Path(path)
    if (root / "zarr.json").exists():
        return
    if root.exists() and not root.is_dir():
        raise StoreError(f"{root}: exists and is not a directory")
    doc = store_document(encoding or Encoding())
    check_document(doc, "store", str(root))
    if root.exists():
        _unfinished_skeleton(root)  # refuse a foreign directory before touching it
    root.mkdir(parents=True, exist_ok=True)
    with store_lock(root):
        if (root / "zarr.json").exists():  # another process made it meanwhile
            return
        for entry in _unfinished_skeleton(root):
            shutil.rmtree(entry, ignore_errors=True)
        tmp = root / f"{CREATING}{uuid.uuid4().hex[:8]}"
        try:
            with quiet_zarr():
                group = zarr.open_group(tmp, mode="w-", zarr_format=3,
                                        attributes={STORE_DOC: doc})
                group.create_group(PROTEINS)
                group.create_group(PLANS)
                zarr.consolidate_metadata(str(tmp))
            for name in (PROTEINS, PLANS):
                os.rename(tmp / name, root / name)
            fsync_tree(root / PROTEINS)
            fsync_tree(root / PLANS)
            os.rename(tmp / "zarr.json", root / "zarr.json")  # from here on, a store
            fsync_paths([str(root / "zarr.json"), str(root)])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _unfinished_skeleton(root: Path) -> list[Path]:
    """What an interrupted :func:`create_store` left in ``root`` (no root zarr.json), to be
    removed: hidden creation directories and ``proteins/``, ``plans/`` holding only their own
    ``zarr.json``. Anything else means the directory is not a protstore: an error, raised
    before anything is removed."""
    leftovers = []
    for entry in root.iterdir():
        if entry.name.startswith(CREATING) or (
                entry.name in (PROTEINS, PLANS) and entry.is_dir()
                and {p.name for p in entry.iterdir()} <= {"zarr.json"}):
            leftovers.append(entry)
        elif entry.name not in (LOCK, STAGING):
            raise StoreError(f"{root}: exists, is not empty and is not a protstore "
                             f"(it holds {entry.name!r})")
    return leftovers


def open_store(path: str | os.PathLike, mode: str = "r", *, encoding: Encoding | None = None,
               storage_options: dict | None = None) -> Store:
    """Open a protstore.

    Parameters
    ----------
    path : local directory, or any URL zarr/fsspec can open (read-only).
    mode : ``"r"`` read-only; ``"r+"`` read/write, the store must exist; ``"a"`` read/write,
        creating an empty store if missing.
    encoding : chunking/codecs for a store created here (ignored for an existing store).
    """
    if mode not in ("r", "r+", "a"):
        raise StoreError(f"mode must be 'r', 'r+' or 'a', not {mode!r}")
    url = os.fspath(path)
    if mode == "a":
        if not _is_local(url):
            raise StoreError(f"{url}: writing needs a local directory store")
        create_store(url.removeprefix("file://"), encoding)
    return Store(url, mode, storage_options)


