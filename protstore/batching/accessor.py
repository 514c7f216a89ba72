"""The ``ds.prot`` accessor: protein-aware helpers on xarray Datasets of the store's layout."""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from ..vocab import PAD, PAD_ID

#: What padded beads hold. All finite, so no NaN can enter a model through padding; models must
#: still use ``mask`` (padded beads sit on top of each other at the origin).
PAD_VALUES = {"R": 0.0, "F": 0.0, "mask": 0.0, "species": PAD_ID, "resid": -1,
              "resname": PAD, "chain": ""}


@xr.register_dataset_accessor("prot")
class ProtAccessor:
    """``ds.prot``: pad a protein to a bucket's N_max, count real beads, drop padding."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    @property
    def n_real(self) -> xr.DataArray:
        """Real beads per sample (from ``mask``), or the atom count of an unpadded protein."""
        if "mask" in self._ds:
            return self._ds["mask"].sum("atom").astype(int)
        return xr.DataArray(self._ds.sizes["atom"])

    def pad_to(self, n_max: int) -> xr.Dataset:
        """A protein Dataset (frame, atom, xyz) padded lazily to ``n_max`` beads with a mask.

        R and F stay dask arrays (padding happens on read); per-atom coordinates are padded
        with :data:`PAD_VALUES`; ``mask`` [atom] is 1.0 for real beads and 0.0 for padding.
        """
        ds = self._ds
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
                                               constant_values=PAD_VALUES[name]), ds[name].attrs)
        coords = {k: v for k, v in ds.coords.items() if "atom" not in v.dims}
        for name in ("species", "resid", "resname", "chain"):
            if name in ds.coords:
                values = np.asarray(ds[name].values)
                if values.dtype.kind not in "iuf":
                    values = np.array(values.tolist(), dtype=str)  # fixed width: dask sizes it
                fill = np.full(pad, PAD_VALUES[name], dtype=values.dtype)
                coords[name] = ("atom", np.concatenate([values, fill]))
        coords["mask"] = ("atom", np.r_[np.ones(n, np.float32), np.zeros(pad, np.float32)])
        return xr.Dataset(out, coords=coords, attrs=ds.attrs)

    def unpad(self) -> xr.Dataset:
        """Drop the padded beads of a Dataset whose ``mask`` is per atom (one protein)."""
        mask = self._ds["mask"]
        if mask.dims != ("atom",):
            raise ValueError("unpad needs a per-atom mask (a single protein)")
        return self._ds.isel(atom=np.flatnonzero(mask.values > 0))
