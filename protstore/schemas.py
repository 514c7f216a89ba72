"""JSON Schemas of the metadata documents protstore writes (the files under ``schemas/``), and
the one way such a document becomes JSON text: checked, and strict (no NaN or Infinity)."""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import jsonschema

from .errors import DocumentError

_CANDIDATES = (
    Path(__file__).resolve().parent / "schemas",  # installed wheel: protstore/schemas
    Path(__file__).resolve().parents[1] / "schemas",  # source checkout / editable install
)


def schema_dir() -> Path:
    for path in _CANDIDATES:
        if path.is_dir():
            return path
    raise DocumentError("protstore's JSON Schemas were not found (package installed incompletely)")


@cache
def load_schema(name: str) -> dict:
    """The schema ``schemas/<name>.json`` as a dict."""
    return json.loads((schema_dir() / f"{name}.json").read_text())


def _non_finite(value, path: str = "") -> str | None:
    """The path of the first NaN or infinite number in a JSON-like value, else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(document)"
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _non_finite(item, f"{path}/{key}" if path else str(key))
        if found:
            return found
    return None


def check_document(doc: dict, name: str, where: str) -> None:
    """Raise :class:`DocumentError` naming ``where`` and the field when ``doc`` does not match
    schema ``name`` or holds a number JSON cannot carry (NaN, Infinity)."""
    bad = _non_finite(doc)
    if bad:
        raise DocumentError(f"{where}: {name} document holds a non-finite number at {bad} "
                            f"(JSON has no NaN or Infinity)")
    validator = jsonschema.Draft202012Validator(load_schema(name))
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        path = "/".join(str(p) for p in error.absolute_path) or "(document)"
        raise DocumentError(f"{where}: metadata does not match schema {name}.json at {path}: "
                            f"{error.message}")


def dumps_document(doc: dict, name: str, where: str, *, indent: int | None = 1) -> str:
    """``doc`` checked against schema ``name`` and written as strict JSON text."""
    check_document(doc, name, where)
    return json.dumps(doc, indent=indent, allow_nan=False)
