"""Lazy bucket views: every sample of a bucket as one padded-on-read ``xr.Dataset``."""

from __future__ import annotations

import dask.array as da
import dask.base
import numpy as np
import xarray as xr

from ..errors import ProtstoreError
from ..store import Store
from ..store.chunks import LazyFrames
from ..store.store import DASK_CHUNK_BYTES
from ..store.writer import io_pool
from ..vocab import PAD
from . import accessor  # noqa: F401  (registers ds.prot)
from .sample import BEAD_FIELDS, padded_topology
from .plan import BucketPlan, check_plan

PARTS = ("train", "val", "test", "all")


def bucket_view(store: Store, plan: BucketPlan, k: int, split: str = "all") -> xr.Dataset:
    """Lazy Dataset of bucket ``k``: dims ``(sample, atom, xyz)``, atom = the bucket's N_max.

    Data: R [Å], F [kcal/mol/Å] float32, padded on read (nothing of R/F is read until values
    are asked for; a slice reads only the chunks it needs). Coordinates (sample, atom): ``mask``,
    ``species``, ``resid``, ``chain`` as :mod:`protstore.batching.sample` defines them, and
    ``resname`` ("PAD" on padding); per sample: ``protein``, ``protein_index`` (position in
    ``plan.proteins``), ``frame`` (index in the protein's group), ``temperature``,
    ``replica``, ``source_frame``. The fields a model takes are those of a loader batch.

    Opening reads each protein's group metadata and small arrays (several proteins at once);
    R, F and the per-bead coordinates are one dask array each for the whole bucket, whose
    tasks read and pad the samples they cover (:class:`BucketFrames`), not a graph per protein.
    """
    if split not in PARTS:
        raise ProtstoreError(f"split must be one of {PARTS}, not {split!r}")
    if not 0 <= k < len(plan.buckets):
        raise ProtstoreError(f"plan {plan.name!r} has buckets 0..{len(plan.buckets) - 1}, not {k}")
    check_plan(store, plan)
    bucket, n_max = plan.buckets[k], plan.buckets[k].n_max
    index = {p: i for i, p in enumerate(plan.proteins)}
    chosen = [(pid, np.asarray(plan.split.frames(pid, plan.frames[pid], split), np.int64))
              for pid in bucket.proteins]
    chosen = [(pid, frames) for pid, frames in chosen if len(frames)]
    if not chosen:
        raise ProtstoreError(f"bucket {k} of plan {plan.name!r} has no {split!r} samples")
    opened = list(io_pool().map(lambda c: _open_protein(store, c[0], c[1], n_max), chosen))
    rows = np.repeat(np.arange(len(opened)), [len(frames) for _, frames in chosen])
    S = len(rows)
    per_chunk = max(1, DASK_CHUNK_BYTES // (n_max * 12))
    chunks = (tuple(min(per_chunk, S - a) for a in range(0, S, per_chunk)),)
    token = dask.base.tokenize(store.url, plan.name, plan.to_doc(), k, split)
    data = {}
    for name in ("R", "F"):
        frames = BucketFrames([o[name] for o in opened], [f for _, f in chosen], n_max,
                              BEAD_FIELDS[name].pad)
        data[name] = (("sample", "atom", "xyz"),
                      da.from_array(frames, chunks=chunks + ((n_max,), (3,)), lock=False,
                                    asarray=False, name=f"protstore-bucket-{name}-{token}"),
                      {"units": "angstrom" if name == "R" else "kcal/mol/angstrom"})
    coords = {}
    for name in ("mask", "species", "resid", "chain", "resname"):
        table = np.stack([o[name] for o in opened])
        coords[name] = (("sample", "atom"), da.from_array(
            RowsOf(table, rows), chunks=chunks + ((n_max,),), lock=False, asarray=False,
            name=f"protstore-bucket-{name}-{token}"))
    for name in ("temperature", "replica", "source_frame"):
        coords[name] = ("sample", np.concatenate([o[name][f] for o, (_, f) in zip(opened, chosen)]))
    coords["frame"] = ("sample", np.concatenate([f for _, f in chosen]).astype(np.int32))
    coords["protein"] = ("sample", np.array([pid for pid, _ in chosen], dtype=object)[rows])
    coords["protein_index"] = ("sample", np.array([index[pid] for pid, _ in chosen],
                                                  np.int32)[rows])
    coords["xyz"] = ("xyz", np.array(["x", "y", "z"], dtype=object))
    attrs = {"bucket": k, "n_max": n_max, "plan": plan.name, "split": split,
             "pad_species": int(BEAD_FIELDS["species"].pad)}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _open_protein(store: Store, pid: str, frames: np.ndarray, n_max: int) -> dict:
    """A protein's chunk readers of R and F and its per-bead (padded) and per-frame arrays."""
    readers = store.protein_readers(pid)
    names = readers["resname"].read_all()
    out = {"R": LazyFrames(readers["R"]), "F": LazyFrames(readers["F"])}
    n = len(names)
    if n > n_max:
        raise ProtstoreError(f"protein {pid!r} has {n} beads, more than the bucket's {n_max}")
    out.update(padded_topology(readers, n, n_max))
    resname = np.full(n_max, PAD, dtype="<U3")
    resname[:n] = np.asarray(names.tolist(), dtype="<U3")
    out["resname"] = resname
    for name in ("temperature", "replica", "source_frame"):
        out[name] = readers[name].read_all()
    return out


class BucketFrames:
    """Array-like [S, N_max, 3] of a bucket's samples (R or F), for ``dask.array.from_array``:
    ``self[key]`` reads the chunks of the samples the key's first axis selects (a slice, as
    dask gives) from each protein's :class:`~protstore.store.chunks.LazyFrames` and pads them
    to N_max with ``pad``. Shape and dtype as an array's."""

    def __init__(self, frames: list[LazyFrames], selected: list[np.ndarray], n_max: int,
                 pad: float):
        self.frames, self.selected, self.n_max, self.pad = frames, selected, n_max, pad
        self.starts = np.concatenate([[0], np.cumsum([len(f) for f in selected])])
        self.shape = (int(self.starts[-1]), n_max, 3)
        self.dtype = np.dtype(np.float32)
        self.ndim = 3

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        first, rest = (key[0], key[1:]) if key else (slice(None), ())
        if isinstance(first, (int, np.integer)):
            return self[(np.array([first]), *rest)][0]
        if isinstance(first, slice):
            samples = np.arange(*first.indices(self.shape[0]))
        elif isinstance(first, (list, np.ndarray)) and np.asarray(first).dtype.kind in "iu":
            samples = np.arange(self.shape[0])[np.asarray(first)]  # bounds, negatives
        else:  # booleans and the like: NumPy on the whole array
            return self[:][key]
        out = np.full((len(samples), self.n_max, 3), self.pad, self.dtype)
        owner = np.searchsorted(self.starts, samples, side="right") - 1
        for p in np.unique(owner):
            rows = np.flatnonzero(owner == p)
            sel = self.selected[p][samples[rows] - self.starts[p]]
            if _consecutive(sel) and _consecutive(rows):  # one strided read, no fancy index
                block = self.frames[p][int(sel[0]):int(sel[-1]) + 1]
                out[rows[0]:rows[-1] + 1, :block.shape[1]] = block
            else:
                block = self.frames[p][sel]
                out[rows, :block.shape[1]] = block
        return out[(slice(None), *rest)]


class RowsOf:
    """Array-like [S, N_max]: row ``rows[s]`` of ``table`` for sample s (per-bead coordinates of
    a bucket without a copy per sample until asked for)."""

    def __init__(self, table: np.ndarray, rows: np.ndarray):
        self.table, self.rows = table, rows
        self.shape = (len(rows), table.shape[1])
        self.dtype = table.dtype
        self.ndim = 2

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        return self.table[self.rows[key[0]]][(slice(None), *key[1:])]


def _consecutive(sel: np.ndarray) -> bool:
    return len(sel) > 0 and int(sel[-1]) - int(sel[0]) == len(sel) - 1 and \
        bool(np.all(np.diff(sel) == 1))
