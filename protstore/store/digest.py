"""Digests that let a reader tell a document or an array from a damaged or edited one.

Every digest here is SHA-256 over a canonical byte string, written as ``"sha256:<hex>"``
(``short`` digests keep the first 16 hex digits: enough to notice damage, which is what they
are for, and small enough to sit in every catalog entry). Canonical JSON is
``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
allow_nan=False)`` of the value as JSON reads it back, so a digest taken before writing equals
the one taken after reading.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

SHORT = 16  # hex digits of a short digest


def canonical_json(value) -> bytes:
    """The canonical JSON bytes of a JSON-like value (tuples as lists, keys sorted)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def json_digest(value, *, short: bool = False) -> str:
    """``"sha256:<hex>"`` of the canonical JSON of ``value``."""
    hexdigest = hashlib.sha256(canonical_json(value)).hexdigest()
    return f"sha256:{hexdigest[:SHORT] if short else hexdigest}"


def array_digest(value) -> str:
    """``"sha256:<hex>"`` of an array's dtype (with byte order), shape and bytes (C order)."""
    a = np.ascontiguousarray(value)
    h = hashlib.sha256(f"{a.dtype.str}|{list(a.shape)}|".encode())
    h.update(a.view(np.uint8).reshape(-1) if a.size else b"")
    return f"sha256:{h.hexdigest()}"


def array_metadata_digest(metadata: dict) -> str:
    """Short digest of a Zarr v3 array's metadata document minus its ``attributes``: data type,
    shape, chunk grid and key encoding, codecs (byte order, transpose, compressors, checksum),
    fill value and dimension names, everything that decides what its chunks decode to."""
    return json_digest({k: v for k, v in metadata.items() if k != "attributes"}, short=True)


def arrays_metadata_digests(children: dict[str, dict]) -> dict[str, str]:
    """``{array name: array_metadata_digest}`` of a group's consolidated array documents."""
    return {name: array_metadata_digest(meta) for name, meta in sorted(children.items())}


def metadata_mismatch(recorded: dict[str, str] | None, children: dict[str, dict]) -> str | None:
    """What differs between the digests a protein document recorded and the arrays' metadata
    documents ``children`` (one line naming the array), or None: all equal, or nothing was
    recorded (a document written before the digests existed)."""
    if not recorded:
        return None
    for name in sorted(set(recorded) | set(children)):
        if name not in children:
            return f"array {name} is recorded in the protein document but has no metadata"
        if name not in recorded:
            return f"array {name} is not recorded in the protein document"
        if array_metadata_digest(children[name]) != recorded[name]:
            meta = children[name]
            return (f"array {name}: its zarr.json (data_type {meta.get('data_type')!r}, shape "
                    f"{meta.get('shape')}, codecs) differs from what the protein was written "
                    f"with")
    return None
