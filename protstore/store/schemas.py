"""JSON Schemas of the metadata documents the store writes (the files under ``schemas/``)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import jsonschema

from ..errors import StoreError

_CANDIDATES = (
    Path(__file__).resolve().parents[1] / "schemas",  # installed wheel: protstore/schemas
    Path(__file__).resolve().parents[2] / "schemas",  # source checkout / editable install
)


def schema_dir() -> Path:
    for path in _CANDIDATES:
        if path.is_dir():
            return path
    raise StoreError("protstore's JSON Schemas were not found (package installed incompletely)")


@cache
def load_schema(name: str) -> dict:
    """The schema ``schemas/<name>.json`` as a dict."""
    return json.loads((schema_dir() / f"{name}.json").read_text())


def check_document(doc: dict, name: str, where: str) -> None:
    """Raise :class:`StoreError` naming ``where`` when ``doc`` does not match schema ``name``."""
    validator = jsonschema.Draft202012Validator(load_schema(name))
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        path = "/".join(str(p) for p in error.absolute_path) or "(document)"
        raise StoreError(f"{where}: metadata does not match schema {name}.json at {path}: "
                         f"{error.message}")
