"""Store versions: what each commit changed (``protstore log``) and removing what no kept
version reads (``protstore gc``).

Every commit appends a catalog segment, and each is a store version
(:mod:`~protstore.store.catalog`); an overwrite moves the protein's old data to
``generations/<id>@<generation>`` (:meth:`~protstore.store.Store.commit`), so
``open_store(url, version=V)`` reads the store, data included, as it was at V. Nothing of an
old version is removed until :func:`collect_garbage` is asked to.
"""

from __future__ import annotations

import datetime

import warnings

from ..errors import StoreError, StoreVersionWarning
from .catalog import Version, prune_history, states_at, versions
from .layout import GENERATIONS, generation_of, generation_path


def store_log(store) -> list[Version]:
    """The store's versions, newest first, each with its time (UTC) and the proteins its
    commit added, overwrote (another generation of their data), updated (their document only)
    and removed. Versions ``gc`` removed are not listed."""
    if store.format_version < 2:
        return []
    return versions(store.location)[::-1]


def changed_since(store, version: str, proteins) -> list[str] | None:
    """The ``proteins`` whose data differ between store ``version`` (a full id) and ``store``
    as opened (another generation, or absent from one of them); None when ``version`` is no
    longer in the history (gc removed it)."""
    then = states_at(store.location, {version}).get(version) if store.format_version >= 2 \
        else None
    if then is None:
        return None
    now = {pid: store.protein_doc(pid) if pid in store else None for pid in proteins}
    return [pid for pid in proteins if (then.get(pid) is None) != (now[pid] is None)
            or (now[pid] is not None and generation_of(then[pid]) != generation_of(now[pid]))]


def warn_if_changed(store, version: str | None, proteins, what: str) -> list[str]:
    """Warn (:class:`~protstore.errors.StoreVersionWarning`) when ``proteins``, which ``what``
    used at store ``version``, changed since; returns the changed ones. Nothing to compare
    (no version recorded, the same version) says nothing."""
    if version is None or version == store.version:
        return []
    proteins = list(proteins)
    changed = changed_since(store, version, proteins)
    if changed is None:
        warnings.warn(StoreVersionWarning(
            f"{what} read store version {version}, which {store.url} no longer keeps "
            f"(`protstore gc`): whether its proteins changed cannot be checked"), stacklevel=3)
        return []
    if changed:
        warnings.warn(StoreVersionWarning(
            f"{what} read store version {version}; {len(changed)} of its {len(proteins)} "
            f"proteins changed since ({_names(changed)}): it now reads other data "
            f"(--store-version {version} reads the store as it was)"), stacklevel=3)
    return changed


def log_lines(store) -> list[str]:
    """:func:`store_log` as text, one line per version: ``<version>  <time>  <changes>``."""
    lines = []
    for v in store_log(store):
        parts = [f"{kind} {len(ids)} ({_names(ids)})" for kind, ids in
                 (("added", v.added), ("overwritten", v.overwritten), ("updated", v.updated),
                  ("removed", v.removed)) if ids]
        lines.append(f"{v.version}  {v.time}  {'; '.join(parts) or 'no change'}")
    return lines


def _names(ids: list[str], most: int = 5) -> str:
    return ", ".join(ids[:most]) + (f", ... {len(ids) - most} more" if len(ids) > most else "")


def parse_since(text: str) -> int:
    """A time ``YYYY-MM-DD[THH:MM[:SS]][Z|±HH:MM]`` (UTC when no zone) as ns since the epoch."""
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise StoreError(f"--keep-since {text!r}: not a time (YYYY-MM-DD or "
                         f"YYYY-MM-DDTHH:MM:SS, UTC unless a zone is given)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return int(when.timestamp() * 1e9)


def collect_garbage(store, *, keep: int | None = None, keep_since: str | None = None,
                    dry_run: bool = True) -> list[str]:
    """Remove the old data no kept version reads: the ``generations/`` groups and the catalog
    history of versions older than the kept ones. Kept: the ``keep`` newest versions, or those
    committed at or after ``keep_since`` (a time, :func:`parse_since`); the newest always.
    ``dry_run`` (the default) only says what would go. Returns one line per removal. Local
    stores take the store's lock; on object storage run it while no one overwrites."""
    if (keep is None) == (keep_since is None):
        raise StoreError("gc: give exactly one of --keep N or --keep-since TIME")
    if keep is not None and keep < 1:
        raise StoreError(f"gc: --keep must be at least 1, not {keep}")
    loc = store._require_writable()
    with store.lock():
        every = versions(loc)
        if not every:
            return []
        if keep is not None:
            kept = every[-keep:]
        else:
            since = parse_since(keep_since)
            kept = [v for v in every if int(v.version.split("-", 1)[0]) >= since] or every[-1:]
        states = states_at(loc, {v.version for v in kept})
        referenced = {generation_path(pid, generation_of(doc))
                      for state in states.values() for pid, doc in state.items()}
        verb = "would remove" if dry_run else "removed"
        lines = []
        for name in sorted(loc.listdir(GENERATIONS)):
            path = f"{GENERATIONS}/{name}"
            if "@" not in name or path in referenced:
                continue
            if not dry_run:
                loc.remove(path, recursive=True)
            lines.append(f"gc: {verb} {path} (no kept version reads it)")
        dropped = [v for v in every if v.version < kept[0].version]
        prune_history(loc, kept[0].version, dry_run=dry_run)
        if dropped:
            lines.append(f"gc: {verb} {len(dropped)} store version(s) older than "
                         f"{kept[0].version} from the catalog's history")
        store.refresh()
    return lines
