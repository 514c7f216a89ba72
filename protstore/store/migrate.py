"""Store format 2 -> 3: a protein group's string coordinates become label codes.

Format 2 stored ``resname``, ``chain`` and ``xyz`` as variable-length UTF-8 strings (zarr-python's
``string`` data type, which tensorstore and zarrs do not read); format 3 stores them as int32
codes with their labels in the array's attributes (:mod:`~protstore.store.labels`). Each such
array is rewritten so that every reader, at every moment, sees a consistent protein:

1. the codes are written as a chunk under a key the old array does not use (``c.0``: the
   ``default`` chunk key encoding with the ``.`` separator, a Zarr v3 spec encoding);
2. the array's own ``zarr.json`` is replaced (one atomic write): plain Zarr readers now read
   the codes, and the old chunk ``c/0`` is still there for readers of the old metadata;
3. the group's ``zarr.json`` (its consolidated metadata and the protein document's
   ``arrays_metadata`` digests) is replaced: protstore reads the codes;
4. the old chunk is removed.

A migration interrupted at any point is finished by the next one (each step is redone or
found done). The catalog gets the new documents in one segment once every protein is done.
"""

from __future__ import annotations

import json

import numpy as np
import zarr
from zarr.storage import StorePath

from ..errors import ProtstoreError
from .chunks import ArrayMeta, ChunkReader, ChunkWriter
from .labels import LABEL_DTYPE, encode_labels, is_labelled
from .layout import LABELLED, PROTEIN_DOC, protein_path
from ..location import Location, fsync_paths
from .quiet import quiet_zarr
from .writer import write_group_metadata

MIGRATED_KEY_ENCODING = {"name": "default", "configuration": {"separator": "."}}


def coded_metadata(meta: dict, attributes: dict) -> dict:
    """The metadata document of a format-2 string array ``meta`` as an int32 code array with
    ``attributes`` added, its chunk keys moved off the old ones (module docstring)."""
    codecs = [{"name": "bytes", "configuration": {"endian": "little"}}
              if c.get("name") == "vlen-utf8" else c for c in meta["codecs"]]
    return {**meta, "data_type": LABEL_DTYPE, "fill_value": 0, "codecs": codecs,
            "chunk_key_encoding": MIGRATED_KEY_ENCODING,
            "attributes": {**(meta.get("attributes") or {}), **attributes}}


def migrate_protein(loc: Location, protein_id: str) -> dict | None:
    """Bring one protein group to format 3; return its new document, or None when there was
    nothing to do. Raises ProtstoreError/OSError/ValueError when the group cannot be read."""
    path = protein_path(protein_id)
    group = loc.read_json(f"{path}/zarr.json")
    consolidated = (group.get("consolidated_metadata") or {}).get("metadata") or {}
    changed, metas = False, {}
    for name in LABELLED:
        key = f"{path}/{name}/zarr.json"
        meta = loc.read_json(key)
        if meta.get("data_type") == "string":
            values = _read(loc, meta, f"{path}/{name}")
            codes, attributes = encode_labels(values)
            new = coded_metadata(meta, attributes)
            with quiet_zarr():
                array = zarr.Array(zarr.AsyncArray(new, StorePath(
                    loc.zarr_store(read_only=False), f"{path}/{name}")))
            if len(codes):  # every chunk, all-zero codes too (zarr would skip those)
                written = ChunkWriter(array, fs=None if loc.local else loc.fs).write(0, codes)
                if loc.local and written is not None:
                    fsync_paths([str(written)])  # the data before the metadata naming it
            loc.write_json(key, new)
            meta = new
        elif not is_labelled(meta.get("attributes")):
            raise ValueError(f"{loc.url}/{path}/{name}: neither strings nor label codes "
                             f"(data type {meta.get('data_type')!r})")
        changed |= consolidated.get(name) != meta
        metas[name] = meta
    doc = (group.get("attributes") or {}).get(PROTEIN_DOC)
    if changed:
        children = sorted(consolidated) or list(LABELLED)
        attrs = write_group_metadata(loc / path, {PROTEIN_DOC: doc}, children,
                                     record_digests=PROTEIN_DOC)
        doc = attrs[PROTEIN_DOC]
    for name in LABELLED:  # the old string chunks (step 4), also after an interrupted run
        if metas[name].get("chunk_key_encoding") == MIGRATED_KEY_ENCODING \
                and loc.exists(f"{path}/{name}/c"):
            loc.remove(f"{path}/{name}/c", recursive=True)
            changed = True
    return json.loads(json.dumps(doc)) if changed else None


def _read(loc: Location, meta: dict, path: str) -> np.ndarray:
    with quiet_zarr():
        values = ChunkReader(ArrayMeta(meta, loc.zarr_store(read_only=True), path),
                             fs=None if loc.local else loc.fs).read_all()
    if values.shape != tuple(meta["shape"]):
        raise ProtstoreError(f"{loc.url}/{path}: {values.shape} values for shape "
                             f"{tuple(meta['shape'])}")
    return values
