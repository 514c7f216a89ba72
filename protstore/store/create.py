"""Making a store and bringing an older one to the current format: :func:`create_store`, the
store document, and :class:`Migration` (mixed into :class:`~protstore.store.Store`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

from .._version import __version__
from ..errors import ProtstoreError, StoreError
from ..vocab import PAD_ID, UNK_ID, VOCABULARY
from .catalog import CATALOG, append_segment
from ..units import UNITS
from .layout import (CREATING, FORMAT_VERSION, LOCK, PLANS, PROTEINS, STAGING, STORE_DOC,
                     Encoding, protein_path)
from ..location import Location, fsync_paths, fsync_tree
from .lock import store_lock
from ..schemas import check_document


def group_document(attributes: dict | None = None) -> dict:
    """The Zarr v3 metadata document of a group."""
    return {"zarr_format": 3, "node_type": "group", "attributes": attributes or {}}



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



class Migration:
    """Format migration, a part of :class:`~protstore.store.Store`."""

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
