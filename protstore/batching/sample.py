"""The fields of a padded sample: one place that names each key with its dims, dtype, pad value
and unit (as nequip's ``_keys.py`` does).

A *sample* is one frame of one protein padded to its bucket's ``N_max`` beads. Bucket views
(``Store.bucket``: xarray, dim ``sample`` first), loader batches (``BatchLoader``: NumPy, a
leading batch axis) and evaluation build their samples from these definitions, so a loader batch
and a bucket view at the same ``(protein_index, frame)`` are equal field by field
(``tests/test_views_loader.py`` checks it).

Per bead (dims ``atom`` [, ``xyz``]); padded beads hold the pad value, all finite, so no NaN can
enter a model through padding (models must still use ``mask``: padded beads sit on top of each
other at the origin):

=========  ============  =======  =====  ==================  =======================================
key        dims          dtype    pad    unit                meaning
=========  ============  =======  =====  ==================  =======================================
R          atom, xyz     float32  0      angstrom            bead (C-alpha) position
F          atom, xyz     float32  0      kcal/mol/angstrom   mapped bead force
mask       atom          float32  0                          1 real bead, 0 padding
species    atom          int32    21                         id in the fixed vocabulary (21: PAD)
resid      atom          int32    -1                         residue number from the source
chain      atom          int32    -1                         chain code: 0, 1, ... in bead order
segment    atom          int32    -1                         frame of a packed sample (0 unpacked)
=========  ============  =======  =====  ==================  =======================================

Per sample; a padded sample (a batch filled up with ``LoaderConfig(last="pad")``) has
``sample_mask`` 0 and the pad values:

=============  =======  =====  ======  ==============================================
key            dtype    pad    unit    meaning
=============  =======  =====  ======  ==============================================
protein_index  int32    -1             position of the protein in ``plan.proteins``
frame          int32    -1             frame index in the protein's group
temperature    float32  0      kelvin  the frame's temperature (NaN when unknown)
sample_mask    float32  0              1 real sample, 0 padding
=============  =======  =====  ======  ==============================================

A *packed* sample (loader batches with ``LoaderConfig(packing=True)``) holds several whole
frames one after another in its ``N_max`` beads: ``segment`` numbers them 0, 1, ... and is -1
on the padding left at the end, and :data:`PER_BEAD_WHEN_PACKED` (``protein_index``,
``frame``, ``temperature``) become per-bead fields (dims ``atom``, the same pad values on
padding beads), since the frames of one sample come from different proteins. ``chain`` codes
count within each frame; ``sample_mask`` is 1 for a sample holding at least one frame. Bucket
views and evaluation always have the per-protein form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..vocab import PAD_ID


@dataclass(frozen=True)
class Field:
    """One field of a padded sample: ``dims`` after the sample (or batch) axis."""

    key: str
    dims: tuple[str, ...]
    dtype: np.dtype
    pad: float | int
    unit: str | None = None

    def padded(self, values: np.ndarray, n_max: int) -> np.ndarray:
        """[n, ...] per-bead values -> [n_max, ...] in this field's dtype, padded at the tail."""
        values = np.asarray(values)
        out = np.full((n_max, *values.shape[1:]), self.pad, self.dtype)
        out[:len(values)] = values
        return out

    def fill(self, shape: tuple[int, ...]) -> np.ndarray:
        """An array of pad values: ``shape`` followed by this field's non-bead dims."""
        return np.full(self.shape(shape), self.pad, self.dtype)

    def shape(self, leading: tuple[int, ...]) -> tuple[int, ...]:
        """``leading`` (samples, and beads for a per-bead field) followed by this field's
        non-bead dims."""
        return (*leading, 3) if "xyz" in self.dims else tuple(leading)


ATOM, XYZ = "atom", "xyz"
BEAD_FIELDS = {f.key: f for f in (
    Field("R", (ATOM, XYZ), np.dtype(np.float32), 0.0, "angstrom"),
    Field("F", (ATOM, XYZ), np.dtype(np.float32), 0.0, "kcal/mol/angstrom"),
    Field("mask", (ATOM,), np.dtype(np.float32), 0.0),
    Field("species", (ATOM,), np.dtype(np.int32), PAD_ID),
    Field("resid", (ATOM,), np.dtype(np.int32), -1),
    Field("chain", (ATOM,), np.dtype(np.int32), -1),
    Field("segment", (ATOM,), np.dtype(np.int32), -1),
)}
SAMPLE_FIELDS = {f.key: f for f in (
    Field("protein_index", (), np.dtype(np.int32), -1),
    Field("frame", (), np.dtype(np.int32), -1),
    Field("temperature", (), np.dtype(np.float32), 0.0, "kelvin"),
    Field("sample_mask", (), np.dtype(np.float32), 0.0),
)}
FIELDS = {**BEAD_FIELDS, **SAMPLE_FIELDS}

#: What a model step takes from a batch (everything else is host-side bookkeeping).
MODEL_INPUTS = ("R", "F", "species", "resid", "chain", "mask", "segment", "sample_mask")
#: The per-sample fields that packed batches carry per bead.
PER_BEAD_WHEN_PACKED = ("protein_index", "frame", "temperature")

def frames_in(batch: dict) -> int:
    """The number of frames a (packed or unpacked) loader batch holds."""
    if np.ndim(batch["protein_index"]) == 1:
        return int(np.asarray(batch["sample_mask"]).sum())
    return int((np.asarray(batch["segment"]).max(axis=1) + 1).sum())


#: The per-bead coordinates every protein carries (R and F aside).
TOPOLOGY = ("species", "resid", "chain")


def padded_topology(readers: dict, n: int, n_max: int) -> dict[str, np.ndarray]:
    """``mask``, ``segment``, ``species``, ``resid``, ``chain`` [n_max] of a protein of ``n``
    beads (one frame: segment 0), padded
    as their fields define, read from its chunk readers (``Store.protein_readers``; chain
    labels become codes 0, 1, ... in bead order)."""
    from ..store.layout import chain_codes

    return {"mask": BEAD_FIELDS["mask"].padded(np.ones(n), n_max),
            "segment": BEAD_FIELDS["segment"].padded(np.zeros(n), n_max),
            "species": BEAD_FIELDS["species"].padded(readers["species"].read_all(), n_max),
            "resid": BEAD_FIELDS["resid"].padded(readers["resid"].read_all(), n_max),
            "chain": BEAD_FIELDS["chain"].padded(chain_codes(readers["chain"].read_all()),
                                                 n_max)}
