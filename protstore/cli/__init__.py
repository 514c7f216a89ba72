"""The ``protstore`` command line: parse, call the library, print. Errors become one line.

One module per command group (:mod:`.data`, :mod:`.training`, :mod:`.analysis`); what they
share is in :mod:`.common`.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from .._version import __version__
from ..errors import ProtstoreError
from . import analysis, data, training
from .common import _check_local_paths, _compilation_cache, _one_line_warning


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="protstore", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"protstore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (data, training, analysis):
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _compilation_cache()
        with warnings.catch_warnings():  # restores the session's showwarning afterwards
            warnings.showwarning = _one_line_warning(warnings.showwarning)
            _check_local_paths(args)
            return args.func(args)
    except ProtstoreError as exc:
        print(f"protstore: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("protstore: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback (unless asked for)
        if os.environ.get("PROTSTORE_DEBUG"):
            raise
        if isinstance(exc, OSError) and exc.strerror:
            what = exc.strerror + (f": {exc.filename}" if exc.filename else "")
        else:
            what = f"unexpected {type(exc).__name__}: {exc} (PROTSTORE_DEBUG=1 shows where)"
        print(f"protstore: error: {what}", file=sys.stderr)
        return 1
