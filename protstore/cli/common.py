"""What every command shares: opening the store, value types, the command factory, local
paths, one-line warnings, the compilation cache."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import ProtstoreError


#: the commands that read a store and can read it as it was at an older version
VERSIONED = ("info", "bucket", "fit-priors", "train", "evaluate", "export", "export-npz",
             "simulate", "compare")


def add_command(sub, name: str, func, help: str) -> argparse.ArgumentParser:
    """A subcommand ``name`` running ``func(args)``, with the options every command has."""
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(func=func)
    if name in VERSIONED:
        p.add_argument("--store-version", metavar="V",
                       help="read the store as it was at this version (`protstore log` lists "
                            "them: the id or its part after the '-'); default: as it is now")
    if name not in ("demo", "demo-data", "import-checkpoints"):
        p.add_argument("--storage-options", metavar="JSON",
                       help="fsspec options of the locations given as URLs (store, "
                            "run directory, outputs: credentials, endpoint_url...), beyond "
                            "the standard environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID...)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _open(args, mode: str = "r"):
    """The store named on the command line, opened with ``--storage-options`` and, to read
    (``mode`` "r"), at ``--store-version``; what opening did (a migration) is said on
    stderr."""
    from ..store import open_store
    from ..location import parse_storage_options

    version = getattr(args, "store_version", None) if mode == "r" else None
    store = open_store(args.store, mode=mode, version=version,
                       storage_options=parse_storage_options(args.storage_options))
    for note in store.notes:
        print(f"protstore: {note}", file=sys.stderr)
    return store


def _positive_int(text: str) -> int:
    """a positive integer"""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _loggers(text: str) -> list[str]:
    from ..train.loggers import logger_names

    try:
        return logger_names(text)
    except ProtstoreError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    """0 or a positive integer"""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _positive_float(text: str) -> float:
    """a positive finite number"""
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, not {text}")
    return value


def _nonnegative_float(text: str) -> float:
    """a finite number >= 0"""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a non-negative finite number, not {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1), not {text}")
    return value


#: Options that name a local file or directory, per command: a URL there is refused, never
#: turned into a local folder named "s3:". Every other location (stores, run directories,
#: checkpoints, priors, configs, evaluation and EMA outputs) may be a URL.
LOCAL_PATHS = {"export-npz": ("out",), "import-checkpoints": ("dir", "out"),
               "demo": ("out",), "demo-data": ("out",)}


def _check_local_paths(args) -> None:
    for name in LOCAL_PATHS.get(args.command, ()):
        value = getattr(args, name, None)
        if isinstance(value, str) and value.startswith("file://"):
            setattr(args, name, value.removeprefix("file://"))
        elif isinstance(value, str) and "://" in value:
            raise ProtstoreError(f"--{name} {value}: a URL; {args.command} writes local files "
                                 f"only (give a local path)")


def _one_line_warning(show):
    """``warnings.showwarning`` that prints protstore's own warnings as one line, no source."""
    def showwarning(message, category, filename, lineno, file=None, line=None):
        if "protstore" in Path(filename).parts:
            print(f"protstore: warning: {message}", file=file or sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)
    return showwarning


def _compilation_cache() -> None:
    """Reuse XLA's compiled programs across runs of the commands (JAX's persistent cache in
    ``$XDG_CACHE_HOME/protstore/jax``, default ``~/.cache/protstore/jax``), unless JAX's cache
    is configured otherwise (``JAX_COMPILATION_CACHE_DIR``, ``JAX_ENABLE_COMPILATION_CACHE``)."""
    if any(k in os.environ for k in ("JAX_COMPILATION_CACHE_DIR", "JAX_ENABLE_COMPILATION_CACHE")):
        return
    import jax

    if jax.config.jax_compilation_cache_dir is None:
        try:  # no home (cron, containers) or an unwritable one: run without the cache
            base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
            path = base / "protstore" / "jax"
            path.mkdir(parents=True, exist_ok=True)
        except (OSError, RuntimeError):
            return
        if not os.access(path, os.W_OK):
            return
        jax.config.update("jax_compilation_cache_dir", str(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        jax.config.update("jax_compilation_cache_max_size", 2 << 30)  # bytes, oldest evicted