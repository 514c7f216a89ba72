"""Parameter pytrees <-> Zarr checkpoint groups; a run's checkpoints listed by step.

A checkpoint is a directory that is a Zarr v3 group (``xr``/``zarr`` can open it without
protstore)::

    step_00001200/
      zarr.json                 attrs["protstore_checkpoint"]: step, epoch, val_rmse, ... (schemas/checkpoint.json)
      params/prior/bond/k       one array per leaf, at the path of the nested params dict
      params/model/embed        ...
      opt_state/00000 ...       optimizer-state leaves in tree order (resumable checkpoints only)

On a local disk a checkpoint is written to a hidden sibling and renamed into place; on object
storage it is written in place with its document last (the root ``zarr.json`` rewritten with
it): a group without the document is not a checkpoint (listed with a warning, replaced by the
next write of that step). So a checkpoint exists whole or not at all, and an existing one is
never overwritten. Paths may be local or fsspec URLs.

Every byte is checked (format version 3): each chunk ends with a CRC32C of its bytes (the
store's ``crc32c`` codec), the document records a digest of each leaf (dtype, shape and bytes,
``leaves``), a short digest of each of its other fields (``fields_digest``) and one of the
whole document (``digest``). :func:`read_attrs` (so :func:`list_checkpoints`, hence ``best/``
selection, resume and EMA weighting) checks the document, :func:`read_checkpoint` also every
leaf it reads; a mismatch is a :class:`CheckpointError` naming the checkpoint and the leaf or
field. Checkpoints written before version 3 have none of these: they read as before, trusted as
far as zarr's own decoding goes (``Checkpoint.verified`` is False).
"""

from __future__ import annotations

import json
import os
import warnings
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import jax
import numpy as np
import zarr

from ._version import __version__
from .errors import CheckpointError, ConfigError, DocumentError
from .store.chunks import missing_chunks
from .store.digest import array_digest, json_digest
from .store.layout import Encoding
from .store.quiet import quiet_zarr
from .schemas import check_document
from .location import Location, as_location

CHECKPOINT_DOC = "protstore_checkpoint"
CHECKPOINTS_DIR = "checkpoints"
# 3: chunks checksummed, leaves and fields digested (see the module docstring); 2: every chunk
# of every leaf is written, so a missing chunk is damage (1: protstore < 0.5 left out chunks
# equal to the fill value, as zarr does by default)
CHECKPOINT_VERSION = 3
DIGESTS = ("digest", "fields_digest")  # the fields that are not digested field by field


@dataclass(frozen=True)
class Checkpoint:
    path: Location
    attrs: dict
    params: dict
    opt_state: object | None = None
    verified: bool = False  # every leaf read matched its digest (False: written before 0.7)


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def _check_tree(params, where: str) -> None:
    if not isinstance(params, dict):
        raise CheckpointError(f"{where}: params must be a nested dict of arrays")
    for key, value in params.items():
        if not isinstance(key, str) or not key or "/" in key or key.startswith("."):
            raise CheckpointError(f"{where}: params key {key!r} is not a valid group name")
        if isinstance(value, dict):
            _check_tree(value, f"{where}/{key}")


def _write_tree(group: zarr.Group, tree: dict, digests: dict[str, str], rel: str) -> None:
    """Write the leaves of ``tree`` under ``group`` (one chunk each, CRC32C-checked), adding
    ``{leaf path relative to the checkpoint: digest}`` to ``digests``."""
    codecs = Encoding(checksum=True).codecs_for_coordinates()
    for key, value in tree.items():
        if isinstance(value, dict):
            _write_tree(group.create_group(key), value, digests, f"{rel}/{key}")
        else:
            a = np.asarray(value)
            digests[f"{rel}/{key}"] = array_digest(a)
            group.create_array(key, shape=a.shape, dtype=a.dtype, chunks=a.shape,
                               config={"write_empty_chunks": True}, **codecs)[...] = a


def _read_tree(group: zarr.Group, where: str, complete: bool = True,
               digests: dict[str, str] | None = None, rel: str = "") -> dict:
    """The nested dict of arrays under ``group``; a leaf that does not decode, or (``complete``:
    a checkpoint that writes every chunk) misses a chunk, or (``digests``: ``{leaf path: digest}``
    of a version-3 checkpoint) differs from its digest, is a CheckpointError naming it, never
    zeros or other values in its place."""
    out = {}
    try:
        members = sorted(group.members())
    except Exception as exc:  # noqa: BLE001 - a damaged zarr.json below: a damaged checkpoint
        raise CheckpointError(f"{where}: metadata of a leaf or group does not decode "
                              f"({type(exc).__name__}: {exc})") from None
    for key, node in members:
        path, leaf = f"{where}/{key}", f"{rel}/{key}"
        if isinstance(node, zarr.Group):
            out[key] = _read_tree(node, path, complete, digests, leaf)
            continue
        missing = missing_chunks(node) if complete else []
        if missing:
            raise CheckpointError(f"{path}: chunk {missing[0]} of this leaf is missing")
        try:
            out[key] = node[...]
        except Exception as exc:  # noqa: BLE001 - any decode failure is a damaged leaf
            raise CheckpointError(f"{path}: leaf does not decode "
                                  f"({type(exc).__name__}: {exc})") from None
        if digests is not None:
            if leaf not in digests:
                raise CheckpointError(f"{path}: leaf is not recorded in the checkpoint's "
                                      f"document (added or renamed after it was written)")
            if array_digest(out[key]) != digests[leaf]:
                raise CheckpointError(f"{path}: leaf differs from its digest (dtype "
                                      f"{out[key].dtype.str}, shape {out[key].shape}): damaged "
                                      f"or edited after it was written")
    return out


def _check_all_read(digests: dict[str, str] | None, prefix: str, tree: dict, where) -> None:
    """Raise naming a leaf that the document records under ``prefix`` but was not read."""
    if digests is None:
        return
    def paths(node, rel):
        for key, value in node.items():
            yield from paths(value, f"{rel}/{key}") if isinstance(value, dict) else (f"{rel}/{key}",)

    read = set(paths(tree, prefix))
    gone = sorted(k for k in digests if k.startswith(prefix + "/") and k not in read)
    if gone:
        raise CheckpointError(f"{where}: leaf {gone[0]} is recorded in the checkpoint's "
                              f"document but is missing")


def document_digests(doc: dict) -> dict:
    """``{"fields_digest": {field: short digest}, "digest": digest of the rest}`` of a
    checkpoint document (whatever digests it already holds left out)."""
    body = {k: v for k, v in doc.items() if k not in DIGESTS}
    fields = {k: json_digest(v, short=True) for k, v in sorted(body.items())}
    return {"fields_digest": fields, "digest": json_digest({**body, "fields_digest": fields})}


def check_document_digest(doc: dict, where) -> bool:
    """Raise :class:`CheckpointError` naming the field that differs from the digests the
    document carries; True when checked, False for a document written before the digests
    (version < 3, none present)."""
    if "digest" not in doc and "fields_digest" not in doc:
        if doc.get("version", 0) >= 3:
            raise CheckpointError(f"{where}: checkpoint document has no digest (field digest "
                                  f"removed or damaged)")
        return False
    fields, digest = doc.get("fields_digest"), doc.get("digest")
    if not isinstance(fields, dict):
        raise CheckpointError(f"{where}: checkpoint document field fields_digest is damaged")
    body = {k: v for k, v in doc.items() if k not in DIGESTS}
    for name in sorted(set(body) | set(fields)):
        if name not in body:
            raise CheckpointError(f"{where}: checkpoint document field {name!r} is missing "
                                  f"(damaged or edited)")
        if name not in fields or json_digest(body[name], short=True) != fields[name]:
            raise CheckpointError(f"{where}: checkpoint document field {name!r} differs from "
                                  f"its digest (damaged or edited)")
    if digest != json_digest({**body, "fields_digest": fields}):
        raise CheckpointError(f"{where}: checkpoint document field 'digest' is damaged")
    return True


def leaf_signature(params: dict) -> dict[str, tuple]:
    """``{leaf path: shape}`` of a params pytree."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    return {jax.tree_util.keystr(p): tuple(np.shape(x)) for p, x in leaves}


def check_same_structure(ref: dict[str, tuple], params: dict, where: str,
                         ref_name: str = "the first checkpoint") -> None:
    """Raise naming the first leaf that is missing, extra, or of another shape than in the
    reference signature ``{leaf path: shape}`` (from ``ref_name``)."""
    got = leaf_signature(params)
    for key in sorted(set(ref) | set(got)):
        if key not in got:
            raise CheckpointError(f"{where}: leaf params{key} is missing")
        if key not in ref:
            raise CheckpointError(f"{where}: leaf params{key} is not in {ref_name}")
        if ref[key] != got[key]:
            raise CheckpointError(f"{where}: leaf params{key} has shape {got[key]}, "
                                  f"{ref_name} has {ref[key]}")


def is_finite(tree) -> bool:
    return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree)
               if np.issubdtype(np.asarray(x).dtype, np.inexact))


def write_checkpoint(path: str | os.PathLike | Location, params: dict, attrs: dict, *,
                     opt_state=None) -> Location:
    """Write ``params`` (and ``opt_state``) as the checkpoint group ``path``; never overwrites.

    ``attrs`` needs at least kind, step, epoch and model; format, finite and created are filled.
    """
    path = as_location(path)
    if path.local and path.exists():
        raise CheckpointError(f"{path}: checkpoint exists; checkpoints are never overwritten")
    if not path.local and path.exists():
        try:
            read_attrs(path)
        except CheckpointError:
            path.remove("", recursive=True)  # a killed write's leftovers: not a checkpoint
        else:
            raise CheckpointError(f"{path}: checkpoint exists; checkpoints are never overwritten")
    _check_tree(params, str(path))
    params = jax.device_get(params)
    doc = {"format": CHECKPOINT_DOC, "version": CHECKPOINT_VERSION, "created_by": f"protstore {__version__}",
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "finite": is_finite(params) and (opt_state is None or is_finite(opt_state)), **attrs}
    if opt_state is not None:
        leaves_with_path, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(opt_state))
        doc["opt_state_paths"] = [jax.tree_util.keystr(p) for p, _ in leaves_with_path]
    for key in ("leaves", *DIGESTS):
        doc.pop(key, None)  # attrs copied from another checkpoint: digests of its own
    check_document(doc, "checkpoint", str(path))
    # local: written beside and renamed into place; object storage: made in memory, then its
    # objects uploaded at once (zarr would make each array in turn, several requests each),
    # the root's zarr.json with the document last, which is what makes it a checkpoint
    where = path.sibling(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}") if path.local else path
    objects: dict = {}
    try:
        with quiet_zarr():
            store = where.zarr_store(read_only=False) if path.local else \
                zarr.storage.MemoryStore(objects)
            root = zarr.open_group(store, mode="w-", zarr_format=3)
            leaves: dict[str, str] = {}
            _write_tree(root.create_group("params"), params, leaves, "params")
            if opt_state is not None:
                g = root.create_group("opt_state")
                for i, (_, leaf) in enumerate(leaves_with_path):
                    _write_tree(g, {f"{i:05d}": leaf}, leaves, "opt_state")
            doc = json.loads(json.dumps(dict(doc, leaves=leaves), allow_nan=False))
            doc.update(document_digests(doc))
            check_document(doc, "checkpoint", str(path))
            root.attrs[CHECKPOINT_DOC] = doc
        if path.local:
            where.publish(path)
        else:
            document = objects.pop("zarr.json")
            path.write_many({key: value.to_bytes() for key, value in objects.items()})
            path.write_bytes("zarr.json", document.to_bytes())
    except OSError as exc:
        where.remove("", recursive=True)
        raise CheckpointError(f"{path}: cannot write the checkpoint: {exc.strerror or exc}"
                              f"{f' ({exc.filename})' if exc.filename else ''}") from None
    except BaseException:
        where.remove("", recursive=True)
        raise
    return path


def read_attrs(path: str | os.PathLike | Location) -> dict:
    """The checkpoint document of ``path`` (schema-checked)."""
    path = as_location(path)
    try:
        with quiet_zarr():
            doc = path.read_json("zarr.json")["attributes"][CHECKPOINT_DOC]
    except Exception as exc:  # noqa: BLE001 - any failure means: not a readable checkpoint
        raise CheckpointError(f"{path}: not a protstore checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{path}: not a protstore checkpoint (its document is not an "
                              f"object)")
    check_document_digest(doc, path)
    try:
        check_document(dict(doc), "checkpoint", str(path))
    except DocumentError as exc:
        raise CheckpointError(str(exc)) from None
    return dict(doc)


def read_checkpoint(path: str | os.PathLike | Location, *, opt_template=None) -> Checkpoint:
    """Read a checkpoint; with ``opt_template`` (e.g. ``optimizer.init(params)``, or a function
    of the stored params that returns it, such as ``optimizer.init``) also its optimizer state,
    checked leaf by leaf against the template's structure and shapes."""
    path = as_location(path)
    attrs = read_attrs(path)
    try:
        return _read_checkpoint(path, attrs, opt_template)
    except (CheckpointError, ConfigError):
        raise
    except Exception as exc:  # noqa: BLE001 - metadata zarr cannot read: a damaged checkpoint
        raise CheckpointError(f"{path}: damaged checkpoint metadata "
                              f"({type(exc).__name__}: {exc})") from None


def _read_checkpoint(path: Location, attrs: dict, opt_template) -> Checkpoint:
    with quiet_zarr():
        root = zarr.open_group(path.zarr_store(), mode="r")
        complete = attrs["version"] >= 2
        digests = attrs.get("leaves") if attrs["version"] >= 3 else None
        if "params" not in root:
            raise CheckpointError(f"{path}: no params group (damaged or not a checkpoint)")
        params = _read_tree(root["params"], f"{path}/params", complete, digests, "params")
        _check_all_read(digests, "params", params, path)
        opt_state = None
        if opt_template is not None:
            if "opt_state" not in root:
                raise CheckpointError(f"{path}: no optimizer state (not a resumable checkpoint)")
            if callable(opt_template):
                opt_template = opt_template(params)
            leaves, treedef = jax.tree_util.tree_flatten(opt_template)
            stored = root["opt_state"]
            if len(list(stored.array_keys())) != len(leaves):
                raise CheckpointError(f"{path}: optimizer state has {len(list(stored.array_keys()))} "
                                      f"leaves, the optimizer expects {len(leaves)}")
            flat = _read_tree(stored, f"{path}/opt_state", complete, digests, "opt_state")
            _check_all_read(digests, "opt_state", flat, path)
            values = []
            for i, ref in enumerate(leaves):
                value = flat[f"{i:05d}"]
                if value.shape != np.shape(ref):
                    raise CheckpointError(f"{path}: optimizer state leaf "
                                          f"{attrs['opt_state_paths'][i]} has shape {value.shape}, "
                                          f"expected {np.shape(ref)}")
                values.append(value)
            opt_state = jax.tree_util.tree_unflatten(treedef, values)
    return Checkpoint(path, attrs, params, opt_state, verified=digests is not None)


def list_checkpoints(path: str | os.PathLike | Location, *,
                     warn=warnings.warn) -> list[tuple[Location, dict]]:
    """(path, attrs) of the valid, finite checkpoints under ``path`` ordered by stored step.

    ``path`` is a run directory (its ``checkpoints/`` is searched) or a directory of checkpoint
    groups. Anything else there (unreadable, failing the schema, non-finite) is skipped with a
    warning naming it; hidden staging directories are ignored.
    """
    path = as_location(path)
    names = path.listdir(CHECKPOINTS_DIR)
    base = path / CHECKPOINTS_DIR if names else path
    if not names:
        names = path.listdir()
        if not names and not path.exists():
            raise CheckpointError(f"{path}: no such run or checkpoint directory")
    found = []
    for name in names:
        child = base / name
        if name.startswith(".") or (child.local and not os.path.isdir(child.path)):
            continue
        try:
            attrs = read_attrs(child)
        except CheckpointError as exc:
            warn(f"skipping {child}: {exc}")
            continue
        if not attrs["finite"]:
            warn(f"skipping {child}: non-finite (diverged) state")
            continue
        found.append((child, attrs))
    found.sort(key=lambda item: item[1]["step"])
    steps = [a["step"] for _, a in found]
    if len(set(steps)) != len(steps):
        dup = sorted({s for s in steps if steps.count(s) > 1})
        raise CheckpointError(f"{base}: several checkpoints claim step {dup[0]}")
    return found
