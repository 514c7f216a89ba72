"""mlcg's HDF5 dataset (``mlcg.datasets.h5_dataset``: ``H5Dataset`` / ``MetaSet`` /
``MolData``, mlcg at commit 434da19).

Layout: one *metaset* per bucket of the plan (mlcg's metasets group molecules of similar size,
so a batch drawn from one costs about the same: a bucket is that), one *molecule* group per
protein in it::

    /bucket_<k>                                    attrs: bucket, n_max
    /bucket_<k>/<protein id>                       attrs: cg_embeds [n] int64 (protstore
                                                   species ids), N_frames (int: S)
    /bucket_<k>/<protein id>/cg_coords        [S, n, 3] float32  Å, the stored bead positions
    /bucket_<k>/<protein id>/cg_forces        [S, n, 3] float32  kcal/mol/Å, the stored forces
    /bucket_<k>/<protein id>/cg_delta_forces  [S, n, 3] float32  kcal/mol/Å, stored forces
                                                   minus the priors' (prior-delta only)
    /bucket_<k>/<protein id>/frame            [S] int32    frame index in the store's group
    /bucket_<k>/<protein id>/temperature      [S] float32  K (NaN where unknown)
    /bucket_<k>/<protein id>/replica          [S] int32    the source run's replica
    /bucket_<k>/<protein id>/source_frame     [S] int32    frame index in the source run
    /bucket_<k>/<protein id>/split            [S] int8     0 train, 1 val, 2 test

Each molecule group also has the attributes ``protein``, ``bucket``, per bead ``resname``,
``resid``, ``chain``.

mlcg reads a molecule through ``hdf_key_mapping``: its default, ``{"embeds":
"attrs:cg_embeds", "coords": "cg_coords", "forces": "cg_delta_forces"}``, reads the
prior-delta forces; ``"forces": "cg_forces"`` reads the reference forces (an export without
priors has only those).
"""

from __future__ import annotations

import numpy as np

from .frames import FORCE_UNIT, LENGTH_UNIT, Part
from .layout import Column, per_frame_columns, protein_attrs

FORMAT = "mlcg"


def metaset(k: int) -> str:
    """The metaset (group) of bucket ``k``."""
    return f"bucket_{k}"


def columns(delta: bool) -> list[Column]:
    """The datasets of every molecule group (module docstring)."""
    cols = [Column("cg_coords", "R", np.float32, {"unit": LENGTH_UNIT}),
            Column("cg_forces", "F", np.float32,
                   {"unit": FORCE_UNIT, "content": "reference forces"})]
    if delta:
        cols.append(Column("cg_delta_forces", "D", np.float32,
                           {"unit": FORCE_UNIT, "content": "reference minus prior forces"}))
    return cols + per_frame_columns()


def group(h5, part: Part):
    """The protein's molecule group in its bucket's metaset."""
    name = metaset(part.bucket)
    if name not in h5:
        meta = h5.create_group(name)
        meta.attrs.update(bucket=part.bucket, n_max=part.n_max)
    g = h5[name].create_group(part.protein)
    g.attrs["cg_embeds"] = part.species.astype(np.int64)
    g.attrs["N_frames"] = len(part.frames)
    protein_attrs(g, part)
    return g
