"""The Store's write side: claims and staging groups for writers, commits (new proteins and
overwrites), the catalog entries they add, repairs of what interrupted commits left.

Commits keep one promise on both kinds of location: a protein appears whole or not at all, and
an interrupted write leaves the store valid.

- Local directory (also a shared POSIX file system): the protein is written into a private
  staging directory and renamed into ``proteins/`` under the store's file lock; then its
  catalog segment is added.
- Object storage: the writer first claims the protein (:mod:`~protstore.store.claims`), writes
  it into a private staging prefix, then copies it object by object into ``proteins/<id>/``
  (server-side), the group's ``zarr.json`` last, so that a reader, protstore or plain zarr,
  sees nothing until that object is there; then the catalog segment; then it releases the claim.

:class:`Commits` is a part of :class:`~protstore.store.Store` (which it is mixed into); it
uses the reader's state (``location``, ``mode``, the catalog) and adds nothing of its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil

from ..errors import ClaimError, ProteinExistsError, ProtstoreError, StoreError
from .catalog import append_segment, read_catalog, replace_segments, segment_names
from .claims import claim, live_claim
from .create import group_document
from .layout import (FORMAT_VERSION, PROTEIN_DOC, STAGING, check_protein_id, generation_of,
                     generation_path, protein_path)
from ..location import Location, fsync_tree
from .lock import store_lock
from .staging import REPLACED, WRITE, parse_staging, staging_name
from .writer import ProteinWriter


class Commits:
    """The write methods of :class:`~protstore.store.Store`."""

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
                # The old copy then goes to generations/, where older versions read it.
                old = root / STAGING / staging_name(REPLACED, pid)
                os.rename(dest, old)
                os.rename(writer.root, dest)
                self._keep_generation(self.location / f"{STAGING}/{old.name}", pid)
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
            self._keep_generation(aside, pid)
        return status

    def _keep_generation(self, aside: Location, pid: str) -> str:
        """Move an old copy of ``pid`` set aside by an overwrite to
        ``generations/<id>@<generation>`` (named by its own document), where the store versions
        that list it read it until ``protstore gc``; removed instead when that generation is
        kept already, is the one in ``proteins/`` (the same source written again), or the copy
        has no document. Returns what was done."""
        try:
            doc = (aside.read_json("zarr.json").get("attributes") or {}).get(PROTEIN_DOC)
        except (FileNotFoundError, ValueError):
            doc = None
        current = self.committed_doc(pid)
        target = self.location / generation_path(pid, generation_of(doc)) \
            if isinstance(doc, dict) else None
        if target is None or target.exists("zarr.json") or (
                isinstance(current, dict) and generation_of(current) == generation_of(doc)):
            aside.remove("", recursive=True)
            return "removed"
        target.remove("", recursive=True)  # a partial copy of an interrupted move
        aside.publish(target)
        return f"kept as {generation_path(pid, generation_of(doc))}"

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
                replace_segments(loc, docs, names, damaged=tuple(damage))
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
                    what = self._keep_generation(loc / f"{STAGING}/{name}", info.protein_id)
                    done.append(f"old copy of protein {info.protein_id!r} from an interrupted "
                                f"replace: {what}")
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
        if info is not None and info.kind == REPLACED and dest.exists("zarr.json"):
            if entry.exists("zarr.json"):  # a whole old copy: older versions read it
                what = self._keep_generation(entry, pid)
                self.ensure_listed(pid)
                return [f"old copy of protein {pid!r} from an interrupted replace: {what}"]
            loc.remove(f"{STAGING}/{name}", recursive=True)
            self.ensure_listed(pid)  # interrupted before the old copy had moved aside
            return [f"removed unfinished staging group {name}"]
        loc.remove(f"{STAGING}/{name}", recursive=True)
        return [f"removed unfinished staging group {name}"]

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



def _checksums(doc: dict) -> set[str]:
    return {s["checksum"] for s in doc["sources"]}

