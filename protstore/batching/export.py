"""Export bucket views as the predecessor's combined NPZ files (``bucket_N{nmax:04d}.npz``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ProtstoreError
from ..store import Store
from ..vocab import VOCABULARY
from .plan import BucketPlan, check_plan
from .views import bucket_view


def export_npz(store: Store, plan: BucketPlan, out_dir: str | Path, *, split: str = "all",
               pickle_objects: bool = False) -> list[Path]:
    """Write one NPZ per bucket in the predecessor's combined format; returns the paths.

    Keys: R, F [T, N_max, 3] float32; Z, resid, species [T, N_max] int32; resname [T, N_max];
    mask [T, N_max] float32; n_atoms, protein_id [T] int32; paths [P]; N_max (1,). Padding is
    at the tail as the predecessor wrote it (R=F=0, Z=0, resid=-1, species=-1, resname "PAD").
    Species ids are protstore's fixed vocabulary. Strings are fixed-width unicode unless
    ``pickle_objects`` asks for the predecessor's object arrays (and its ``aa_to_id`` /
    ``id_to_aa`` dicts), which only pickle-enabled loaders can read.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ProtstoreError(f"{out_dir}: exists and is not a directory (--out names the "
                             f"directory the bucket_N####.npz files are written into)")
    check_plan(store, plan)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for bucket in plan.buckets:
        view = bucket_view(store, plan, bucket.index, split).compute()
        mask = view["mask"].values
        real = mask > 0
        species = np.where(real, view["species"].values, -1).astype(np.int32)
        resname = view["resname"].values
        paths = np.array(bucket.proteins)
        local = {p: i for i, p in enumerate(bucket.proteins)}
        arrays = {
            "R": view["R"].values, "F": view["F"].values,
            "Z": np.where(real, 6, 0).astype(np.int32),
            "resid": view["resid"].values.astype(np.int32),
            "species": species, "mask": mask.astype(np.float32),
            "n_atoms": real.sum(axis=1).astype(np.int32),
            "protein_id": np.array([local[p] for p in view["protein"].values], np.int32),
            "N_max": np.array([bucket.n_max]),
            "temperature": view["temperature"].values,
        }
        if pickle_objects:
            aa_to_id = {name: i for i, name in enumerate(VOCABULARY)}
            arrays.update(resname=resname.astype(object), paths=paths.astype(object),
                          aa_to_id=np.array([aa_to_id], dtype=object),
                          id_to_aa=np.array([list(VOCABULARY)], dtype=object))
        else:
            arrays.update(resname=resname.astype("U3"), paths=paths,
                          vocabulary=np.array(VOCABULARY))
        path = out_dir / f"bucket_N{bucket.n_max:04d}.npz"
        np.savez(path, **arrays)
        written.append(path)
    return written
