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

**Store versions.** Every segment a commit appends is a store version, named by the segment's
stem (``<time>-<random>``). A compaction does not make one: the segments it merged move to
``catalog/history/`` (copied there before they are removed), where :func:`catalog_at` reads the
store as it was at any version and :func:`versions` lists them with what each changed; only
``protstore gc`` (:func:`prune_history`) removes history, after writing the state its oldest kept
version builds on as a base segment (``<stem>~base``, not a version itself).

Each segment (version 2) carries the digest of its entries. A segment that does not parse,
whose digest differs, or that names an invalid protein id (``../x``) is *damaged*: it is
reported by name (:class:`~protstore.errors.CatalogWarning`, and ``validate``), never
trusted, and not compacted. The proteins a damaged segment names are read from their groups'
own documents instead (an invalid id is dropped); when the segment cannot be parsed at all,
which proteins it named is unknown, so every protein is read from its group (one listing of
``proteins/`` and one read per group: slow on a large store, but right). ``validate --repair``
replaces the whole catalog by one segment made from the groups. Version-1 segments (protstore
< 0.7) carry no digest: read as before, trusted as far as JSON parsing goes.
"""

from __future__ import annotations

import json
import time
import uuid
import warnings
from collections.abc import Callable
from typing import NamedTuple

from ..errors import CatalogWarning, StoreError
from .digest import json_digest
from .layout import check_protein_id
from ..location import Location

CATALOG = "catalog"
CATALOG_DOC = "protstore_catalog"
HISTORY = "history"  # catalog/history/: segments a compaction or repair retired
BASE = "base"  # suffix of the base segment gc writes (the state before the oldest kept version)
SEGMENT_VERSION = 2  # 2: with the digest of its entries; 1: protstore < 0.7, none
COMPACT_AT = 32
RETRIES = 5  # a segment listed, then removed by a compaction before it was read

# what a reader falls back on: protein ids (None: every group there is) -> their groups' own
# documents (an id without a group is left out)
GroupDocuments = Callable[[list[str] | None], dict[str, dict]]


class Catalog(NamedTuple):
    entries: dict[str, dict]  # protein id -> protein document, sorted by id
    names: list[str]  # the segment names read, in merge order
    damaged: dict[str, str]  # damaged segment name -> what is wrong with it and what was done


class _Segment(NamedTuple):
    entries: dict[str, dict | None] | None  # None: it does not parse
    problem: str | None  # None: sound


def _stem(name: str) -> str:
    return name.removesuffix(".json")


def _time_of(name: str) -> int:
    head = _stem(name).split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def segment_names(store: Location) -> list[str]:
    """The catalog's segment names, in merge order (one LIST)."""
    return sorted((n for n in store.listdir(CATALOG) if n.endswith(".json")
                   and not n.startswith(".")), key=_stem)


def version_of(name: str) -> str:
    """The store version a segment brings the catalog to: its stem up to a compaction's ``~``."""
    return _stem(name).split("~", 1)[0]


def is_commit(name: str) -> bool:
    """Whether a segment is a commit's (a version), not a compaction, repair or base."""
    return "~" not in _stem(name)


def version_time(version: str) -> str:
    """ISO 8601 UTC time of a version (from its name; seconds)."""
    import datetime

    seconds = _time_of(version) / 1e9
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%SZ")


def history_names(store: Location) -> list[str]:
    """The retired segments' names in ``catalog/history/``, in merge order (one LIST)."""
    return sorted((n for n in store.listdir(f"{CATALOG}/{HISTORY}") if n.endswith(".json")
                   and not n.startswith(".")), key=_stem)


def _all_segments(store: Location) -> dict[str, dict[str, dict | None]]:
    """Every segment, live and retired (a name in both counts once), in merge order, parsed;
    a damaged one is a :class:`StoreError` naming it (old versions have no fallback)."""
    for attempt in range(RETRIES):
        live, old = segment_names(store), history_names(store)
        keys = {n: f"{CATALOG}/{n}" for n in live}
        keys.update({n: f"{CATALOG}/{HISTORY}/{n}" for n in old if n not in keys})
        try:
            blobs = store.read_many(keys.values())
        except FileNotFoundError:  # retired meanwhile: list again
            if attempt == RETRIES - 1:
                raise
            continue
        out = {}
        for name in sorted(keys, key=_stem):
            seg = parse_segment(blobs[keys[name]])
            if seg.problem is not None:
                raise StoreError(f"{store.url}/{keys[name]}: damaged catalog segment "
                                 f"({seg.problem}); the store versions it belongs to cannot be "
                                 f"read")
            out[name] = seg.entries
        return out
    raise AssertionError("unreachable")


class Version(NamedTuple):
    version: str  # the commit segment's stem
    time: str  # ISO 8601 UTC
    added: list[str]
    overwritten: list[str]  # another generation of the protein's data
    updated: list[str]  # the same data, its document changed (a migration, a relisting)
    removed: list[str]


def _replay(segments: dict[str, dict[str, dict | None]]):
    """(segment name, its entries, the merged state before it) in merge order; a base or
    compacted segment replaces the state (it is the merge of everything before it)."""
    state: dict[str, dict] = {}
    for name, entries in segments.items():
        yield name, entries, state
        if is_commit(name):
            state = {**state, **entries}
            state = {p: d for p, d in state.items() if d is not None}
        else:
            state = {p: d for p, d in entries.items() if d is not None}


def versions(store: Location) -> list[Version]:
    """Every store version still in the catalog's history (oldest first), with what its commit
    changed."""
    from .layout import generation_of

    out = []
    for name, entries, before in _replay(_all_segments(store)):
        if not is_commit(name):
            continue
        kinds: dict[str, list[str]] = {"added": [], "overwritten": [], "updated": [],
                                       "removed": []}
        for pid, doc in sorted(entries.items()):
            old = before.get(pid)
            if doc is None:
                if old is not None:
                    kinds["removed"].append(pid)
            elif old is None:
                kinds["added"].append(pid)
            elif generation_of(old) != generation_of(doc):
                kinds["overwritten"].append(pid)
            elif old != doc:
                kinds["updated"].append(pid)
        out.append(Version(_stem(name), version_time(_stem(name)), **kinds))
    return out


def resolve_version(store: Location, version: str, known: list[str] | None = None) -> str:
    """The full version id ``version`` names: the id itself or its random part (after the
    ``-``); a :class:`StoreError` when the store has no such version (any more)."""
    names = known if known is not None else [v.version for v in versions(store)]
    found = [v for v in names if version in (v, v.split("-", 1)[-1])]
    if len(found) != 1:
        newest = f"; the newest is {names[-1]}" if names else "; it has none"
        why = "no" if not found else "more than one"
        raise StoreError(f"{store.url}: {why} store version {version!r} (`protstore log` lists "
                         f"them; gc removes old ones){newest}")
    return found[0]


def states_at(store: Location, wanted: set[str]) -> dict[str, dict[str, dict]]:
    """The catalog (protein id -> document, sorted) at each version of ``wanted`` (full ids),
    from one read of every segment; a version the history lacks is left out."""
    out, last, prev = {}, None, None
    for name, entries, before in _replay(_all_segments(store)):
        version = version_of(name)
        if prev is not None and version != prev and prev in wanted:
            out[prev] = last
        last = {**before, **entries} if is_commit(name) else dict(entries)
        prev = version
    if prev is not None and prev in wanted:
        out[prev] = last
    return {v: {p: d for p, d in sorted(state.items()) if d is not None and valid_id(p)}
            for v, state in out.items()}


def catalog_at(store: Location, version: str) -> dict[str, dict]:
    """The catalog (protein id -> document, sorted) as it was at ``version`` (a full id)."""
    state = states_at(store, {version}).get(version)
    if state is None:
        raise StoreError(f"{store.url}: no store version {version!r}")
    return state


def retire(store: Location, names: list[str]) -> None:
    """Move live segments into ``catalog/history/`` (each copied before it is removed, so a
    reader of any version finds it in one place or the other)."""
    for n in names:
        try:
            blob = store.read_bytes(f"{CATALOG}/{n}")
        except FileNotFoundError:
            continue  # another writer retired it
        store.write_bytes(f"{CATALOG}/{HISTORY}/{n}", blob)
        store.remove(f"{CATALOG}/{n}")


def prune_history(store: Location, oldest_kept: str, *, dry_run: bool) -> list[str]:
    """Remove the retired segments only versions older than ``oldest_kept`` need, after
    writing the state just before it as a base segment. Live segments stay (the current
    catalog); returns the names removed (or, with ``dry_run``, that would be)."""
    if not dry_run:
        compact(store)  # every segment but the newest into the history
    segments = _all_segments(store)
    older = [n for n in segments if version_of(n) < oldest_kept]
    if dry_run:
        return older
    live = set(segment_names(store))
    doomed = [n for n in older if n not in live]
    if not doomed:
        return doomed
    before = None
    for name, entries, state in _replay(segments):
        if version_of(name) >= oldest_kept:
            before = state
            break
    last_older = max((version_of(n) for n in older), default=None)
    if before is not None and last_older is not None:
        base = f"{last_older}~{BASE}{uuid.uuid4().hex[:8]}.json"
        _write(store, f"{HISTORY}/{base}", before, exclusive=True)
    for n in doomed:
        store.remove(f"{CATALOG}/{HISTORY}/{n}")
    return doomed


def read_catalog(store: Location, groups: GroupDocuments | None = None, *,
                 warn: Callable[[str], None] | None = None) -> Catalog:
    """The catalog merged from its segments. A damaged segment is reported (in ``damaged``
    and as a :class:`CatalogWarning`); with ``groups``, the proteins it names (all, when it
    does not parse) come from their groups' documents, else a damaged segment is a
    :class:`StoreError`. ``warn``: what is told of a damaged segment (default: a
    :class:`CatalogWarning`)."""
    for attempt in range(RETRIES):
        names = segment_names(store)
        try:
            blobs = store.read_many(f"{CATALOG}/{n}" for n in names)
        except FileNotFoundError:
            if attempt == RETRIES - 1:
                raise
            continue
        segments = {n: parse_segment(blobs[f"{CATALOG}/{n}"]) for n in names}
        return _merge_checked(store, segments, groups, warn)
    raise AssertionError("unreachable")


def _merge_checked(store: Location, segments: dict[str, _Segment],
                   groups: GroupDocuments | None, warn) -> Catalog:
    damaged = {n: seg for n, seg in segments.items() if seg.problem is not None}
    report = {}
    for name, seg in damaged.items():
        where = f"{store.url}/{CATALOG}/{name}"
        if groups is None:
            raise StoreError(f"{where}: damaged catalog segment ({seg.problem}); "
                             f"`protstore validate --repair` rebuilds the catalog")
        fallback = "every protein is read from its group's document" if seg.entries is None \
            else (f"its {len(seg.entries)} protein(s) are read from their groups' documents")
        report[name] = f"{seg.problem}; {fallback}"
    merged = merge_segments([seg.entries for seg in segments.values()
                             if seg.entries is not None])
    if any(seg.entries is None for seg in damaged.values()):
        merged = dict(sorted(groups(None).items()))
    elif damaged:
        named = sorted({pid for seg in damaged.values() for pid in seg.entries
                        if valid_id(pid)})
        found = groups(named)
        for pid in named:
            merged.pop(pid, None)
            if pid in found:
                merged[pid] = found[pid]
        merged = dict(sorted(merged.items()))
    for name, what in report.items():
        line = (f"{store.url}/{CATALOG}/{name}: damaged catalog segment ({what}); "
                f"`protstore validate --repair` replaces it")
        if warn is None:
            warnings.warn(line, CatalogWarning, stacklevel=4)
        else:
            warn(line)
    return Catalog(merged, list(segments), report)


def merge_segments(segments: list[dict[str, dict | None]]) -> dict[str, dict]:
    merged: dict[str, dict | None] = {}
    for entries in segments:
        merged.update(entries)
    return {pid: doc for pid, doc in sorted(merged.items())
            if doc is not None and valid_id(pid)}


def valid_id(pid) -> bool:

    try:
        check_protein_id(pid)
    except StoreError:
        return False
    return True


def parse_segment(blob: bytes) -> _Segment:
    """A segment's entries and what is wrong with it (None: nothing)."""
    try:
        doc = json.loads(blob)[CATALOG_DOC]
        entries = doc["entries"]
        if not isinstance(entries, dict):
            raise TypeError("entries is not an object")
        version = doc["version"]
        if version not in (1, SEGMENT_VERSION):
            raise ValueError(f"version {version!r}")
    except (ValueError, KeyError, TypeError) as exc:
        return _Segment(None, f"does not parse: {type(exc).__name__}: {exc}")
    if version >= 2 and doc.get("digest") != json_digest(entries):
        return _Segment(entries, "its entries differ from its digest")
    bad = [pid for pid in entries if not valid_id(pid)]
    if bad:
        return _Segment(entries, f"invalid protein id {str(bad[0])[:40]!r}")
    wrong = [pid for pid, d in entries.items()
             if d is not None and (not isinstance(d, dict) or d.get("protein_id") != pid)]
    if wrong:
        return _Segment(entries, f"entry {wrong[0]!r} is not that protein's document")
    return _Segment(entries, None)


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
    """Merge every segment into one, then retire the merged ones into the history (nothing is
    done while a segment is damaged: ``validate --repair`` replaces them)."""
    names = segment_names(store)
    if len(names) < 2:
        return
    try:
        blobs = store.read_many(f"{CATALOG}/{n}" for n in names)
    except FileNotFoundError:
        return  # another writer is compacting the same segments
    segments = [parse_segment(blobs[f"{CATALOG}/{n}"]) for n in names]
    if any(seg.problem is not None for seg in segments):
        return
    replace_segments(store, merge_segments([seg.entries for seg in segments]), names)


def replace_segments(store: Location, entries: dict[str, dict], names: list[str],
                     damaged: tuple[str, ...] = ()) -> str:
    """Write ``entries`` as one segment sorting after every one of ``names`` (and before any
    later), then retire ``names`` into the history (``damaged`` ones are removed); returns the
    new segment's name."""
    name = f"{_stem(names[-1])}~{uuid.uuid4().hex[:8]}.json" if names else \
        f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
    _write(store, name, entries, exclusive=True)
    retire(store, [n for n in names if n not in damaged])
    for n in damaged:  # never history: a version read through it would be wrong
        store.remove(f"{CATALOG}/{n}")
    return name


def _write(store: Location, name: str, entries: dict, *, exclusive: bool) -> None:
    store.write_json(f"{CATALOG}/{name}", {CATALOG_DOC: {
        "version": SEGMENT_VERSION, "entries": entries,
        "digest": json_digest(json.loads(json.dumps(entries, allow_nan=False)))}},
        schema="catalog", exclusive=exclusive)
