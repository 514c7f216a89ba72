"""Lazy bucket views: every sample of a bucket as one padded-on-read ``xr.Dataset``."""

from __future__ import annotations

import dask.base
import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from ..errors import ProtstoreError
from ..store import Store
from ..store.lazy import LazyFrames
from ..store.reader import DASK_CHUNK_BYTES
from ..pools import io_pool
from ..vocab import PAD
from . import accessor  # noqa: F401  (registers ds.prot)
from .sample import BEAD_FIELDS, padded_topology
from .plan import BucketPlan, check_plan

PARTS = ("train", "val", "test", "all")


def bucket_view(store: Store, plan: BucketPlan, k: int, split: str = "all",
                chunks: str | None = "auto") -> xr.Dataset:
    """Lazy Dataset of bucket ``k``: dims ``(sample, atom, xyz)``, atom = the bucket's N_max.

    Data: R [Å], F [kcal/mol/Å] float32, padded on read (nothing of R/F is read until values
    are asked for; a slice reads only the chunks it needs). Coordinates (sample, atom): ``mask``,
    ``species``, ``resid``, ``chain`` as :mod:`protstore.batching.sample` defines them, and
    ``resname`` ("PAD" on padding); per sample: ``protein``, ``protein_index`` (position in
    ``plan.proteins``), ``frame`` (index in the protein's group), ``temperature``,
    ``replica``, ``source_frame``. The fields a model takes are those of a loader batch.

    Opening reads each protein's group metadata and small arrays (several proteins at once);
    R, F and the per-bead coordinates are one backend array each for the whole bucket
    (:class:`BucketFrames`, :class:`RowsOf`), which reads and pads the samples a key selects,
    not a graph per protein. ``chunks``: as in :meth:`Store.protein`: ``"auto"`` wraps them in
    dask (one task per up to 128 MiB of R); ``None`` leaves them xarray's lazily indexed
    arrays, read without dask when values are asked for. Either way every xarray index form
    (``isel``, ``sel``, ``where``; integer, slice, boolean, list and vectorized keys) gives
    what it gives on the loaded view, padding included.
    """
    if chunks not in ("auto", None):
        raise ProtstoreError(f"chunks must be 'auto' (dask) or None (no dask), not {chunks!r}")
    if split not in PARTS:
        raise ProtstoreError(f"split must be one of {PARTS}, not {split!r}")
    if not 0 <= k < len(plan.buckets):
        raise ProtstoreError(f"plan {plan.name!r} has buckets 0..{len(plan.buckets) - 1}, not {k}")
    check_plan(store, plan)
    bucket, n_max = plan.buckets[k], plan.buckets[k].n_max
    index = {p: i for i, p in enumerate(plan.proteins)}
    chosen = [(pid, plan.part_frames(pid, split)) for pid in bucket.proteins]
    chosen = [(pid, frames) for pid, frames in chosen if len(frames)]
    if not chosen:
        raise ProtstoreError(f"bucket {k} of plan {plan.name!r} has no {split!r} samples")
    opened = list(io_pool().map(lambda c: _open_protein(store, c[0], c[1], n_max), chosen))
    rows = np.repeat(np.arange(len(opened)), [len(frames) for _, frames in chosen])
    per_chunk = max(1, DASK_CHUNK_BYTES // (n_max * 12))
    token = dask.base.tokenize(store.url, plan.name, plan.to_doc(), k, split)

    def lazy(name: str, dims: tuple[str, ...], array: BackendArray) -> xr.Variable:
        var = xr.Variable(dims, indexing.LazilyIndexedArray(array))
        if chunks is None:
            return var
        return var.chunk({"sample": per_chunk}, name=f"protstore-bucket-{name}-{token}",
                         lock=False)

    data = {}
    for name in ("R", "F"):
        frames = BucketFrames([o[name] for o in opened], [f for _, f in chosen], n_max,
                              BEAD_FIELDS[name].pad)
        data[name] = lazy(name, ("sample", "atom", "xyz"), frames)
        data[name].attrs["units"] = "angstrom" if name == "R" else "kcal/mol/angstrom"
    coords = {}
    for name in ("mask", "species", "resid", "chain", "resname"):
        table = np.stack([o[name] for o in opened])
        coords[name] = lazy(name, ("sample", "atom"), RowsOf(table, rows))
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


class BucketFrames(BackendArray):
    """[S, N_max, 3] float32 of a bucket's samples (R or F) as an xarray backend array: an
    outer-indexing key (ints, slices with any step, 1-D integer arrays, on any axis) reads the
    chunks of the samples its first axis selects from each protein's
    :class:`~protstore.store.lazy.LazyFrames` and pads them to N_max with ``pad``."""

    def __init__(self, frames: list[LazyFrames], selected: list[np.ndarray], n_max: int,
                 pad: float):
        self.frames, self.selected, self.n_max, self.pad = frames, selected, n_max, pad
        self.starts = np.concatenate([[0], np.cumsum([len(f) for f in selected])])
        self.shape = (int(self.starts[-1]), n_max, 3)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._outer)

    def _outer(self, key: tuple) -> np.ndarray:
        first = key[0]
        samples = np.atleast_1d(np.arange(self.shape[0])[first])  # bounds, negatives, steps
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
        rest = (0 if isinstance(first, (int, np.integer)) else slice(None), *key[1:])
        return indexing.NumpyIndexingAdapter(out).oindex[indexing.OuterIndexer(rest)]


class RowsOf(BackendArray):
    """[S, N_max] backend array whose sample s is row ``rows[s]`` of ``table`` [P, N_max] (the
    per-bead coordinates of a bucket, one row per protein, not copied per sample until asked
    for); dtype the table's. Keys as :class:`BucketFrames`'."""

    def __init__(self, table: np.ndarray, rows: np.ndarray):
        self.table, self.rows = table, rows
        self.shape = (len(rows), table.shape[1])
        self.dtype = table.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._outer)

    def _outer(self, key: tuple) -> np.ndarray:
        key = (self.rows[key[0]], *key[1:])  # an int stays an int: that axis is dropped
        return indexing.NumpyIndexingAdapter(self.table).oindex[indexing.OuterIndexer(key)]


def _consecutive(sel: np.ndarray) -> bool:
    return len(sel) > 0 and int(sel[-1]) - int(sel[0]) == len(sel) - 1 and \
        bool(np.all(np.diff(sel) == 1))
