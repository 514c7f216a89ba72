"""The Store's read side and :func:`open_store`: open, list, summarise, read proteins as lazy
xarray Datasets.

A store is a local directory or an fsspec URL (``s3://...``). Its proteins are listed in the
catalog (:mod:`~protstore.store.catalog`), read once when the store is opened; each protein
group carries its own consolidated metadata, so reading one protein reads that group's
``zarr.json`` and its chunks, nothing that grows with the store. The write side (commits,
repairs) is :mod:`~protstore.store.commits`; creation and format migration
:mod:`~protstore.store.create`.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from pathlib import Path

import dask.array as da
import dask.base
import pandas as pd
import xarray as xr
import zarr
from xarray.core.indexing import LazilyIndexedArray

from ..errors import CatalogWarning, ProtstoreError, StoreError
from .catalog import catalog_at, read_catalog, resolve_version, version_of
from .chunks import ArrayMeta, ChunkReader
from .lazy import FramesBackendArray, LazyFrames
from .commits import Commits
from .create import Migration, create_store
from .digest import metadata_mismatch
from .labels import without_label_attributes
from .layout import (ATOM, FRAME, OBSERVABLES, PER_ATOM, PER_FRAME, PLANS, PROTEIN_DOC,
                     PROTEINS, STORE_DOC, XYZ, Encoding, check_protein_id, generation_of,
                     generation_path, protein_path)
from ..location import Location
from .quiet import quiet_zarr

DASK_CHUNK_BYTES = 128 << 20  # dask's own default chunk size


def dataset_attrs(doc: dict) -> dict:
    """A protein Dataset's attributes: scalars and flat lists only, so that ``ds.to_netcdf()``
    works: ``protein_id``, ``n_atoms``, ``n_frames``, ``n_chains``, ``temperatures`` (K, NaN
    where unknown) and the whole protein document as JSON text under ``protstore_protein``."""
    return {"protein_id": doc["protein_id"], "n_atoms": doc["n_atoms"],
            "n_frames": doc["n_frames"], "n_chains": doc["n_chains"],
            "temperatures": [float("nan") if t is None else float(t)
                             for t in doc["temperatures"]],
            PROTEIN_DOC: json.dumps(doc, sort_keys=True, separators=(",", ":"))}


class Store(Commits, Migration):
    """A protstore: proteins as Zarr v3 groups, read lazily as xarray Datasets.

    Use :func:`open_store` to get one. ``url`` is a local directory or any fsspec URL;
    ``storage_options`` go to fsspec (credentials beyond the environment's, endpoints...);
    ``version``: a store version to read the store as it was then (read-only; None: now).
    """

    def __init__(self, url: str | os.PathLike | Location, mode: str,
                 storage_options: dict | None = None, version: str | None = None):
        self.location = url if isinstance(url, Location) else Location(url, storage_options)
        self.url = self.location.url
        self.mode = mode
        self.storage_options = self.location.storage_options or None
        self.local = self.location.local
        self.root = Path(self.location.path) if self.local else None
        self.notes: list[str] = []  # what opening did that the user should hear of
        self._at: str | None = None  # the store version read (None: the newest)
        self._load()
        if version is not None:
            if mode != "r":
                raise StoreError(f"{self.url}: an older store version is read-only: open it "
                                 f"with mode 'r' (not {mode!r})")
            if self.format_version < 2:
                raise StoreError(f"{self.url}: a format-1 store has no store versions")
            self._at = resolve_version(self.location, str(version))

    # ----------------------------------------------------------------------------- reading
    def _load(self) -> None:
        """Read the root document; the catalog (or, for a format-1 store, the root's
        consolidated metadata) is read when first needed: a few requests whatever the number
        of proteins, and none for a writer that only commits."""
        try:
            root = self.location.read_json("zarr.json")
        except FileNotFoundError:
            raise StoreError(f"{self.url}: not a protstore (no Zarr v3 group)") from None
        except ValueError as exc:
            raise StoreError(f"{self.url}: not a protstore (zarr.json: {exc})") from None
        except OSError as exc:
            raise StoreError(f"{self.url}: cannot read the store: {exc}") from None
        if root.get("zarr_format") != 3 or root.get("node_type") != "group":
            raise StoreError(f"{self.url}: not a protstore (no Zarr v3 group)")
        doc = (root.get("attributes") or {}).get(STORE_DOC)
        if doc is None:
            raise StoreError(f"{self.url}: a Zarr group but not a protstore "
                             f"(root attrs lack {STORE_DOC!r})")
        self.doc = doc
        self._root_json = root
        self._catalog_entries: dict[str, dict] | None = None
        # damaged catalog segment -> what is wrong (:func:`~protstore.store.catalog.read_catalog`)
        self.catalog_damage: dict[str, str] = {}
        self._segments: list[str] | None = None  # the catalog's segment names, once listed
        self._paths: dict[str, str] = {}  # protein id -> its group's path (an older version)

    @property
    def _entries(self) -> dict[str, dict]:
        """protein id -> protein document, from the catalog (read at first use)."""
        if self._catalog_entries is None:
            if self._at is not None:
                self._catalog_entries, self._segments = catalog_at(self.location, self._at), []
            elif self.format_version >= 2:
                catalog = read_catalog(self.location, self._group_documents)
                self._catalog_entries, self._segments = catalog.entries, catalog.names
                self.catalog_damage = catalog.damaged
            else:
                self._catalog_entries, self._segments = self._entries_v1(self._root_json), []
        return self._catalog_entries

    def _entries_v1(self, root: dict) -> dict[str, dict]:
        """A format-1 store's proteins: its ``proteins/`` groups, their documents from the
        root's consolidated metadata (or their own ``zarr.json`` when committed after it)."""
        consolidated = (root.get("consolidated_metadata") or {}).get("metadata") or {}
        entries = {}
        for pid in self._protein_groups():
            attrs = (consolidated.get(protein_path(pid)) or {}).get("attributes")
            if attrs is None:
                attrs = self.location.read_json(f"{protein_path(pid)}/zarr.json")["attributes"]
            entries[pid] = attrs[PROTEIN_DOC]
        return dict(sorted(entries.items()))

    def _group_documents(self, protein_ids: list[str] | None = None) -> dict[str, dict]:
        """protein id -> the document in its group's own ``zarr.json`` (one read each), for
        ``protein_ids`` or (None) every group under ``proteins/``; a group without one, or
        whose ``zarr.json`` does not decode, is left out (``validate`` reports it)."""
        docs = {}
        for pid in self._protein_groups() if protein_ids is None else protein_ids:
            try:
                doc = self.committed_doc(pid)
            except (ProtstoreError, ValueError):
                continue
            if isinstance(doc, dict):
                docs[pid] = doc
        return docs

    def _protein_groups(self) -> list[str]:
        """Ids of the groups under ``proteins/`` (a listing: only for repairs and format 1)."""
        if self.local:
            base = self.root / PROTEINS
            return sorted(p.name for p in base.iterdir() if (p / "zarr.json").is_file()) \
                if base.is_dir() else []
        return [n for n in self.location.listdir(PROTEINS) if n != "zarr.json"
                and self.location.exists(f"{protein_path(n)}/zarr.json")]

    def refresh(self) -> None:
        """Read the catalog again (proteins committed by others since this store was opened)."""
        self._load()

    @property
    def version(self) -> str | None:
        """The store version this store was opened at: the id of the newest commit it sees
        (``protstore log`` lists them; ``open_store(url, version=...)`` reads one again); None
        for a store without commits or of format 1."""
        if self._at is not None:
            return self._at
        self._entries
        return version_of(self._segments[-1]) if self._segments else None

    @property
    def read_at(self) -> str | None:
        """The version asked for when the store was opened (None: the newest, as it goes on)."""
        return self._at

    def group_path(self, protein_id: str) -> str:
        """The path of the protein's group in the store: ``proteins/<id>``, or, read at an
        older version whose data an overwrite set aside, ``generations/<id>@<generation>``."""
        path = protein_path(check_protein_id(protein_id))
        doc = self._entries.get(protein_id) if self._at is not None else None
        if doc is None:
            return path
        if protein_id not in self._paths:
            aside = generation_path(protein_id, generation_of(doc))
            self._paths[protein_id] = aside if self.location.exists(f"{aside}/zarr.json") \
                else path
        return self._paths[protein_id]

    @property
    def format_version(self) -> int:
        return int(self.doc.get("format_version", 1))

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return tuple(self.doc["vocabulary"])

    @property
    def encoding(self) -> Encoding:
        # stores before 0.3 had no block size (0: automatic), before 0.5 no chunk checksums
        return Encoding(**{"block_bytes": 0, "checksum": False, **self.doc["encoding"]})

    @property
    def proteins(self) -> list[str]:
        """Sorted ids of the proteins in the store (complete ones only), from the catalog."""
        return sorted(self._entries)

    def __contains__(self, protein_id: str) -> bool:
        """From the catalog read when the store was opened (:meth:`refresh` reads it again)."""
        return isinstance(protein_id, str) and protein_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        at = f" version={self._at!r}" if self._at is not None else ""
        return f"<protstore.Store {self.url!r} mode={self.mode!r}{at} proteins={len(self)}>"

    def protein_doc(self, protein_id: str) -> dict:
        """The protein document (from the catalog; reads nothing)."""
        try:
            return self._entries[protein_id]
        except KeyError:
            check_protein_id(protein_id)
            raise StoreError(f"{self.url}: no protein {protein_id!r} in the store") from None

    def committed_doc(self, protein_id: str) -> dict | None:
        """The document in the protein group's own ``zarr.json`` (read now), or None when the
        group is not there: what a writer checks, whatever the catalog said at opening."""
        try:
            meta = self.location.read_json(f"{protein_path(check_protein_id(protein_id))}"
                                           f"/zarr.json")
        except FileNotFoundError:
            return None
        return (meta.get("attributes") or {}).get(PROTEIN_DOC)

    def protein_group(self, protein_id: str) -> zarr.Group:
        """The protein's Zarr group, read-only: one read of its own ``zarr.json``, which lists
        its arrays (its consolidated metadata)."""
        path = self.group_path(protein_id)
        with quiet_zarr():
            return zarr.open_group(self._zarr_store, path=path, mode="r", zarr_format=3)

    @functools.cached_property
    def _zarr_store(self) -> zarr.abc.store.Store:
        return self.location.zarr_store(read_only=True)

    def protein(self, protein_id: str, chunks: str | None = "auto") -> xr.Dataset:
        """Lazy ``xr.Dataset`` of one protein.

        Dims ``(frame, atom, xyz)``; data ``R`` [Å] and ``F`` [kcal/mol/Å] float32; per-atom
        coordinates ``resname species resid chain``; per-frame ``temperature replica
        source_frame``; the per-frame observables ingest stored (data ``rg`` [Å], and ``helix
        sheet coil`` from a source's DSSP; :data:`~protstore.store.layout.OBSERVABLES`); ``attrs`` are netCDF-safe (:func:`dataset_attrs`: the protein document as
        JSON text, ``ds.prot.doc`` parses it, and its sizes as scalars). The group is the
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
        readers = self.protein_readers(protein_id)
        doc = self.protein_doc(protein_id)
        n_atoms, zarr_chunk = readers["R"].meta.shape[1], readers["R"].chunk

        def lazy(name: str):
            if chunks is None:
                return LazilyIndexedArray(FramesBackendArray(LazyFrames(readers[name])))
            # one dask task per array up to 128 MiB: the task decodes its chunks in parallel
            frames = zarr_chunk * max(1, DASK_CHUNK_BYTES // (zarr_chunk * n_atoms * 12))
            token = dask.base.tokenize(self.url, protein_id, doc)
            return da.from_array(LazyFrames(readers[name]), chunks=(frames, -1, -1),
                                 name=f"protstore-{name}-{token}", lock=False, asarray=False)

        data = {name: ((FRAME, ATOM, XYZ), lazy(name),
                       {k: v for k, v in readers[name].meta.attrs.items() if k != "coordinates"})
                for name in ("R", "F")}
        # label codes (format 3) come back as their labels, without the attributes saying so
        coords = {name: (readers[name].meta.dimension_names[0],
                         readers[name].read_all(),
                         without_label_attributes(readers[name].meta.attrs))
                  for name in (*PER_ATOM, *PER_FRAME, XYZ)}
        data.update({name: ((FRAME,), readers[name].read_all(), readers[name].meta.attrs)
                     for name in OBSERVABLES if name in readers})
        return xr.Dataset(data, coords=coords, attrs=dataset_attrs(doc))

    def protein_readers(self, protein_id: str,
                        group: zarr.Group | None = None) -> dict[str, ChunkReader]:
        """A :class:`~protstore.store.chunks.ChunkReader` per array of the protein (R, F and
        every coordinate), from one metadata read (the group's ``zarr.json``, whose
        consolidated metadata lists its arrays); no data is read until asked for."""
        fs = None if self.local else self.location.fs
        if group is None:
            arrays = self._arrays_of(protein_id)
            if arrays is not None:
                return {name: ChunkReader(meta, fs=fs) for name, meta in arrays.items()}
            group = self.protein_group(protein_id)
        return {name: ChunkReader(array, fs=fs) for name, array in group.arrays()}

    def _arrays_of(self, protein_id: str) -> dict[str, ArrayMeta] | None:
        """name -> :class:`~protstore.store.chunks.ArrayMeta` of the protein's arrays, from its
        group's consolidated metadata without another read; None when the group lists no
        arrays of its own (then zarr opens it)."""
        path = self.group_path(protein_id)
        try:
            meta = self.location.read_json(f"{path}/zarr.json")
        except FileNotFoundError:
            raise StoreError(f"{self.url}: no protein {protein_id!r} in the store") from None
        children = (meta.get("consolidated_metadata") or {}).get("metadata")
        own = (meta.get("attributes") or {}).get(PROTEIN_DOC)
        entry = self._entries.get(protein_id)
        if self._at is not None and isinstance(own, dict) and isinstance(entry, dict) \
                and generation_of(own) != generation_of(entry):
            raise StoreError(f"{self.url}: protein {protein_id!r} at store version {self._at}: "
                             f"its data then is no longer kept (`protstore gc` removed it, or "
                             f"it was replaced before store versions existed)")
        if isinstance(own, dict) and own != self._entries.get(protein_id, own):
            # a commit killed between its group and its catalog entry: the data is the group's
            warnings.warn(CatalogWarning(
                f"{self.url}/{path}: the catalog's entry differs from the group's own document; "
                f"the group's is used (`protstore validate --repair` rebuilds the catalog)"),
                stacklevel=3)
            self._entries[protein_id] = own
        recorded = (own or {}).get("arrays_metadata") if isinstance(own, dict) else None
        changed = metadata_mismatch(recorded, children if isinstance(children, dict) else {})
        if changed:
            raise StoreError(f"{self.url}/{path}: {changed}; the data would be read as another "
                             f"type or order: ingest the protein again (`protstore validate` "
                             f"lists every such array)")
        if not children or any(m.get("node_type") != "array" for m in children.values()):
            return None
        try:
            return {name: ArrayMeta(m, self._zarr_store, f"{path}/{name}").checked()
                    for name, m in sorted(children.items())}
        except (KeyError, TypeError, ValueError):  # a document it does not know: zarr reads it
            return None

    def summary(self) -> pd.DataFrame:
        """One row per protein from the catalog: atoms, frames, temperatures, excluded, bytes."""
        rows = []
        for pid, d in sorted(self._entries.items()):
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
        """Beads per protein (from the catalog), indexed by protein id."""
        return pd.Series({pid: d["n_atoms"] for pid, d in sorted(self._entries.items())},
                         name="n_atoms", dtype="int64").rename_axis("protein")

    def plans(self) -> list[str]:
        """Names of the bucket plans stored in the store."""
        return self.list_attrs_groups(PLANS)

    def read_attrs_group(self, path: str, key: str) -> dict:
        try:
            meta = self.location.read_json(f"{path}/zarr.json")
        except FileNotFoundError:
            raise StoreError(f"{self.url}: no {path}") from None
        attrs = meta.get("attributes") or {}
        if key not in attrs:
            raise StoreError(f"{self.url}: {path} has no {key!r} document")
        return attrs[key]

    def list_attrs_groups(self, parent: str) -> list[str]:
        if self.local:
            base = self.root / parent
            return sorted(p.name for p in base.iterdir() if (p / "zarr.json").is_file()) \
                if base.is_dir() else []
        return [n for n in self.location.listdir(parent) if n != "zarr.json"]


def open_store(path: str | os.PathLike, mode: str = "r", *, encoding: Encoding | None = None,
               storage_options: dict | None = None, version: str | None = None) -> Store:
    """Open a protstore.

    Parameters
    ----------
    path : local directory, or an fsspec URL (``s3://bucket/store.zarr``, ``memory://x``...).
    mode : ``"r"`` read-only; ``"r+"`` read/write, the store must exist; ``"a"`` read/write,
        creating an empty store if missing. A store of an older format (1: protstore < 0.6,
        2: < 0.7) is migrated when opened for writing (:meth:`Store.migrate`; ``store.notes``
        says so).
    encoding : chunking/codecs for a store created here (ignored for an existing store).
    storage_options : fsspec options of the location (credentials, endpoint...); the
        standard environment (``AWS_ENDPOINT_URL``...) is read in any case.
    version : a store version (:attr:`Store.version`; ``protstore log`` lists them, its full
        id or the random part after its ``-``): the store as it was after that commit, its
        proteins' data included, read-only (``mode="r"``). None: as it is now.
    """
    if mode not in ("r", "r+", "a"):
        raise StoreError(f"mode must be 'r', 'r+' or 'a', not {mode!r}")
    loc = Location(path, storage_options)
    if mode == "a":
        try:
            create_store(loc, encoding)
        except OSError as exc:
            raise StoreError(f"{loc.url}: cannot create the store: "
                             f"{exc.strerror or exc}") from None
    store = Store(loc, mode, version=version)
    if mode != "r":
        note = store.migrate()
        if note:
            store.notes.extend(note.splitlines())
    return store
