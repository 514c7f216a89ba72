"""A trajectory group written from NumPy arrays by the writer ``protstore simulate`` uses, so
that ``compare`` is tested on exactly what the simulator writes."""

from __future__ import annotations

import numpy as np

from protstore.simulate.trajectory import TRAJECTORY_VERSION, TrajectoryWriter
from protstore.location import as_location


def write_trajectory(where, R, *, protein: str, species, resid, chain, temperature: float,
                     dt: float = 0.01, save_every: int = 10, complete: bool = True,
                     steps_done: int | None = None, dropped=(), mode: str = "full",
                     storage_options: dict | None = None, block_frames: int = 16) -> str:
    """Write R [replica, frame, atom, 3] (Å) as a trajectory group at ``where``; frame k is at
    time (k + 1) * save_every * dt ps; returns ``str(where)``."""
    R = np.asarray(R, np.float32)
    n_rep, n_frames, n_atoms, _ = R.shape
    if steps_done is None:
        steps_done = n_frames * save_every
    doc = {"format": "protstore_trajectory", "version": TRAJECTORY_VERSION,
           "protein": protein, "store": "test", "params": "test",
           "model": {"factory": "test", "options": {}}, "mode": mode,
           "seed": 0, "temperature": float(temperature), "dt": dt, "friction": 1.0,
           "save_every": save_every, "n_replicas": n_rep, "n_steps": n_frames * save_every,
           "steps_done": 0, "complete": False, "masses": "test",
           "start": "first", "start_frames": [0] * n_rep, "dropped": list(dropped),
           "protstore_version": "test"}
    zeros = np.zeros((n_rep, n_atoms, 3), np.float32)
    state = {"position": zeros, "momentum": zeros, "force": zeros,
             "rng": np.zeros((n_rep, 2), np.uint32)}
    loc = as_location(where, storage_options)
    writer = TrajectoryWriter.create(loc, doc, species=species, resid=resid, chain=chain,
                                     n_replicas=n_rep, block_frames=block_frames, state=state)
    rng = np.random.default_rng(0)
    energy = rng.normal(size=(n_rep, n_frames)).astype(np.float32)
    kinetic = np.full((n_rep, n_frames), temperature, np.float32)
    time = (np.arange(n_frames) + 1.0) * save_every * dt
    for f0 in range(0, n_frames, block_frames):
        f1 = min(f0 + block_frames, n_frames)
        last = f1 == n_frames
        doc = {**doc, "steps_done": steps_done if last else f1 * save_every,
               "complete": complete if last else False}
        writer.append(R[:, f0:f1], energy[:, f0:f1], kinetic[:, f0:f1], time[f0:f1], state,
                      doc["steps_done"], doc)
    return str(where)
