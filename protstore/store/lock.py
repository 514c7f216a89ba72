"""An advisory inter-process lock on a local store (``fcntl.flock`` on ``STORE/.lock``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


@contextlib.contextmanager
def store_lock(root: Path):
    """Hold the store's exclusive lock for the duration of the ``with`` block.

    Only commits (renames into ``proteins/``, metadata consolidation, plan writes) take it; the
    bulk of ingest work happens in private staging directories, so concurrent ingests overlap.
    The lock is released by the kernel when a process dies, so ``kill -9`` never leaves it held.
    """
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
