"""The two ensembles ``compare`` reads: a simulated trajectory group (the contract of
``protstore simulate``) and the store's reference frames of the same protein and temperature.

Frames taken from a trajectory: all replicas pooled; a frame counts when its time is at least
``burn_in`` ps, it is not after the step a replica was dropped at (``dropped``), it is not
beyond ``steps_done`` and all its coordinates are finite. An incomplete trajectory
(``complete`` false) is refused unless ``allow_incomplete``, which takes the frames done.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import xarray as xr

from ..errors import InputError, StoreError
from ..location import Location, as_location
from ..schemas import check_document, schema_dir
from ..store.labels import decode_dataset
from .observables import labels

TRAJECTORY_DOC = "protstore_trajectory"
TEMPERATURE_TOLERANCE = 0.5  # K
REQUIRED = ("protein", "temperature", "complete", "steps_done", "dt")


class Ensemble(NamedTuple):
    """Frames of one source, in memory.

    R [F, N, 3] float32 (Å); replica [F] int; frame [F] int (the source's own frame index:
    the trajectory's ``frame`` or the reference's ``source_frame``); time [F] float (ps; NaN
    for the reference, whose frames carry no time); doc: the trajectory document (None for the
    reference); n_dropped: frames left out as non-finite or after a replica was dropped.
    """

    R: np.ndarray
    replica: np.ndarray
    frame: np.ndarray
    time: np.ndarray
    doc: dict | None
    n_dropped: int = 0


def open_trajectory(where: str | Location, storage_options: dict | None = None) -> xr.Dataset:
    """The trajectory group at ``where``, lazily; a one-line :class:`InputError` when it is
    missing or not a protstore trajectory."""
    loc = as_location(where, storage_options)
    try:
        meta = loc.read_json("zarr.json")
    except (FileNotFoundError, ValueError):
        raise InputError(f"{loc.url}: trajectory not found (no Zarr group there)") from None
    try:
        ds = xr.open_zarr(loc.url, storage_options=loc.storage_options or None,
                          consolidated=bool(meta.get("consolidated_metadata")),
                          decode_timedelta=False)
    except Exception as exc:  # noqa: BLE001 - whatever zarr/xarray raise: one line
        raise InputError(f"{loc.url}: cannot open the trajectory: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                         ) from None
    doc = ds.attrs.get(TRAJECTORY_DOC)
    if not isinstance(doc, dict):
        raise InputError(f"{loc.url}: not a protstore trajectory (no {TRAJECTORY_DOC!r} "
                         f"attribute)")
    if (schema_dir() / "trajectory.json").exists():
        check_document(doc, "trajectory", loc.url)
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise InputError(f"{loc.url}: trajectory document lacks {', '.join(missing)}")
    if "R" not in ds or ds["R"].dims != ("replica", "frame", "atom", "xyz"):
        raise InputError(f"{loc.url}: trajectory has no R (replica, frame, atom, xyz)")
    try:  # label codes (trajectories since protstore 0.7) -> their labels
        ds = decode_dataset(ds)
    except ValueError as exc:
        raise InputError(f"{loc.url}: {exc}") from None
    return ds


def trajectory_frames(ds: xr.Dataset, where: str, *, burn_in: float = 0.0,
                      allow_incomplete: bool = False) -> Ensemble:
    """The counted frames of trajectory ``ds`` (see the module docstring), all replicas
    pooled in (replica, frame) order."""
    doc = ds.attrs[TRAJECTORY_DOC]
    if not doc["complete"] and not allow_incomplete:
        raise InputError(f"{where}: trajectory is incomplete ({doc['steps_done']} of "
                         f"{doc.get('n_steps', '?')} steps saved); finish it, or compare the "
                         f"part that is done with --allow-incomplete")
    time = np.asarray(ds["time"].values, np.float64)
    replicas = np.asarray(ds["replica"].values)
    done = float(doc["steps_done"]) * float(doc["dt"]) * (1 + 1e-9) + 1e-9
    keep = (time >= burn_in) & (time <= done)
    R = np.asarray(ds["R"].isel(frame=np.flatnonzero(keep)).values, np.float32)
    frames = np.asarray(ds["frame"].values)[keep]
    times = time[keep]
    ok = np.isfinite(R).all(axis=(-2, -1))  # [replica, frame]
    for d in doc.get("dropped") or ():
        row = np.flatnonzero(replicas == d["replica"])
        ok[row] &= times[None, :] < float(d["step"]) * float(doc["dt"])
    n_dropped = int((~ok).sum())
    r_idx, f_idx = np.nonzero(ok)
    if not len(r_idx):
        raise InputError(f"{where}: no frames to compare (after a burn-in of {burn_in:g} ps, "
                         f"{n_dropped} non-finite or dropped)")
    return Ensemble(R[r_idx, f_idx], replicas[r_idx], frames[f_idx], times[f_idx], doc,
                    n_dropped)


def check_same_protein(ds: xr.Dataset, ref: xr.Dataset, where: str) -> None:
    """A one-line :class:`InputError` unless the trajectory's beads are the protein's
    (number, species, resid and chain of every bead)."""
    protein = ds.attrs[TRAJECTORY_DOC]["protein"]
    n, m = ds.sizes["atom"], ref.sizes["atom"]
    if n != m:
        raise InputError(f"{where}: {n} beads, but protein {protein!r} of the store has {m}")
    for name in ("species", "resid", "chain"):
        if name not in ds.coords:
            raise InputError(f"{where}: trajectory has no per-bead {name!r} coordinate")
        a, b = labels(ds[name].values), labels(ref[name].values)
        if not np.array_equal(a, b):
            k = int(np.flatnonzero(a != b)[0])
            raise InputError(f"{where}: bead {k} has {name} {a[k]}, but protein {protein!r} "
                             f"of the store has {b[k]} there (not the same protein)")


def reference_frames(store, protein: str, temperature: float) -> tuple[xr.Dataset, Ensemble]:
    """The store's protein (lazy) and its frames within :data:`TEMPERATURE_TOLERANCE` of
    ``temperature``, all replicas pooled, in (replica, source_frame) order."""
    if protein not in store:
        raise StoreError(f"{store.url}: no protein {protein!r} in the store (the trajectory's "
                         f"protein)")
    ds = store.protein(protein, chunks=None)
    temps = np.asarray(ds["temperature"].values, np.float64)
    sel = np.flatnonzero(np.abs(temps - temperature) <= TEMPERATURE_TOLERANCE)
    if not len(sel):
        have = sorted({float(t) for t in temps if np.isfinite(t)})
        raise StoreError(f"{store.url}: protein {protein!r} has no frames at "
                         f"{temperature:g} K (±{TEMPERATURE_TOLERANCE} K); it has "
                         f"{', '.join(f'{t:g} K' for t in have) or 'no known temperature'}")
    replica = np.asarray(ds["replica"].values)[sel]
    source = np.asarray(ds["source_frame"].values)[sel]
    order = np.lexsort((source, replica))
    R = np.asarray(ds["R"].isel(frame=sel).values, np.float32)[order]  # read in store order
    return ds, Ensemble(R, replica[order], source[order], np.full(len(sel), np.nan), None)
