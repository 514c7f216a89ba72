"""The catalog: which proteins a store holds, with their documents, read in a few requests
whatever the size of the store.

Layout: ``STORE/catalog/`` holds immutable JSON *segments* (``schemas/catalog.json``). A
segment maps protein ids to their protein document, or to ``null`` for a protein removed. The
catalog is the segments merged in the order of their names, a later segment winning. So:

- a commit appends one small segment (one PUT; nothing else is read or rewritten, so the cost
  of a commit does not grow with the store);
- reading is one LIST of ``catalog/`` and a GET of each segment, fetched concurrently;
- once there are more than ``COMPACT_AT`` segments, the writer that appended the last merges
  them into one (written before the merged ones are removed: a reader sees the same catalog
  before, during and after). A compacted segment is named after the last segment it merged,
  plus a suffix, so that it sorts after every segment it merged and before every later one.

Segment names are ``<time in ns, 20 digits>-<random>`` and, for compacted segments,
``<name merged last>~<random>``; a writer names its segment after every name it listed, so
its own later commits always come later. Two segments naming one protein only happen when
the protein was replaced, which its claim serialises (:mod:`~protstore.store.claims`).
Nothing here renames, locks or reads process ids, so the same code serves a local directory
and object storage.
"""

from __future__ import annotations

import json
import time
import uuid

from ..errors import StoreError
from .location import Location

CATALOG = "catalog"
CATALOG_DOC = "protstore_catalog"
COMPACT_AT = 32
RETRIES = 5  # a segment listed, then removed by a compaction before it was read


def _stem(name: str) -> str:
    return name.removesuffix(".json")


def _time_of(name: str) -> int:
    head = _stem(name).split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def segment_names(store: Location) -> list[str]:
    """The catalog's segment names, in merge order (one LIST)."""
    return sorted((n for n in store.listdir(CATALOG) if n.endswith(".json")
                   and not n.startswith(".")), key=_stem)


def read_catalog(store: Location) -> tuple[dict[str, dict], list[str]]:
    """(protein id -> protein document, the segment names read), sorted by id."""
    for attempt in range(RETRIES):
        names = segment_names(store)
        try:
            blobs = store.read_many(f"{CATALOG}/{n}" for n in names)
        except FileNotFoundError:
            if attempt == RETRIES - 1:
                raise
            continue
        return merge_segments([_entries(store, n, blobs[f"{CATALOG}/{n}"]) for n in names]), \
            names
    raise AssertionError("unreachable")


def merge_segments(segments: list[dict[str, dict | None]]) -> dict[str, dict]:
    merged: dict[str, dict | None] = {}
    for entries in segments:
        merged.update(entries)
    return {pid: doc for pid, doc in sorted(merged.items()) if doc is not None}


def _entries(store: Location, name: str, blob: bytes) -> dict[str, dict | None]:
    try:
        doc = json.loads(blob)[CATALOG_DOC]
        entries = doc["entries"]
        if not isinstance(entries, dict):
            raise TypeError("entries is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{store.url}/{CATALOG}/{name}: not a catalog segment "
                         f"({type(exc).__name__}: {exc})") from None
    return entries


def append_segment(store: Location, entries: dict[str, dict | None],
                   known: list[str] | None = None) -> str:
    """Add ``entries`` (protein id -> document, or None to remove) as a new segment; compact
    when the catalog has grown past ``COMPACT_AT`` segments. ``known``: the segment names
    listed already (else listed here). Returns the new segment's name."""
    names = segment_names(store) if known is None else known
    now = time.time_ns()
    if names:
        now = max(now, max(_time_of(n) for n in names) + 1)
    name = f"{now:020d}-{uuid.uuid4().hex[:8]}.json"
    _write(store, name, entries, exclusive=True)
    if len(names) + 1 > COMPACT_AT:
        # listed afresh: a compaction must merge every segment before the one it is named
        # after, or a replacement another writer committed meanwhile would sort under it
        compact(store)
    return name


def compact(store: Location) -> None:
    """Merge every segment into one, then remove the merged ones."""
    names = segment_names(store)
    if len(names) < 2:
        return
    try:
        blobs = store.read_many(f"{CATALOG}/{n}" for n in names)
    except FileNotFoundError:
        return  # another writer is compacting the same segments
    merged = merge_segments([_entries(store, n, blobs[f"{CATALOG}/{n}"]) for n in names])
    _write(store, f"{_stem(names[-1])}~{uuid.uuid4().hex[:8]}.json", merged, exclusive=True)
    for n in names:
        store.remove(f"{CATALOG}/{n}")


def _write(store: Location, name: str, entries: dict, *, exclusive: bool) -> None:
    store.write_json(f"{CATALOG}/{name}", {CATALOG_DOC: {"version": 1, "entries": entries}},
                     schema="catalog", exclusive=exclusive)
