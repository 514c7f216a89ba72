"""The process's thread pools: one for chunk codecs, one for waiting on the disk.

Each is made on first use and forgotten in a forked child (which inherits no threads).
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor


@functools.cache
def codec_pool() -> ThreadPoolExecutor:
    """The pool for chunk decodes and encodes, one thread per CPU (Blosc and zstd release the
    GIL)."""
    return ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="protstore-codec")


@functools.cache
def io_pool() -> ThreadPoolExecutor:
    """The pool of threads that mostly wait for the disk (fsync, metadata files): more threads
    than cores."""
    return ThreadPoolExecutor(8, thread_name_prefix="protstore-io")


def _forget_pools() -> None:
    codec_pool.cache_clear()
    io_pool.cache_clear()


if hasattr(os, "register_at_fork"):  # POSIX only (Windows has no fork)
    os.register_at_fork(after_in_child=_forget_pools)
