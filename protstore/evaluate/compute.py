"""Force errors of a model on stored frames as a lazy, dask-backed xarray Dataset.

Work is split into tasks of one protein × one frame block. A task reads its frames from the
store, pads them to its bucket's N_max and to ``frame_block`` frames (static shapes: one
compilation per bucket shape), and computes forces with ``jax.jit(jax.vmap(force))``. Only
real beads and frames come back. Memory per task is bounded by the block size; reductions and
the Zarr write stream over tasks.

The Dataset (dims ``sample``, ``atom``, ``xyz``; ``atom`` padded with NaN to the longest
protein evaluated):

- ``dF`` (sample, atom, xyz) float32: F_pred - F_ref, kcal/mol/Å; ``F_ref`` the same shape;
- ``sq_error`` (sample, atom) float64: ||F_pred - F_ref||², (kcal/mol/Å)²;
- coords on ``sample``: ``protein``, ``frame``, ``temperature``, ``bucket``;
- coords on (sample, atom), from each sample's own protein: ``species``, ``resid``,
  ``position`` (0-based from the N-terminus of the bead's chain), ``position_from_c`` (0 at
  the chain's C-terminal bead),
  and ``mask`` (real bead); on padding the pad values of :mod:`protstore.batching.sample`
  (species PAD_ID, resid -1), -1 for the positions and False for the mask.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ..batching import BucketPlan, check_plan
from ..batching.sample import BEAD_FIELDS
from ..errors import ProtstoreError
from ..frozen import FrozenMap, freeze, thaw
from ..model.spec import ModelSpec
from ..store import Store
from ..store.lazy import LazyFrames
from ..store.layout import chain_codes
from ..vocab import VOCABULARY

RMSE_CONVENTION = ("per-bead RMSE_i = sqrt(mean over frames of ||F_pred - F_ref||^2) (vector "
                   "norm, kcal/mol/Å); per-component value = RMSE_i / sqrt(3); per type/position/"
                   "protein/temperature: pooled RMSE = sqrt(sum of squared errors / count)")


@dataclass(frozen=True)
class ProteinSelection:
    """One protein's frames to evaluate and the padded bead count of its shape."""

    protein: str
    frames: np.ndarray
    n_atoms: int
    n_max: int
    bucket: int


def select(store: Store, *, plan: BucketPlan | None = None, split: str = "val",
           proteins: list[str] | None = None, n_frames: int | None = None,
           seed: int = 0) -> list[ProteinSelection]:
    """The frames to evaluate: the plan's ``split`` ('test', 'val', 'train' or 'all') of ``proteins``
    (default all of the plan's), optionally ``n_frames`` per protein drawn with ``seed``."""
    lengths = store.lengths()
    if plan is not None:
        check_plan(store, plan)
    if plan is None:
        if split != "all":
            raise ProtstoreError(f"--split {split} needs --plan (the plan holds the split)")
        chosen = proteins or list(store.proteins)
    else:
        chosen = proteins or plan.proteins
    out = []
    for pid in chosen:
        if pid not in lengths.index:
            raise ProtstoreError(f"protein {pid!r} is not in the store")
        n_total = int(store.protein_doc(pid)["n_frames"])
        if plan is not None and pid in plan.lengths:
            frames = plan.part_frames(pid, split)
            bucket = next(b for b in plan.buckets if pid in b.proteins)
            n_max, k = bucket.n_max, bucket.index
        else:
            if plan is not None and split != "all":
                raise ProtstoreError(f"protein {pid!r} is not in plan {plan.name!r}")
            frames, n_max, k = np.arange(n_total), int(lengths[pid]), -1
        if n_frames is not None and len(frames) > n_frames:
            rng = np.random.default_rng([seed, zlib.crc32(pid.encode())])
            frames = np.sort(rng.choice(frames, n_frames, replace=False))
        if len(frames):
            out.append(ProteinSelection(pid, frames, int(lengths[pid]), n_max, k))
    if not out:
        raise ProtstoreError(f"no frames to evaluate (split {split!r})")
    return out


@functools.lru_cache(maxsize=8)
def _force_fn(model: ModelSpec, mode: str):
    """The jitted batch force function, with the model's neighbour census in the same program
    (none for the priors alone or a model without one): ``(params, R, species, resid, chain,
    mask) -> (F [B, N, 3], census)``, census ``(counts [B], capacity [B])`` or None. One per
    model and mode per process; jax caches the compilation per shape."""
    import jax

    from ..model import batch_census, batch_forces, total_energy

    built = model.load()
    forces = batch_forces(total_energy(built, mode))
    census = batch_census(built) if mode != "prior-only" else None

    def run(params, R, species, resid, chain, mask):
        F = forces(params, R, species, resid, chain, mask)
        return F, None if census is None else census(params, R, mask)

    return jax.jit(run)


def protein_static(store: Store, pid: str) -> dict:
    """Per-bead ``species``, ``resid``, ``chain`` (codes) and per-frame ``temperature``."""
    readers = store.protein_readers(pid)
    return {"species": readers["species"].read_all().astype(np.int32, copy=False),
            "resid": readers["resid"].read_all().astype(np.int32, copy=False),
            "chain": chain_codes(readers["chain"].read_all()),
            "temperature": readers["temperature"].read_all().astype(np.float64)}


@functools.lru_cache(maxsize=4)
def _store(url: str, storage_options: FrozenMap, version: str | None = None) -> Store:
    """The store (at ``version``: the one the caller read), opened once per process (dask
    workers open it on their first task)."""
    from ..store import open_store

    return open_store(url, storage_options=thaw(storage_options) or None, version=version)


def forces_block(url: str, storage_options: FrozenMap, pid: str, frames: np.ndarray,
                 n_max: int, frame_block: int, static: dict, params: dict, model: ModelSpec,
                 mode: str, version: str | None = None) -> np.ndarray:
    """[len(frames), n_atoms, 6] float32: F_pred - F_ref (first 3) and F_ref (last 3).

    Frames are read through the store's API, as the loader reads them, and padded as
    :mod:`protstore.batching.sample` defines a padded sample (``frame_block`` samples of
    ``n_max`` beads: one compilation per bucket shape). ``static``: the protein's per-bead
    ``species``, ``resid``, ``chain`` (chain codes); ``storage_options``: the store's, frozen
    (:func:`protstore.frozen.freeze`); ``version``: the store version read (None: newest)."""
    readers = _store(url, storage_options, version).protein_readers(pid)
    R, F = (LazyFrames(readers[name])[frames] for name in ("R", "F"))
    b, n = R.shape[:2]
    Rp = BEAD_FIELDS["R"].fill((frame_block, n_max))
    Rp[:b, :n] = R
    Rp[b:, :n] = R[:1]  # padded samples: a copy of a real frame, dropped below
    rows = {key: np.broadcast_to(BEAD_FIELDS[key].padded(values, n_max), (frame_block, n_max))
            for key, values in (("species", static["species"]), ("resid", static["resid"]),
                                ("chain", static["chain"]), ("mask", np.ones(n)))}
    F_pred, census = _force_fn(model, mode)(
        params, Rp, rows["species"], rows["resid"], rows["chain"], rows["mask"])
    if census is not None:
        from ..model.energy import neighbor_overflow, overflow_message

        counts, capacity = np.asarray(census[0])[:b], np.asarray(census[1])[:b]
        i = neighbor_overflow(counts, capacity)
        if i is not None:
            raise ProtstoreError(
                f"protein {pid} frame {int(frames[i])}: "
                f"{overflow_message(int(counts[i]), int(capacity[i]))}: these params cannot give "
                f"a smooth energy for this frame (a model trained with a larger --model-option "
                f"max_neighbors can)")
    F_pred = np.asarray(F_pred)[:b, :n]
    return np.concatenate([F_pred - F, F], axis=-1).astype(np.float32)


def chain_positions(chain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each bead's 0-based index from the N-terminus and from the C-terminus of its chain."""
    pos, from_c = np.zeros(len(chain), np.int64), np.zeros(len(chain), np.int64)
    for c in np.unique(chain):
        idx = np.flatnonzero(chain == c)
        pos[idx] = np.arange(len(idx))
        from_c[idx] = len(idx) - 1 - np.arange(len(idx))
    return pos, from_c


def error_dataset(store: Store, selection: list[ProteinSelection], params: dict, *,
                  model: ModelSpec, mode: str = "full", frame_block: int = 32) -> xr.Dataset:
    """The lazy Dataset of force errors (module docstring) over ``selection`` by ``model``."""
    storage_options = freeze(store.storage_options or {}, f"{store.url} storage options")
    n_all = max(s.n_atoms for s in selection)
    params_task = dask.delayed(params, pure=True, traverse=False)
    blocks, coords = [], {k: [] for k in ("protein", "frame", "temperature", "bucket")}
    atom_coords = {k: [] for k in ("species", "resid", "position", "position_from_c", "mask")}
    for s in selection:
        static = protein_static(store, s.protein)
        beads = {k: static[k] for k in ("species", "resid", "chain")}
        parts = []
        for start in range(0, len(s.frames), frame_block):
            fr = s.frames[start:start + frame_block]
            task = dask.delayed(forces_block, pure=True)(
                store.url, storage_options, s.protein, fr, s.n_max, frame_block, beads,
                params_task, model, mode, store.read_at,
                dask_key_name=f"forces-{s.protein}-{start}-{mode}")
            parts.append(da.from_delayed(task, shape=(len(fr), s.n_atoms, 6), dtype=np.float32))
        arr = da.concatenate(parts, axis=0)
        blocks.append(da.pad(arr, ((0, 0), (0, n_all - s.n_atoms), (0, 0)),
                             constant_values=np.nan).rechunk({1: -1}))
        m = len(s.frames)
        coords["protein"].append(np.full(m, s.protein, dtype=object))
        coords["frame"].append(s.frames)
        coords["temperature"].append(static["temperature"][s.frames])
        coords["bucket"].append(np.full(m, s.bucket))
        chunks = (arr.chunks[0], (n_all,))  # aligned with the force blocks
        pos, from_c = chain_positions(static["chain"])
        per_atom = {"species": (static["species"], BEAD_FIELDS["species"].pad),
                    "resid": (static["resid"], BEAD_FIELDS["resid"].pad),
                    "position": (pos, -1), "position_from_c": (from_c, -1),
                    "mask": (np.ones(s.n_atoms, bool), False)}
        for key, (row, fill) in per_atom.items():
            row = np.pad(row, (0, n_all - s.n_atoms), constant_values=fill)
            atom_coords[key].append(da.broadcast_to(row, (m, n_all), chunks=chunks))
    data = da.concatenate(blocks, axis=0)
    dF = data[..., :3]
    dims = ("sample", "atom")
    ds = xr.Dataset(
        {"dF": (dims + ("xyz",), dF), "F_ref": (dims + ("xyz",), data[..., 3:]),
         "sq_error": (dims, (dF.astype(np.float64) ** 2).sum(axis=-1))},
        # strings as objects: Zarr v3 stores them as its specified variable-length type
        coords={"protein": ("sample", np.concatenate(coords["protein"]).astype(object)),
                "frame": ("sample", np.concatenate(coords["frame"])),
                "temperature": ("sample", np.concatenate(coords["temperature"])),
                "bucket": ("sample", np.concatenate(coords["bucket"])),
                "xyz": np.array(["x", "y", "z"], dtype=object),
                **{k: (dims, da.concatenate(v, axis=0)) for k, v in atom_coords.items()}})
    ds["dF"].attrs = {"long_name": "F_pred - F_ref", "units": "kcal/mol/Å"}
    ds["F_ref"].attrs = {"long_name": "reference (mapped) force", "units": "kcal/mol/Å"}
    ds["sq_error"].attrs = {"long_name": "||F_pred - F_ref||^2", "units": "(kcal/mol/Å)^2"}
    ds.attrs = {"mode": mode, "model": model.factory, "aa_names": list(VOCABULARY),
                "convention": RMSE_CONVENTION, "store": store.url,
                **({"store_version": store.version} if store.version else {})}
    return ds
