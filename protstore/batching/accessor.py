"""The ``ds.prot`` accessor: protein-aware helpers on xarray Datasets of the store's layout."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import xarray as xr

from ..store.labels import decode_dataset
from ..store.layout import PROTEIN_DOC, chain_codes
from ..vocab import PAD
from .sample import BEAD_FIELDS, TOPOLOGY


@xr.register_dataset_accessor("prot")
class ProtAccessor:
    """``ds.prot``: pad a protein to a bucket's N_max, count real beads, drop padding."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    @property
    def doc(self) -> dict:
        """The protein document of a Dataset from ``Store.protein`` (kept there as JSON text,
        so that the Dataset writes to netCDF), or of ``xr.open_zarr`` of a protein group
        (where zarr gives it as a dict)."""
        value = self._ds.attrs.get(PROTEIN_DOC)
        if value is None:
            raise KeyError(f"this Dataset has no {PROTEIN_DOC!r} attribute (not a protein)")
        return json.loads(value) if isinstance(value, str) else value

    def decode_labels(self) -> xr.Dataset:
        """The Dataset with its label codes as their labels: a protein group of a format-3
        store keeps ``resname``, ``chain`` and ``xyz`` as int32 codes with their labels in the
        arrays' attributes (what plain ``xr.open_zarr`` gives); decoded, it is the labelled
        Dataset ``Store.protein`` gives (object arrays of str, those attributes dropped).
        Variables without codes are left as they are."""
        return decode_dataset(self._ds)

    @property
    def n_real(self) -> xr.DataArray:
        """Real beads per sample (from ``mask``), or the atom count of an unpadded protein."""
        if "mask" in self._ds:
            return self._ds["mask"].sum("atom").astype(int)
        return xr.DataArray(self._ds.sizes["atom"])

    def pad_to(self, n_max: int) -> xr.Dataset:
        """A protein Dataset (frame, atom, xyz) padded lazily to ``n_max`` beads with a mask,
        as the fields of :mod:`protstore.batching.sample` define a padded sample.

        R and F stay lazy (padding happens on read); ``species``, ``resid`` and ``chain`` (the
        chain labels become codes 0, 1, ... in bead order) are padded with their pad values,
        ``resname`` with ``"PAD"``; ``mask`` [atom] is 1.0 for real beads and 0.0 for padding.
        """
        ds = self.decode_labels()
        n = ds.sizes["atom"]
        if n > n_max:
            raise ValueError(f"protein has {n} beads, more than n_max={n_max}")
        pad = n_max - n
        out = {}
        for name in ("R", "F"):
            data = ds[name].data
            if not isinstance(data, da.Array):
                data = da.from_array(data, chunks=(-1, -1, -1))
            out[name] = (ds[name].dims, da.pad(data, ((0, 0), (0, pad), (0, 0)),
                                               constant_values=BEAD_FIELDS[name].pad),
                         ds[name].attrs)
        coords = {k: v for k, v in ds.coords.items() if "atom" not in v.dims}
        for name in TOPOLOGY:
            if name in ds.coords:
                values = ds[name].values
                if name == "chain" and values.dtype.kind not in "iu":
                    values = chain_codes(values)
                coords[name] = ("atom", BEAD_FIELDS[name].padded(values, n_max))
        if "resname" in ds.coords:
            names = np.array(ds["resname"].values.tolist(), dtype=str)  # fixed width: dask sizes it
            coords["resname"] = ("atom", np.concatenate([names, np.full(pad, PAD, names.dtype)]))
        coords["mask"] = ("atom", BEAD_FIELDS["mask"].padded(np.ones(n), n_max))
        return xr.Dataset(out, coords=coords, attrs=ds.attrs)

    def unpad(self) -> xr.Dataset:
        """Drop the padded beads of a Dataset whose ``mask`` is per atom (one protein)."""
        mask = self._ds["mask"]
        if mask.dims != ("atom",):
            raise ValueError("unpad needs a per-atom mask (a single protein)")
        return self._ds.isel(atom=np.flatnonzero(mask.values > 0))

