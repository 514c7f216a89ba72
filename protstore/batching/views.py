"""Lazy bucket views: every sample of a bucket as one padded-on-read ``xr.Dataset``."""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from ..errors import ProtstoreError
from ..store import Store
from . import accessor  # noqa: F401  (registers ds.prot)
from .sample import BEAD_FIELDS
from .plan import BucketPlan, check_plan

PARTS = ("train", "val", "all")


def bucket_view(store: Store, plan: BucketPlan, k: int, split: str = "all") -> xr.Dataset:
    """Lazy Dataset of bucket ``k``: dims ``(sample, atom, xyz)``, atom = the bucket's N_max.

    Data: R [Å], F [kcal/mol/Å] float32, padded on read (nothing of R/F is read until values
    are asked for; a slice reads only the chunks it needs). Coordinates (sample, atom): ``mask``,
    ``species``, ``resid``, ``chain`` as :mod:`protstore.batching.sample` defines them, and
    ``resname`` ("PAD" on padding); per sample: ``protein``, ``protein_index`` (position in
    ``plan.proteins``), ``frame`` (index in the protein's group), ``temperature``,
    ``replica``, ``source_frame``. The fields a model takes are those of a loader batch.
    """
    if split not in PARTS:
        raise ProtstoreError(f"split must be one of {PARTS}, not {split!r}")
    if not 0 <= k < len(plan.buckets):
        raise ProtstoreError(f"plan {plan.name!r} has buckets 0..{len(plan.buckets) - 1}, not {k}")
    check_plan(store, plan)
    bucket = plan.buckets[k]
    index = {p: i for i, p in enumerate(plan.proteins)}
    R, F, per_atom, per_sample = [], [], {}, {}
    for pid in bucket.proteins:
        frames = plan.split.frames(pid, plan.frames[pid], split)
        if not len(frames):
            continue
        ds = store.protein(pid)
        if len(frames) != ds.sizes["frame"]:
            ds = ds.isel(frame=frames)
        padded = ds.prot.pad_to(bucket.n_max)
        n = len(frames)
        R.append(padded.R.data)
        F.append(padded.F.data)
        for name in ("mask", "species", "resid", "chain", "resname"):
            per_atom.setdefault(name, []).append(
                da.broadcast_to(padded[name].values[None], (n, bucket.n_max),
                                chunks=(padded.R.data.chunks[0], -1)))
        frame_coords = ds[["temperature", "replica", "source_frame"]].reset_coords().load()
        for name in ("temperature", "replica", "source_frame"):
            per_sample.setdefault(name, []).append(frame_coords[name].values)
        per_sample.setdefault("frame", []).append(np.asarray(frames, dtype=np.int32))
        per_sample.setdefault("protein", []).append(np.full(n, pid, dtype=object))
        per_sample.setdefault("protein_index", []).append(np.full(n, index[pid], np.int32))
    if not R:
        raise ProtstoreError(f"bucket {k} of plan {plan.name!r} has no {split!r} samples")
    dims = ("sample", "atom", "xyz")
    coords = {name: (("sample", "atom"), da.concatenate(v)) for name, v in per_atom.items()}
    coords.update({name: ("sample", np.concatenate(v)) for name, v in per_sample.items()})
    coords["xyz"] = ("xyz", np.array(["x", "y", "z"], dtype=object))
    attrs = {"bucket": k, "n_max": bucket.n_max, "plan": plan.name, "split": split,
             "pad_species": int(BEAD_FIELDS["species"].pad)}
    return xr.Dataset({"R": (dims, da.concatenate(R), {"units": "angstrom"}),
                       "F": (dims, da.concatenate(F), {"units": "kcal/mol/angstrom"})},
                      coords=coords, attrs=attrs)
