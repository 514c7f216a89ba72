"""An advisory inter-process lock on a local store (``STORE/.lock``, through ``filelock``:
``flock`` on POSIX, ``LockFileEx`` on Windows)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from filelock import FileLock


@contextlib.contextmanager
def store_lock(root: Path):
    """Hold the store's exclusive lock for the duration of the ``with`` block (waiting for it
    as long as another process holds it).

    Only commits (renames into ``proteins/``, metadata consolidation, plan writes) take it; the
    bulk of ingest work happens in private staging directories, so concurrent ingests overlap.
    The lock is the operating system's (never a lock file's mere existence): it is released
    when its holder dies, so ``kill -9`` never leaves it held, and the file stays in place.
    A file system without such locks is an error, not a silently weaker lock. Each call takes
    the lock afresh: a ``with`` nested in another of the same store waits forever, as with
    ``flock`` before.
    """
    lock = FileLock(Path(root) / ".lock", mode=0o644, thread_local=False,
                    fallback_to_soft=False, preserve_lock_file=True)
    with lock:
        yield
