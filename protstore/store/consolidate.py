"""Keep the root's consolidated metadata in step with the store, reading only what changed.

``zarr.consolidate_metadata`` walks the whole hierarchy, so its cost after every ingest or plan
grows with the number of proteins. :func:`merge_consolidated` updates the root's
``zarr.json`` instead: the groups under ``proteins/`` and ``plans/`` that are new on disk or
named as changed are read again (one ``zarr.json`` each; a protein's lists its arrays in its own
consolidated metadata, which the writer leaves there), the groups gone from disk are dropped,
and every other entry is kept as it is. The result is what a full consolidation writes
(``tests/test_store.py`` checks it, entry by entry).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

from .layout import PLANS, PROTEINS

CONTAINERS = (PROTEINS, PLANS)


def inline_consolidated(children: dict) -> dict:
    """A group's ``consolidated_metadata`` entry listing ``children`` (name -> metadata)."""
    return {"kind": "inline", "must_understand": False, "metadata": children}


def merge_consolidated(root: Path, changed: Iterable[str] = ()) -> bool:
    """Update ``root/zarr.json``'s consolidated metadata for ``changed`` group paths (e.g.
    ``"proteins/<id>"``) and for the groups added to or removed from ``proteins/`` and ``plans/``
    since. Returns False, writing nothing, when the root has no consolidated metadata yet or a
    group to read has arrays but no consolidated metadata of its own: then consolidate in full.
    The caller holds the store's lock; the file is replaced atomically.
    """
    doc = json.loads((root / "zarr.json").read_text())
    consolidated = doc.get("consolidated_metadata")
    if not consolidated:
        return False
    entries: dict = dict(consolidated["metadata"])
    changed = set(changed)
    for container in CONTAINERS:
        base = root / container
        on_disk = {p.name for p in base.iterdir() if (p / "zarr.json").is_file()} \
            if base.is_dir() else set()
        if on_disk and container not in entries:
            if not (base / "zarr.json").is_file():
                return False
            entries[container] = _flattened(_read(base / "zarr.json"))
        known = {key.split("/")[1] for key in entries if key.startswith(container + "/")}
        for name in known - on_disk:
            _drop(entries, f"{container}/{name}")
        for name in on_disk:
            path = f"{container}/{name}"
            if name in known and path not in changed:
                continue
            group = _read(base / name / "zarr.json")
            children = (group.get("consolidated_metadata") or {}).get("metadata")
            if children is None and any(p.is_dir() for p in (base / name).iterdir()):
                return False
            _drop(entries, path)
            entries[path] = _flattened(group)
            entries.update({f"{path}/{child}": meta for child, meta in (children or {}).items()})
    doc["consolidated_metadata"] = dict(consolidated, metadata=dict(sorted(entries.items())))
    _replace(root / "zarr.json", json.dumps(doc).encode())  # no indent: the C encoder, 10x faster
    return True


def write_group_metadata(path: Path, attributes: dict) -> None:
    """Set a group's attributes and consolidate its metadata, in one write of its ``zarr.json``.

    The group's children must all be arrays (a protein's are): their ``zarr.json`` files go in
    as they are, which is what ``zarr.consolidate_metadata`` writes after setting the
    attributes (``tests/test_store.py`` checks it), in a fifth of the time.
    """
    group = _read(path / "zarr.json")
    children = {}
    for child in sorted(p for p in path.iterdir() if (p / "zarr.json").is_file()):
        meta = _read(child / "zarr.json")
        if meta.get("node_type") != "array":
            raise ValueError(f"{child}: a group; only arrays are consolidated here")
        children[child.name] = meta
    group = {**group, "attributes": json.loads(json.dumps(attributes)),
             "consolidated_metadata": inline_consolidated(children)}
    (path / "zarr.json").write_bytes(json.dumps(group).encode())


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _flattened(group: dict) -> dict:
    """A group's entry in its parent's consolidated metadata (its children listed there)."""
    return {**group, "consolidated_metadata": inline_consolidated({})}


def _drop(entries: dict, path: str) -> None:
    for key in [k for k in entries if k == path or k.startswith(path + "/")]:
        del entries[key]


def _replace(path: Path, data: bytes) -> None:
    """Write ``path`` so that a reader sees the old or the new file, never a part."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
