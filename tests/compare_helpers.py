"""A trajectory group written from NumPy arrays exactly as the trajectory contract (shared by
``protstore simulate`` and ``protstore compare``) lays it out."""

from __future__ import annotations

import numpy as np
import xarray as xr


def write_trajectory(where, R, *, protein: str, species, resid, chain, temperature: float,
                     dt: float = 0.01, save_every: int = 10, complete: bool = True,
                     steps_done: int | None = None, dropped=(), mode: str = "full",
                     storage_options: dict | None = None) -> str:
    """Write R [replica, frame, atom, 3] (Å) as a trajectory group at ``where``; frame k is at
    time (k + 1) * save_every * dt ps; returns ``str(where)``."""
    R = np.asarray(R, np.float32)
    n_rep, n_frames, n_atoms, _ = R.shape
    if steps_done is None:
        steps_done = n_frames * save_every
    doc = {"protein": protein, "store": "test", "params": "test", "model": "test", "mode": mode,
           "seed": 0, "temperature": float(temperature), "dt": dt, "friction": 1.0,
           "save_every": save_every, "n_replicas": n_rep, "n_steps": n_frames * save_every,
           "steps_done": int(steps_done), "complete": complete, "masses": "test",
           "start": "first", "start_frames": [0] * n_rep, "dropped": list(dropped),
           "protstore_version": "test"}
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {"R": (("replica", "frame", "atom", "xyz"), R, {"units": "angstrom"}),
         "potential_energy": (("replica", "frame"),
                              rng.normal(size=(n_rep, n_frames)).astype(np.float32)),
         "kinetic_temperature": (("replica", "frame"),
                                 np.full((n_rep, n_frames), temperature, np.float32))},
        coords={"replica": np.arange(n_rep, dtype=np.int32),
                "frame": np.arange(n_frames, dtype=np.int64),
                "time": ("frame", (np.arange(n_frames) + 1.0) * save_every * dt, {"units": "ps"}),
                "atom": np.arange(n_atoms),
                "xyz": np.array(["x", "y", "z"], dtype=object),
                "species": ("atom", np.asarray(species, np.int32)),
                "resid": ("atom", np.asarray(resid, np.int32)),
                "chain": ("atom", np.asarray(chain, dtype=object))},
        attrs={"protstore_trajectory": doc})
    ds.to_zarr(str(where), mode="w", consolidated=False, zarr_format=3,
               encoding={"R": {"chunks": (n_rep, min(n_frames, 16), n_atoms, 3)}},
               storage_options=storage_options)
    return str(where)
