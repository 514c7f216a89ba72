"""Reductions of the force-error Dataset: per bead, per amino-acid type, by chain position,
per protein, per temperature, and the overall metrics of the full/prior-only/ml-only modes.

Pooled RMSE of a group = sqrt(Σ squared errors of all its bead-frames / their count), with the
vector norm ||ΔF||; the per-component value is that / sqrt(3). The predecessor's figure, the
mean of per-bead RMSEs, is reported beside it under its own name.

The grouped reductions are flox's (:func:`grouped`): one pass over the data per reduction,
on dask arrays chunk by chunk (map-reduce), whatever xarray's ``use_flox`` option says.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from flox.xarray import xarray_reduce

from ..vocab import VOCABULARY


def grouped(obj, by: str, func: str, dim: str | None = None):
    """``obj`` (Dataset or DataArray) reduced with ``func`` ("sum", "count", "mean") over
    ``dim`` (default: the dimension of ``by``) per value of the coordinate ``by``, groups in
    sorted order: what ``obj.groupby(by).<func>(dim)`` gives (floats skip NaN, as there)."""
    if func in ("sum", "mean"):
        floats = [k for k, v in (obj.data_vars.items() if isinstance(obj, xr.Dataset)
                                 else [(None, obj)]) if v.dtype.kind == "f"]
        func = f"nan{func}" if floats else func
    return xarray_reduce(obj, by, func=func, dim=dim if dim is not None else obj[by].dims[0])


def per_bead(ds: xr.Dataset) -> xr.Dataset:
    """dim ``bead`` (real beads of all proteins): sums, counts, RMSE (vector and per axis)."""
    sq = ds["sq_error"]
    valid = ds["mask"]
    sums = xr.Dataset({
        "sum_sq": sq.where(valid, 0.0),
        "sum_sq_xyz": (ds["dF"].astype(np.float64) ** 2).where(valid, 0.0),
        "n_frames": valid.astype(np.float64)})
    sums = grouped(sums, "protein", "sum", "sample").compute()
    # per-atom coordinates are constant within a protein: take each protein's first sample
    proteins, first = np.unique(ds["protein"].values, return_index=True)
    atoms = ds[["species", "resid", "position", "position_from_c", "mask"]].reset_coords()
    atoms = atoms.isel(sample=first).compute()
    atoms = atoms.assign_coords(protein=("sample", proteins)).swap_dims(sample="protein")
    atoms = atoms.drop_vars([c for c in ("frame", "temperature", "bucket", "sample")
                             if c in atoms.coords])
    sums["n_frames"] = sums["n_frames"].astype(np.int64)
    table = xr.merge([sums, atoms]).stack(bead=("protein", "atom"))
    table = table.isel(bead=np.flatnonzero(table["mask"].values))
    table = table.reset_index("bead").set_coords(["protein", "atom", "species", "resid",
                                                  "position", "position_from_c"])
    table = table.drop_vars("mask")
    table["resname"] = ("bead", np.array(VOCABULARY, dtype=object)[table["species"].values])
    table = table.set_coords("resname")
    table["rmse"] = np.sqrt(table["sum_sq"] / table["n_frames"])
    table["rmse_component"] = table["rmse"] / np.sqrt(3.0)
    table["rmse_xyz"] = np.sqrt(table["sum_sq_xyz"] / table["n_frames"])
    table["rmse"].attrs = {"long_name": "per-bead force RMSE (vector norm)", "units": "kcal/mol/Å"}
    return table


def pooled(table: xr.Dataset, by: str) -> xr.Dataset:
    """Pooled RMSE per value of the per-bead coordinate ``by`` (+ counts and the mean of
    per-bead RMSEs, the predecessor's figure)."""
    g = grouped(table[["sum_sq", "n_frames"]], by, "sum")
    out = xr.Dataset({
        "rmse_pooled": np.sqrt(g["sum_sq"] / g["n_frames"]),
        "n_values": g["n_frames"],
        "n_beads": grouped(table["rmse"], by, "count"),
        "mean_bead_rmse_predecessor": grouped(table["rmse"], by, "mean")})
    out["rmse_pooled_component"] = out["rmse_pooled"] / np.sqrt(3.0)
    return out


def pooled_by_sample(ds: xr.Dataset, coord: str, sq: xr.DataArray | None = None) -> xr.Dataset:
    """Pooled RMSE per value of the per-sample coordinate ``coord`` (e.g. temperature, bucket)
    over all real bead-frames; ``sq`` replaces ``ds.sq_error`` (e.g. ||F_ref||² for the
    zero-force baseline)."""
    valid = ds["mask"]
    sq = ds["sq_error"] if sq is None else sq
    g = grouped(xr.Dataset({"sum_sq": sq.where(valid, 0.0).sum("atom"),
                            "n": valid.sum("atom")}), coord, "sum").compute()
    return xr.Dataset({"rmse_pooled": np.sqrt(g["sum_sq"] / g["n"]), "n_values": g["n"]})


def per_residue_tables(ds: xr.Dataset) -> dict[str, xr.Dataset]:
    """All per-residue reductions of an error Dataset (dask-backed or in memory)."""
    beads = per_bead(ds)
    return {"per_bead": beads, "by_resname": pooled(beads, "resname"),
            "by_position": pooled(beads, "position"),
            "by_position_from_c": pooled(beads, "position_from_c"),
            "by_protein": pooled(beads, "protein"), "by_temperature": pooled_by_sample(ds, "temperature")}


def overall_metrics(ds: xr.Dataset) -> dict:
    """Overall errors over real beads (kcal/mol/Å), names stating the convention."""
    valid = ds["mask"]
    dF = ds["dF"].astype(np.float64)
    norm2 = ds["sq_error"].where(valid)
    sums = xr.Dataset({
        "sq": norm2.sum(), "norm": np.sqrt(norm2).sum(), "n": valid.sum(),
        "sq_xyz": (dF ** 2).where(valid).sum(("sample", "atom")),
        "abs_xyz": abs(dF).where(valid).sum(("sample", "atom"))}).compute()
    n = float(sums["n"])
    out = {"n_bead_frames": int(n),
           "rmse_vector": float(np.sqrt(sums["sq"] / n)),
           "rmse_component": float(np.sqrt(sums["sq"] / (3 * n))),
           "mae_vector": float(sums["norm"] / n),
           "mae_component": float(sums["abs_xyz"].sum() / (3 * n))}
    for axis in ("x", "y", "z"):
        out[f"rmse_{axis}"] = float(np.sqrt(sums["sq_xyz"].sel(xyz=axis) / n))
        out[f"mae_{axis}"] = float(sums["abs_xyz"].sel(xyz=axis) / n)
    return out
