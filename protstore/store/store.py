"""The Store: open, list, summarise, read proteins as lazy xarray Datasets, commit new ones.

A store is a local directory or an fsspec URL (``s3://...``). Its proteins are listed in the
catalog (:mod:`~protstore.store.catalog`), read once when the store is opened; each protein
group carries its own consolidated metadata, so reading one protein reads that group's
``zarr.json`` and its chunks, nothing that grows with the store.

Commits keep one promise on both kinds of location: a protein appears whole or not at all, and
an interrupted write leaves the store valid.

- Local directory (also a shared POSIX file system): the protein is written into a private
  staging directory and renamed into ``proteins/`` under the store's file lock; then its
  catalog segment is added.
- Object storage: the writer first claims the protein (:mod:`~protstore.store.claims`), writes
  it into a private staging prefix, then copies it object by object into ``proteins/<id>/``
  (server-side), the group's ``zarr.json`` last, so that a reader, protstore or plain zarr,
  sees nothing until that object is there; then the catalog segment; then it releases the claim.
"""

from __future__ import annotations

import contextlib
import json
import functools
import os
import shutil
import uuid
import warnings
from pathlib import Path

import dask.array as da
import dask.base
import pandas as pd
import xarray as xr
import zarr
from xarray.core.indexing import LazilyIndexedArray

from .._version import __version__
from ..errors import CatalogWarning, ClaimError, ProteinExistsError, ProtstoreError, StoreError
from ..vocab import PAD_ID, UNK_ID, VOCABULARY
from .catalog import CATALOG, append_segment, read_catalog, replace_segments, segment_names
from .chunks import ArraySpec, ChunkReader, FramesBackendArray, LazyFrames
from .claims import claim, live_claim
from .digest import metadata_mismatch
from ..units import UNITS
from .labels import without_label_attributes
from .layout import (ATOM, CREATING, FORMAT_VERSION, FRAME, LOCK, OBSERVABLES, PER_ATOM,
                     PER_FRAME, PLANS, PROTEIN_DOC, PROTEINS, STAGING, STORE_DOC, XYZ, Encoding,
                     check_protein_id, protein_path)
from ..location import Location, fsync_paths, fsync_tree
from .lock import store_lock
from .quiet import quiet_zarr
from ..schemas import check_document
from .staging import REPLACED, WRITE, parse_staging, staging_name
from .writer import ProteinWriter

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


def group_document(attributes: dict | None = None) -> dict:
    """The Zarr v3 metadata document of a group."""
    return {"zarr_format": 3, "node_type": "group", "attributes": attributes or {}}


class Store:
    """A protstore: proteins as Zarr v3 groups, read lazily as xarray Datasets.

    Use :func:`open_store` to get one. ``url`` is a local directory or any fsspec URL;
    ``storage_options`` go to fsspec (credentials beyond the environment's, endpoints...).
    """

    def __init__(self, url: str | os.PathLike | Location, mode: str,
                 storage_options: dict | None = None):
        self.location = url if isinstance(url, Location) else Location(url, storage_options)
        self.url = self.location.url
        self.mode = mode
        self.storage_options = self.location.storage_options or None
        self.local = self.location.local
        self.root = Path(self.location.path) if self.local else None
        self.notes: list[str] = []  # what opening did that the user should hear of
        self._load()

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

    @property
    def _entries(self) -> dict[str, dict]:
        """protein id -> protein document, from the catalog (read at first use)."""
        if self._catalog_entries is None:
            if self.format_version >= 2:
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
        return f"<protstore.Store {self.url!r} mode={self.mode!r} proteins={len(self)}>"

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
        path = protein_path(check_protein_id(protein_id))
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
        n_atoms, zarr_chunk = readers["R"].array.shape[1], readers["R"].chunk

        def lazy(name: str):
            if chunks is None:
                return LazilyIndexedArray(FramesBackendArray(LazyFrames(readers[name])))
            # one dask task per array up to 128 MiB: the task decodes its chunks in parallel
            frames = zarr_chunk * max(1, DASK_CHUNK_BYTES // (zarr_chunk * n_atoms * 12))
            token = dask.base.tokenize(self.url, protein_id, doc)
            return da.from_array(LazyFrames(readers[name]), chunks=(frames, -1, -1),
                                 name=f"protstore-{name}-{token}", lock=False, asarray=False)

        data = {name: ((FRAME, ATOM, XYZ), lazy(name),
                       {k: v for k, v in readers[name].array.attrs.items() if k != "coordinates"})
                for name in ("R", "F")}
        # label codes (format 3) come back as their labels, without the attributes saying so
        coords = {name: (readers[name].array.metadata.dimension_names[0],
                         readers[name].read_all(),
                         without_label_attributes(dict(readers[name].array.attrs)))
                  for name in (*PER_ATOM, *PER_FRAME, XYZ)}
        data.update({name: ((FRAME,), readers[name].read_all(), dict(readers[name].array.attrs))
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
                return {name: ChunkReader(array, fs=fs, metadata=meta)
                        for name, (array, meta) in arrays.items()}
            group = self.protein_group(protein_id)
        return {name: ChunkReader(array, fs=fs) for name, array in group.arrays()}

    def _arrays_of(self, protein_id: str) -> dict[str, tuple[ArraySpec, dict]] | None:
        """name -> (array spec, its metadata document) of the protein's arrays, from its
        group's consolidated metadata without another read; None when the group lists no
        arrays of its own (then zarr opens it)."""
        path = protein_path(check_protein_id(protein_id))
        try:
            meta = self.location.read_json(f"{path}/zarr.json")
        except FileNotFoundError:
            raise StoreError(f"{self.url}: no protein {protein_id!r} in the store") from None
        children = (meta.get("consolidated_metadata") or {}).get("metadata")
        own = (meta.get("attributes") or {}).get(PROTEIN_DOC)
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
            return {name: (ArraySpec(m, self._zarr_store, f"{path}/{name}"), m)
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

    # ----------------------------------------------------------------------------- writing
    def _require_writable(self) -> Location:
        if self.mode == "r":
            raise StoreError(f"{self.url}: store opened read-only (mode='r')")
        if self.format_version < FORMAT_VERSION:
            raise StoreError(f"{self.url}: a format-{self.format_version} store; open it with "
                             f"mode 'r+' or 'a' to migrate it first")
        return self.location

    @contextlib.contextmanager
    def lock(self):
        """Exclusive inter-process lock of a local store (object storage has claims instead:
        entering this does nothing there)."""
        self._require_writable()
        if not self.local:
            yield
            return
        with store_lock(self.root):
            yield

    def writer(self, protein_id: str, *, max_frames: int, resname, species, resid,
               chain, take_over: bool = False, wait_s: float = 0.0,
               observables: tuple[str, ...] = ()) -> ProteinWriter:
        """A :class:`ProteinWriter` (at most ``max_frames`` frames, storing ``observables``)
        into a fresh private staging group; on object storage, after claiming the protein
        (``take_over`` and ``wait_s``: see :func:`~protstore.store.claims.claim`)."""
        loc = self._require_writable()
        check_protein_id(protein_id)
        held = None if self.local else claim(loc, protein_id, take_over=take_over,
                                             wait_s=wait_s)
        name = staging_name(WRITE, protein_id) if held is None else \
            f"{WRITE}@{held.write_id}@{protein_id}"
        try:
            return ProteinWriter(loc / f"{STAGING}/{name}", max_frames=max_frames,
                                 resname=resname, species=species, resid=resid, chain=chain,
                                 encoding=self.encoding, observables=observables, claim=held)
        except BaseException:
            if held is not None:
                held.release()
            raise

    def commit(self, writer: ProteinWriter, *, overwrite: bool = False) -> str:
        """Move a finished staging group into ``proteins/`` and list it in the catalog.

        Returns 'written', 'replaced', or 'skipped' when another writer committed the same
        source meanwhile.
        """
        self._require_writable()
        pid = writer.doc["protein_id"]
        if self.local:
            status = self._commit_local(writer, pid, overwrite)
        else:
            try:
                status = self._commit_remote(writer, pid, overwrite)
            finally:
                writer.claim.release()
        if status != "skipped" and self._catalog_entries is not None:
            self._catalog_entries[pid] = writer.doc
        return status

    def _commit_local(self, writer: ProteinWriter, pid: str, overwrite: bool) -> str:
        root = self.root
        fsync_tree(writer.root, skip=writer.synced)
        dest = root / protein_path(pid)
        with self.lock():
            missing = writer.missing_files()
            if missing:
                writer.abort()
                raise StoreError(f"{self.url}: protein {pid!r}: {len(missing)} file(s) of its "
                                 f"staging group vanished before the commit (e.g. {missing[0]}); "
                                 f"nothing was committed, ingest it again")
            status = self._existing(writer, pid, overwrite)
            if status == "skipped":
                writer.abort()  # a concurrent ingest committed the same source first
                self._catalog({pid: self.committed_doc(pid)}, only_missing=True)
                return status
            if status == "written":
                os.rename(writer.root, dest)
            else:
                # Two renames; if interrupted between them, recover_staging() puts it back.
                old = root / STAGING / staging_name(REPLACED, pid)
                os.rename(dest, old)
                os.rename(writer.root, dest)
                shutil.rmtree(old, ignore_errors=True)
            self._catalog({pid: writer.doc})
        return status

    def _commit_remote(self, writer: ProteinWriter, pid: str, overwrite: bool) -> str:
        loc, held = self.location, writer.claim
        held.check_held()
        status = self._existing(writer, pid, overwrite)
        dest = loc / protein_path(pid)
        if status == "skipped":
            writer.abort()
            self._catalog({pid: self.committed_doc(pid)}, only_missing=True)
            return status
        aside = None
        if status == "replaced":
            # no rename on object storage: the old copy leaves the catalog and moves aside into
            # the staging area (its zarr.json copied last, removed first), where
            # recover_staging() restores it if this commit is interrupted before the new one
            # is whole; it is removed once the new copy is listed
            self._catalog({pid: None})
            aside = loc / STAGING / staging_name(REPLACED, pid)
            dest.publish(aside, each=held.renew)
        dest.remove("", recursive=True)  # a dead writer's leftovers
        held.renew(force=True)
        writer.location.publish(dest, each=held.renew)  # the group's zarr.json last: the commit
        self._catalog({pid: writer.doc})
        if aside is not None:
            aside.remove("", recursive=True)
        return status

    def _existing(self, writer: ProteinWriter, pid: str, overwrite: bool) -> str:
        """'written' (no such protein yet), 'skipped' (the same source is there) or 'replaced';
        ProteinExistsError for another source without ``overwrite``."""
        old = self.committed_doc(pid)
        if old is None:
            return "written"
        if _checksums(old) == _checksums(writer.doc) and not overwrite:
            return "skipped"
        if not overwrite:
            raise ProteinExistsError(f"protein {pid!r} is already in {self.url} from "
                                     f"another source; pass --overwrite to replace it")
        return "replaced"

    def _catalog(self, entries: dict, *, only_missing: bool = False) -> None:
        if only_missing:
            entries = {pid: doc for pid, doc in entries.items()
                       if doc is not None and pid not in self._entries}
            if not entries:
                return
        name = append_segment(self.location, entries, known=self._segments)
        if self._segments is not None:
            self._segments.append(name)

    def ensure_listed(self, protein_id: str) -> None:
        """List a committed protein group in the catalog if it is not (its writer died between
        the group's commit and the catalog entry)."""
        if protein_id in self:
            return
        with self.lock():
            doc = self.committed_doc(protein_id)
            if doc is not None:
                self._catalog({protein_id: doc}, only_missing=True)
                self._entries[protein_id] = doc

    def rebuild_catalog(self) -> list[str]:
        """Make the catalog list exactly the complete protein groups there are, with their own
        documents, made from the groups without reading the catalog (one listing of
        ``proteins/`` and one read per group: for repairs). When it differed, or a segment was
        damaged, it is replaced by one segment. Returns what changed, one line each."""
        loc = self._require_writable()
        with self.lock():
            names = segment_names(loc)
            docs = self._group_documents()
            try:
                old = read_catalog(loc, self._group_documents, warn=lambda line: None)
                before, damage = old.entries, old.damaged
            except (ProtstoreError, OSError, ValueError) as exc:
                before, damage = {}, {"(all)": f"the catalog could not be read: {exc}"}
            lines = [f"catalog: replaced damaged segment {name} ({what.split('; ')[0]})"
                     for name, what in damage.items()]
            for pid in sorted(set(docs) | set(before)):
                if pid not in before:
                    lines.append(f"catalog: added protein {pid!r}")
                elif pid not in docs:
                    lines.append(f"catalog: dropped protein {pid!r}")
                elif before[pid] != docs[pid]:
                    lines.append(f"catalog: protein {pid!r}: entry replaced by its group's "
                                 f"document")
            if lines:
                replace_segments(loc, docs, names)
            self._load()
        return lines

    def recover_staging(self) -> list[str]:
        """Clean ``.staging/`` of dead writers' leftovers; restore half-replaced proteins.

        Only entries whose writer is known to be gone are touched: on a local disk a write of
        a live process or of another host (:mod:`~protstore.store.staging`) is left alone; on
        object storage, one whose protein has a live claim. Returns what was done, one line
        each.
        """
        loc = self._require_writable()
        done = []
        with self.lock():
            for name in loc.listdir(STAGING):
                if not self.local:
                    done.extend(self._recover_remote(name))
                    continue
                info = parse_staging(name)
                entry = self.root / STAGING / name
                if info is None or not info.abandoned():
                    continue
                if info.kind == REPLACED:
                    dest = self.root / protein_path(info.protein_id)
                    if not dest.exists():
                        os.rename(entry, dest)
                        done.append(f"restored protein {info.protein_id!r} from an "
                                    f"interrupted replace")
                        continue
                shutil.rmtree(entry, ignore_errors=True)
                done.append(f"removed unfinished staging group {name}")
        return done

    def _recover_remote(self, name: str) -> list[str]:
        """One staging prefix on object storage whose protein has no live claim: an old copy
        set aside by an interrupted overwrite goes back when the protein has no complete group
        (and is listed again), anything else is removed."""
        loc, info = self.location, parse_staging(name)
        pid = info.protein_id if info is not None else name.split("@")[-1]
        if live_claim(loc, pid)[1] is not None:
            return []  # its writer is at work
        entry, dest = loc / STAGING / name, loc / protein_path(pid)
        if info is not None and info.kind == REPLACED and entry.exists("zarr.json") \
                and not dest.exists("zarr.json"):
            try:  # one restorer at a time, and no writer meanwhile: claim the protein
                held = claim(loc, pid)
            except ClaimError:
                return []
            try:
                if not (entry.exists("zarr.json") and not dest.exists("zarr.json")):
                    return []  # another recovery got here first
                dest.remove("", recursive=True)  # the new copy's partial objects
                entry.publish(dest)
                self.ensure_listed(pid)
            finally:
                held.release()
            return [f"restored protein {pid!r} from an interrupted replace"]
        loc.remove(f"{STAGING}/{name}", recursive=True)
        if info is not None and info.kind == REPLACED and dest.exists("zarr.json"):
            self.ensure_listed(pid)  # interrupted before the old copy had moved aside
        return [f"removed unfinished staging group {name}"]

    def migrate(self, *, progress: bool = False) -> str | None:
        """Bring an older store to format 3; returns what was done (lines) or None if there
        was nothing to do. Format 1 (the root's consolidated metadata lists every node) gets
        the catalog, written first, the root last; format 2 gets its string coordinates
        (``resname``, ``chain``, ``xyz``) as label codes, protein by protein
        (:mod:`~protstore.store.migrate`: every reader sees a consistent group throughout),
        then their new documents in the catalog, then the root. An interrupted migration is
        finished by the next; a protein that cannot be read is left as it was and named."""
        if self.format_version >= FORMAT_VERSION:
            return None
        if self.mode == "r":
            raise StoreError(f"{self.url}: store opened read-only (mode='r')")
        lines = []
        with store_lock(self.root) if self.local else contextlib.nullcontext():
            self._load()
            if self.format_version < 2:
                entries = self._entries
                append_segment(self.location, dict(entries))
                self._write_root(2)
                lines.append(f"{self.url}: migrated from store format 1 (the root's zarr.json "
                             f"listed every node) to format 2 (a catalog of {len(entries)} "
                             f"proteins)")
            if self.format_version < 3:
                lines += self._migrate_labels(progress)
        self._load()
        return "\n".join(lines)

    def _write_root(self, version: int) -> None:
        doc = dict(self.doc, format_version=version)
        check_document(doc, "store", self.url)
        self.location.write_json("zarr.json", group_document({STORE_DOC: doc}))
        self._load()

    def _migrate_labels(self, progress: bool) -> list[str]:
        from ..progress import progress_bar
        from .migrate import migrate_protein

        changed, failed = {}, []
        for pid in progress_bar(self.proteins, desc="migrate", unit="protein",
                                disable=not progress):
            try:
                doc = migrate_protein(self.location, pid)
            except (ProtstoreError, OSError, ValueError, KeyError, TypeError) as exc:
                failed.append(f"{self.url}/{protein_path(pid)}: not migrated ({exc}); it reads "
                              f"as before, `protstore validate` checks it")
                continue
            if doc is None:  # migrated before, by a run interrupted before its catalog entry
                doc = self.committed_doc(pid)
                if doc is None or doc == self.protein_doc(pid):
                    continue
            changed[pid] = doc
        if changed:
            append_segment(self.location, changed)
        if not failed:  # else the store stays format 2 and the next write tries them again
            self._write_root(3)
        return [f"{self.url}: migrated to store format 3 (resname, chain and xyz of "
                f"{len(changed)} proteins as label codes, which tensorstore and other Zarr v3 "
                f"readers read)", *failed]

    # ----------------------------------------------------------------------------- plans
    def write_attrs_group(self, path: str, key: str, doc: dict, *, overwrite: bool) -> None:
        """Write (or replace) a metadata-only group ``path`` with ``attrs[key] = doc``: one
        object, its ``zarr.json``, written whole."""
        loc = self._require_writable()
        meta = group_document({key: doc})
        with self.lock():
            try:
                loc.write_json(f"{path}/zarr.json", meta, exclusive=not overwrite)
            except FileExistsError:
                raise StoreError(f"{self.url}: {path} exists; pass --overwrite to replace it") \
                    from None

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


def create_store(path: str | os.PathLike | Location, encoding: Encoding | None = None,
                 storage_options: dict | None = None) -> None:
    """Create an empty store at ``path`` (a local directory or a URL); an existing protstore is
    left untouched.

    The root ``zarr.json``, which makes the place a store, is written last, so a kill at any
    point leaves either no store or a whole one; a later call finishes an interrupted creation.
    Locally, concurrent creators take the store's lock and the skeleton is made in a hidden
    directory; on object storage the root is created with a conditional PUT (one creator wins).
    """
    loc = path if isinstance(path, Location) else Location(path, storage_options)
    doc = store_document(encoding or Encoding())
    check_document(doc, "store", loc.url)
    root_meta = group_document({STORE_DOC: doc})
    if not loc.local:
        if loc.exists("zarr.json"):
            return
        for name in (PROTEINS, PLANS):
            loc.write_json(f"{name}/zarr.json", group_document())
        try:
            loc.write_json("zarr.json", root_meta, exclusive=True)
        except FileExistsError:
            pass  # another creator won
        return
    root = Path(loc.path)
    if (root / "zarr.json").exists():
        return
    if root.exists() and not root.is_dir():
        raise StoreError(f"{root}: exists and is not a directory")
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
            tmp_loc = Location(tmp)
            for name in (PROTEINS, PLANS):
                tmp_loc.write_json(f"{name}/zarr.json", group_document())
            (tmp / CATALOG).mkdir()
            tmp_loc.write_json("zarr.json", root_meta)
            for name in (PROTEINS, PLANS, CATALOG):
                os.rename(tmp / name, root / name)
            fsync_tree(root / PROTEINS)
            fsync_tree(root / PLANS)
            fsync_tree(root / CATALOG)
            os.rename(tmp / "zarr.json", root / "zarr.json")  # from here on, a store
            fsync_paths([str(root / "zarr.json"), str(root)])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _unfinished_skeleton(root: Path) -> list[Path]:
    """What an interrupted :func:`create_store` left in ``root`` (no root zarr.json), to be
    removed: hidden creation directories, ``proteins/``, ``plans/`` holding only their own
    ``zarr.json`` and an empty ``catalog/``. Anything else means the directory is not a protstore: an error, raised
    before anything is removed."""
    leftovers = []
    for entry in root.iterdir():
        if entry.name.startswith(CREATING) or (
                entry.name in (PROTEINS, PLANS) and entry.is_dir()
                and {p.name for p in entry.iterdir()} <= {"zarr.json"}):
            leftovers.append(entry)
        elif entry.name == CATALOG and entry.is_dir() and not any(entry.iterdir()):
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
    path : local directory, or an fsspec URL (``s3://bucket/store.zarr``, ``memory://x``...).
    mode : ``"r"`` read-only; ``"r+"`` read/write, the store must exist; ``"a"`` read/write,
        creating an empty store if missing. A store of an older format (1: protstore < 0.6,
        2: < 0.7) is migrated when opened for writing (:meth:`Store.migrate`; ``store.notes``
        says so).
    encoding : chunking/codecs for a store created here (ignored for an existing store).
    storage_options : fsspec options of the location (credentials, endpoint...); the
        standard environment (``AWS_ENDPOINT_URL``...) is read in any case.
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
    store = Store(loc, mode)
    if mode != "r":
        note = store.migrate()
        if note:
            store.notes.extend(note.splitlines())
    return store
