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
"""

from __future__ import annotations

import os
import warnings
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import jax
import numpy as np
import zarr

from . import __version__
from .errors import CheckpointError, DocumentError
from .store.chunks import missing_chunks
from .store.quiet import quiet_zarr
from .store.schemas import check_document
from .store.location import Location, as_location

CHECKPOINT_DOC = "protstore_checkpoint"
CHECKPOINTS_DIR = "checkpoints"
# 2: every chunk of every leaf is written, so a missing chunk is damage (1: protstore < 0.5
# left out chunks equal to the fill value, as zarr does by default)
CHECKPOINT_VERSION = 2


@dataclass(frozen=True)
class Checkpoint:
    path: Location
    attrs: dict
    params: dict
    opt_state: object | None = None


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


def _write_tree(group: zarr.Group, tree: dict) -> None:
    for key, value in tree.items():
        if isinstance(value, dict):
            _write_tree(group.create_group(key), value)
        else:
            a = np.asarray(value)
            group.create_array(key, shape=a.shape, dtype=a.dtype, chunks=a.shape,
                               config={"write_empty_chunks": True})[...] = a


def _read_tree(group: zarr.Group, where: str, complete: bool = True) -> dict:
    """The nested dict of arrays under ``group``; a leaf that does not decode, or (``complete``:
    a checkpoint that writes every chunk) misses a chunk, is a CheckpointError naming it, never
    zeros in its place."""
    out = {}
    for key, node in sorted(group.members()):
        path = f"{where}/{key}"
        if isinstance(node, zarr.Group):
            out[key] = _read_tree(node, path, complete)
            continue
        missing = missing_chunks(node) if complete else []
        if missing:
            raise CheckpointError(f"{path}: chunk {missing[0]} of this leaf is missing")
        try:
            out[key] = node[...]
        except Exception as exc:  # noqa: BLE001 - any decode failure is a damaged leaf
            raise CheckpointError(f"{path}: leaf does not decode "
                                  f"({type(exc).__name__}: {exc})") from None
    return out


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
    if not path.local and path.exists("zarr.json"):
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
    check_document(doc, "checkpoint", str(path))
    # local: written beside and renamed into place; object storage: written in place with the
    # document last (rewriting the root's zarr.json), which is what makes it a checkpoint
    where = path.sibling(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}") if path.local else path
    try:
        with quiet_zarr():
            root = zarr.open_group(where.zarr_store(read_only=False), mode="w-", zarr_format=3)
            _write_tree(root.create_group("params"), params)
            if opt_state is not None:
                g = root.create_group("opt_state")
                for i, (_, leaf) in enumerate(leaves_with_path):
                    _write_tree(g, {f"{i:05d}": leaf})
            root.attrs[CHECKPOINT_DOC] = doc
        if path.local:
            where.publish(path)
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
    with quiet_zarr():
        root = zarr.open_group(path.zarr_store(), mode="r")
        complete = attrs["version"] >= 2
        params = _read_tree(root["params"], f"{path}/params", complete)
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
            flat = _read_tree(stored, f"{path}/opt_state", complete)
            values = []
            for i, ref in enumerate(leaves):
                value = flat[f"{i:05d}"]
                if value.shape != np.shape(ref):
                    raise CheckpointError(f"{path}: optimizer state leaf "
                                          f"{attrs['opt_state_paths'][i]} has shape {value.shape}, "
                                          f"expected {np.shape(ref)}")
                values.append(value)
            opt_state = jax.tree_util.tree_unflatten(treedef, values)
    return Checkpoint(path, attrs, params, opt_state)


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
