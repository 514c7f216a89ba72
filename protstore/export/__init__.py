"""Export a plan's frames as the HDF5 files of PyTorch CG trainers: torchmd-net's ``HDF5``
dataset (:mod:`protstore.export.torchmdnet`) and mlcg's ``H5Dataset``
(:mod:`protstore.export.mlcg`).

Both carry protstore's units: positions in Å, forces in kcal/mol/Å (the CG convention of both
peers, whose code is otherwise unit-agnostic; every dataset names its ``unit`` and the file's
attributes ``length_unit`` and ``force_unit``). Positions and forces are the stored float32
values, bit for bit; frames excluded at ingest were never stored and so are never exported.
Types are protstore's fixed species ids (:data:`protstore.vocab.VOCABULARY` order, root
attribute ``vocabulary``): an embedding of :data:`protstore.vocab.N_SPECIES` rows takes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import import_module

import numpy as np

from .._version import __version__
from ..batching.plan import BucketPlan
from ..errors import ProtstoreError
from ..store import Store
from ..location import as_location
from ..vocab import VOCABULARY
from .frames import (FORCE_UNIT, LENGTH_UNIT, SPLITS, PriorForces, blocks, check_export,
                     chosen_buckets, output_file, parts, read_priors, tail)

#: format name -> module of its layout
FORMATS = {"torchmd-net": "torchmdnet", "mlcg": "mlcg"}

__all__ = ["FORMATS", "SPLITS", "ExportResult", "export", "read_priors"]


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote."""

    out: str
    format: str
    split: str
    buckets: list[int]
    n_proteins: int
    n_frames: int
    prior_delta: bool

    def line(self) -> str:
        forces = "reference minus prior forces" if self.prior_delta else "reference forces"
        return (f"{self.out}: {self.format} HDF5, {self.n_frames} {self.split!r} frames of "
                f"{self.n_proteins} proteins (buckets {', '.join(map(str, self.buckets))}; "
                f"{forces}; Å, kcal/mol/Å)")


def export(store: Store, plan: BucketPlan | str, out, format: str, *, split: str = "all",
           bucket: int | None = None, priors: dict | str | None = None,
           overwrite: bool = False, progress: bool = True) -> ExportResult:
    """Write ``plan``'s ``split`` frames (of bucket ``bucket``, or of all) to the HDF5 file
    ``out`` (a local path or any fsspec URL; ``store.storage_options`` apply) in ``format``
    (:data:`FORMATS`).

    ``priors``: a priors document (``protstore fit-priors``' JSON, as :func:`read_priors`
    returns it) or its path: the file then also holds each frame's forces minus the priors'
    forces on it (padded beads enter no prior term). Reads one stored chunk at a time and
    writes it before the next (memory flat in the data size); ``progress`` shows a bar of
    frames. An existing ``out`` is replaced only with ``overwrite``.
    """
    if format not in FORMATS:
        raise ProtstoreError(f"format must be one of {tuple(FORMATS)}, not {format!r}")
    plan = store.plan(plan) if isinstance(plan, str) else plan
    check_export(store, plan, split)
    buckets = chosen_buckets(plan, bucket)
    layout = import_module(f"{__name__}.{FORMATS[format]}")
    if isinstance(priors, str):
        priors = read_priors(priors, store.storage_options)
    prior_forces = None
    if priors is not None:
        from ..model.fit import priors_from_doc

        prior_forces = PriorForces(priors_from_doc(priors))
    todo = list(parts(store, plan, split, buckets))
    if not todo:
        raise ProtstoreError(f"plan {plan.name!r} has no {split!r} frames in bucket(s) "
                             f"{', '.join(map(str, buckets))}: nothing to export")
    total = sum(len(p.frames) for p in todo)
    location = as_location(out, store.storage_options)
    columns = layout.columns(priors is not None)
    with output_file(location, overwrite) as path:
        import h5py
        from tqdm.auto import tqdm

        # libver v108: attributes over 64 KiB (cg_embeds of a protein of > 8k beads)
        with h5py.File(path, "w", libver="v108") as h5, \
                tqdm(total=total, desc=f"export {format}", unit="frame",
                     disable=not progress) as bar:
            h5.attrs.update(_root_attrs(store, plan, format, split, buckets, priors,
                                        len(todo), total))
            for part in todo:
                group = layout.group(h5, part)
                S = len(part.frames)
                datasets = [(col, group.create_dataset(col.name, (S, *tail(col.key, part.n)),
                                                       dtype=col.dtype)) for col in columns]
                for col, ds in datasets:
                    ds.attrs.update(col.attrs)
                for block in blocks(part, prior_forces):
                    for col, ds in datasets:
                        ds[block.rows] = block.get(col.key)
                    bar.update(len(block.frame))
    return ExportResult(location.url, format, split, buckets, len(todo), total,
                        priors is not None)


def _root_attrs(store: Store, plan: BucketPlan, format: str, split: str, buckets: list[int],
                priors: dict | None, n_proteins: int, n_frames: int) -> dict:
    """What the file is: format, provenance, units, the types' vocabulary, the forces."""
    attrs = {"format": format, "created_by": f"protstore {__version__}", "store": store.url,
             "store_version": store.version or "", "plan": plan.name, "split": split, "buckets": np.array(buckets, np.int32),
             "n_proteins": n_proteins, "n_frames": n_frames,
             "length_unit": LENGTH_UNIT, "force_unit": FORCE_UNIT,
             "types": "protstore species id: index into the vocabulary attribute",
             "vocabulary": np.array(VOCABULARY, dtype="S"),
             "prior_delta": priors is not None}
    if priors is not None:
        attrs["priors"] = json.dumps(priors, sort_keys=True, allow_nan=False)
    return attrs
