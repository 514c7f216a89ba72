"""torchmd-net's ``HDF5`` dataset (``torchmdnet.datasets.HDF5``, torchmd-net 3.1.0).

Layout (one group per protein at the root, as the class reads: every root group holds samples
with one number of atoms; the root holds no dataset and no ``_metadata`` group, whose arrays
the class would set as its own attributes)::

    /<protein id>/pos          [S, n, 3] float32  Å, the stored bead positions
    /<protein id>/forces       [S, n, 3] float32  kcal/mol/Å: the stored (mapped) forces, or
                                                   with prior-delta those minus the priors'
    /<protein id>/ref_forces   [S, n, 3] float32  kcal/mol/Å, the stored forces (prior-delta only)
    /<protein id>/types        [S, n]    int8     protstore species ids (vocabulary order)
    /<protein id>/frame        [S]       int32    frame index in the store's protein group
    /<protein id>/temperature  [S]       float32  K (NaN where unknown)
    /<protein id>/replica      [S]       int32    the source run's replica
    /<protein id>/source_frame [S]       int32    frame index in the source run
    /<protein id>/split        [S]       int8     the plan part: 0 train, 1 val, 2 test

Each group's attributes: ``protein``, ``bucket``, per bead ``resname``, ``resid``, ``chain``.

``types`` holds one row per frame: the class takes a 1-D array whose length equals the number
of samples as one type per sample (its "embed can be shared" branch), so a 1-D [n] array of a
protein with n frames would be misread. The class reads ``pos`` -> ``pos``, ``types`` -> ``z``
(as int64), ``forces`` -> ``neg_dy``; there is no ``energy`` (protstore stores none), which the
class allows when ``forces`` are present. Its samples come file by file, group by group in
HDF5's name order (h5py iterates a group's members sorted by name), frame by frame.
"""

from __future__ import annotations

import numpy as np

from .frames import FORCE_UNIT, LENGTH_UNIT, Part
from .layout import Column, per_frame_columns, protein_attrs

FORMAT = "torchmd-net"


def columns(delta: bool) -> list[Column]:
    """The datasets of every protein group (module docstring)."""
    cols = [Column("pos", "R", np.float32, {"unit": LENGTH_UNIT}),
            Column("forces", "D" if delta else "F", np.float32, {
                "unit": FORCE_UNIT,
                "content": "reference minus prior forces" if delta else "reference forces"}),
            Column("types", "types", np.int8, {"content": "protstore species id"})]
    if delta:
        cols.append(Column("ref_forces", "F", np.float32,
                           {"unit": FORCE_UNIT, "content": "reference forces"}))
    return cols + per_frame_columns()


def group(h5, part: Part):
    """The protein's group at the root."""
    g = h5.create_group(part.protein)
    protein_attrs(g, part)
    return g
