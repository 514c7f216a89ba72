"""Check a store end to end: metadata against the schemas, then every chunk's invariants."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from ..progress import progress_bar

from ..errors import ChunkError, ProtstoreError
from .chunks import ChunkReader, chunk_key
from ..vocab import N_SPECIES, SPECIES_ID
from .layout import PER_ATOM, PER_FRAME, PROTEIN_DOC, PROTEINS, STAGING, STORE_DOC, protein_path
from .digest import metadata_mismatch
from ..location import decode_json
from ..schemas import check_document
from .reader import Store


@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warning"
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


def verify_store(store: Store, *, progress: bool = False) -> list[Finding]:
    """Every problem found in the store's own data and metadata, errors and warnings; an empty
    list means they are sound (the plans are checked by
    :func:`protstore.batching.verify.verify_plans`)."""
    findings: list[Finding] = []
    try:
        check_document(store.doc, "store", f"{store.url} (root attrs[{STORE_DOC!r}])")
    except ProtstoreError as exc:
        findings.append(Finding("error", store.url, str(exc)))
    if store.format_version < 2:
        findings.append(Finding("warning", store.url,
                                "a format-1 store (the root's zarr.json lists every node): "
                                "`protstore validate --repair` (or any write) migrates it to "
                                "the catalog"))
    elif store.format_version < 3:
        findings.append(Finding("warning", store.url,
                                "a format-2 store (resname, chain and xyz as variable-length "
                                "strings, which tensorstore and zarrs do not read): `protstore "
                                "validate --repair` (or any write) migrates it to label codes"))
    groups = set(store._protein_groups())
    proteins = [p for p in store.proteins if p in groups]
    for name, what in store.catalog_damage.items():
        findings.append(Finding("error", f"{store.url}/catalog/{name}",
                                f"damaged catalog segment ({what}); `protstore validate "
                                f"--repair` replaces it"))
    findings.extend(_verify_listing(store))
    if store.location.listdir(STAGING):
        findings.append(Finding("warning", f"{store.url}/{STAGING}",
                                "staging groups (ignored by readers): writes in progress, or "
                                "left by a dead writer, which `protstore validate --repair` "
                                "removes"))
    for pid in progress_bar(proteins, desc="validate", unit="protein", disable=not progress):
        findings.extend(_verify_protein(store, pid))
    return findings


def _verify_listing(store: Store) -> Iterator[Finding]:
    """Both directions: what the catalog lists against the groups there are."""
    on_disk = set(store._protein_groups())
    for pid in store.proteins:
        if pid not in on_disk:
            yield Finding("error", f"{store.url}/{protein_path(pid)}",
                          "listed in the catalog but its group (or its zarr.json) is gone; "
                          "`protstore validate --repair` drops it from the catalog, then ingest "
                          "it again")
    for pid in sorted(on_disk - set(store.proteins)):
        yield Finding("warning", f"{store.url}/{protein_path(pid)}",
                      "a complete protein group the catalog does not list (a commit "
                      "interrupted before its catalog entry); readers ignore it until "
                      "`protstore validate --repair` (or ingesting it again) lists it")
    if store.local:
        base = store.root / PROTEINS
        for entry in sorted(base.iterdir()) if base.is_dir() else []:
            if entry.is_dir() and not (entry / "zarr.json").is_file():
                yield Finding("error", f"{store.url}/{protein_path(entry.name)}",
                              "a protein directory without zarr.json (damaged or half removed); "
                              "remove it and ingest the protein again")


def _verify_metadata(store: Store, pid: str) -> Iterator[Finding]:
    """The group's document against the catalog's entry, and each array's metadata (as the
    group consolidates it, and its own ``zarr.json``) against the digests the document
    recorded at commit."""
    where = f"{store.url}/{protein_path(pid)}"
    meta = store.location.read_json(f"{protein_path(pid)}/zarr.json")
    doc = (meta.get("attributes") or {}).get(PROTEIN_DOC)
    if doc != store.protein_doc(pid):
        yield Finding("error", where, "the catalog's entry differs from the group's own document "
                                      "(a commit interrupted before its catalog entry, or a "
                                      "damaged catalog); `protstore validate --repair` rebuilds "
                                      "the catalog from the groups")
    recorded = (doc or {}).get("arrays_metadata") if isinstance(doc, dict) else None
    if not recorded:
        return
    children = (meta.get("consolidated_metadata") or {}).get("metadata") or {}
    changed = metadata_mismatch(recorded, children)
    if changed:
        yield Finding("error", f"{where}/zarr.json", f"consolidated metadata: {changed}")
    names = sorted(recorded)
    try:
        blobs = store.location.read_many(f"{protein_path(pid)}/{n}/zarr.json" for n in names)
    except FileNotFoundError as exc:
        yield Finding("error", where, f"an array's zarr.json is missing ({exc})")
        return
    for name in names:
        own = decode_json(blobs[f"{protein_path(pid)}/{name}/zarr.json"],
                          f"{where}/{name}/zarr.json")
        changed = metadata_mismatch({name: recorded[name]}, {name: own})
        if changed:
            yield Finding("error", f"{where}/{name}/zarr.json", changed)


def _verify_protein(store: Store, pid: str) -> Iterator[Finding]:
    where = f"{store.url}/{protein_path(pid)}"
    try:
        findings = list(_verify_metadata(store, pid))
        if findings:
            yield from findings
            return  # its arrays would be read as something else than was written
        group = store.protein_group(pid)
        doc = group.attrs[PROTEIN_DOC]
        check_document(doc, "protein", where)
    except (ProtstoreError, KeyError, ValueError, TypeError, OSError) as exc:
        yield Finding("error", where, f"unreadable protein metadata: {exc}")
        return
    n, t = doc["n_atoms"], doc["n_frames"]
    expected = {"R": (t, n, 3), "F": (t, n, 3), **{k: (n,) for k in PER_ATOM},
                **{k: (t,) for k in PER_FRAME}}
    arrays = {}
    for name, shape in expected.items():
        if name not in group:
            yield Finding("error", f"{where}/{name}", "array missing")
            continue
        arr = group[name]
        if arr.shape != shape:
            yield Finding("error", f"{where}/{name}", f"shape {arr.shape}, document says {shape}")
            continue
        arrays[name] = arr
    for name in ("R", "F"):
        if name in arrays:
            yield from _verify_vectors(store, arrays[name], f"{where}/{name}")
    for name, array in group.arrays():  # any other array (xyz, or one a user added) decodes too
        if name not in expected:
            try:
                ChunkReader(array, fs=_fs(store)).read_all()
            except Exception as exc:  # noqa: BLE001 - any decode failure is a corrupt chunk
                yield Finding("error", f"{where}/{name}", f"unreadable chunk: {exc}")
    small = {}
    for name in set(arrays) - {"R", "F"}:
        try:
            small[name] = ChunkReader(arrays[name], fs=_fs(store)).read_all()  # a missing chunk is an error
        except Exception as exc:  # noqa: BLE001 - any decode failure is a corrupt chunk
            yield Finding("error", f"{where}/{name}", f"unreadable chunk: {exc}")
    if "species" in small:
        sp = np.asarray(small["species"])
        if ((sp < 0) | (sp >= N_SPECIES)).any():
            yield Finding("error", f"{where}/species", f"ids outside 0..{N_SPECIES - 1}")
        elif "resname" in small:
            derived = np.array([SPECIES_ID.get(str(r), -1) for r in small["resname"]])
            bad = np.flatnonzero(derived != sp)
            if len(bad):
                yield Finding("error", f"{where}/species",
                              f"atom {int(bad[0])}: species {int(sp[bad[0]])} does not match "
                              f"resname {small['resname'][bad[0]]!s}")
    if "temperature" in small and doc["temperatures"]:
        seen = {float(x) for x in np.unique(small["temperature"]) if np.isfinite(x)}
        declared = {float(x) for x in doc["temperatures"] if x is not None}
        if seen != declared:
            yield Finding("error", f"{where}/temperature",
                          f"values {sorted(seen)} differ from document {sorted(declared)}")


def _fs(store: Store):
    return None if store.local else store.location.fs


def _verify_vectors(store: Store, arr, where: str) -> Iterator[Finding]:
    reader = ChunkReader(arr, fs=_fs(store))
    chunk, meta = reader.chunk, arr.metadata.to_dict()
    for k in range(reader.n_chunks):
        key = f"{where}/{chunk_key(meta, (k,) + (0,) * (arr.ndim - 1))}"
        try:
            block = reader.read(k)
        except ChunkError as exc:
            yield Finding("error", key, exc.reason)
            continue
        except Exception as exc:  # noqa: BLE001 - any decode failure is a corrupt chunk
            yield Finding("error", key, f"corrupt chunk: {type(exc).__name__}: {exc}")
            continue
        if block.dtype != np.float32:
            yield Finding("error", key, f"dtype {block.dtype}, expected float32")
        if not np.isfinite(block).all():
            frame = k * chunk + int(np.flatnonzero(~np.isfinite(block).reshape(len(block), -1)
                                                   .all(axis=1))[0])
            yield Finding("error", key, f"non-finite value at frame {frame}")
