"""Stability checks of a simulation, on every saved frame: never assumed.

Inside the jitted block (:func:`frame_diagnostics`, per replica and saved frame) the few numbers
the checks need are computed with the frame: whether positions, momenta and energy are finite,
the shortest and longest bond, and (a model with a neighbour capacity) the most neighbours any
bead has within the network's cutoff, which the energy is smooth only up to (the census
training and evaluation take, :func:`protstore.model.energy.batch_neighbor_census`). On the
host, :func:`failures` turns them into the first failing frame of each replica and a short
reason. Checks see saved frames only: a bond that stretches and recovers between two saves is
not seen, a non-finite value always is (it stays non-finite).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ..model.geometry import bond_lengths
from ..model.topology import Topology


class Diagnostics(NamedTuple):
    """Per saved frame (and replica): finite bool; bond_min, bond_max Å (0 without bonds);
    neighbors int (-1 without a capacity check)."""

    finite: jnp.ndarray
    bond_min: jnp.ndarray
    bond_max: jnp.ndarray
    neighbors: jnp.ndarray


def frame_diagnostics(R, momentum, energy, topo: Topology, census=None) -> Diagnostics:
    """:class:`Diagnostics` of one replica's frame R [N, 3]; ``census(R) -> count`` or None."""
    finite = jnp.all(jnp.isfinite(R)) & jnp.all(jnp.isfinite(momentum)) & jnp.isfinite(energy)
    r = bond_lengths(R, topo.bond)
    lo = jnp.min(jnp.where(topo.bond, r, jnp.inf), initial=jnp.inf)
    hi = jnp.max(jnp.where(topo.bond, r, -jnp.inf), initial=-jnp.inf)
    has = jnp.any(topo.bond)
    count = census(R) if census is not None else jnp.int32(-1)
    return Diagnostics(finite, jnp.where(has, lo, 0.0), jnp.where(has, hi, 0.0),
                       jnp.asarray(count, jnp.int32))


NEIGHBOR_SLOTS = "neighbour slots"


def remedy(reason: str) -> str:
    """What to try after a replica failed for ``reason`` (one of :func:`failures`' reasons)."""
    if NEIGHBOR_SLOTS in reason:
        # the model let beads crowd together; a smaller step does not change where it goes
        return ("a model trained with more neighbour slots (train --model-option "
                "max_neighbors=N) or one that keeps beads apart (its priors' repulsion)")
    return "a smaller --dt-fs"


def failures(diag: Diagnostics, alive: np.ndarray, *, bond_range: tuple[float, float],
             capacity: int | None) -> dict[int, tuple[int, str]]:
    """``{replica: (first failing frame of the block, reason)}`` for the live replicas whose
    frames fail a check; ``diag`` fields are [frames, replicas] NumPy arrays."""
    lo, hi = bond_range
    finite = np.asarray(diag.finite, bool)
    bmin, bmax = np.asarray(diag.bond_min), np.asarray(diag.bond_max)
    nbr = np.asarray(diag.neighbors)
    bad_bond = finite & ((bmin < lo) | (bmax > hi))
    bad_nbr = finite & (nbr > capacity) if capacity is not None else np.zeros_like(finite)
    bad = ~finite | bad_bond | bad_nbr
    out = {}
    for r in np.flatnonzero(alive & bad.any(axis=0)):
        f = int(np.flatnonzero(bad[:, r])[0])
        if not finite[f, r]:
            reason = "non-finite positions, momenta or energy"
        elif bad_bond[f, r]:
            length = bmin[f, r] if bmin[f, r] < lo else bmax[f, r]
            reason = f"a bond of {length:.2f} Å outside [{lo:g}, {hi:g}] Å"
        else:
            reason = (f"a bead has {int(nbr[f, r])} beads within the network's cutoff, more "
                      f"than its {capacity} {NEIGHBOR_SLOTS} (the energy is not smooth there)")
        out[int(r)] = (f, reason)
    return out
