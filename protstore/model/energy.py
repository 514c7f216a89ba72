"""The combined CG energy, forces, and the plug-in contract for learned energies.

Plug-in contract (``--model package.module:factory``)::

    factory(**options) -> EnergyModel(init, energy)
    init(key, stats) -> params            # nested dict of arrays; stats: {"force_rms": float}
    energy(params, R, species, mask, topo) -> scalar kcal/mol, for ONE frame:
        R [N, 3] Å, species [N] int (protstore vocabulary, PAD_ID for padding),
        mask [N] (1 real, 0 padded), topo: protstore.model.Topology of that frame

The energy must be a pure JAX function, must not depend on padded beads, and must be NaN-free in
value and gradient when padded beads sit at the origin. Leaves under a ``"frozen"`` key are never
trained. protstore vmaps and jits it (one compilation per bucket shape) and adds the priors:

    E_full(params) = E_prior(params["prior"], R, topo) + model.energy(params["model"], R, ...)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..errors import ProtstoreError
from .priors import prior_energy
from .topology import Topology, build_topology

MODES = ("full", "prior-only", "ml-only")
DEFAULT_MODEL = "protstore.model.network:schnet"


class EnergyModel(NamedTuple):
    """A learned energy: ``init(key, stats) -> params``; ``energy(params, R, species, mask, topo)``."""

    init: Callable
    energy: Callable


def load_model(spec: str = DEFAULT_MODEL, options: dict | None = None) -> EnergyModel:
    """Build the EnergyModel named by ``"package.module:factory"`` with ``options``."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ProtstoreError(f"model {spec!r}: expected 'package.module:factory'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ProtstoreError(f"model {spec!r}: cannot import ({exc})") from None
    model = factory(**(options or {}))
    if not isinstance(model, EnergyModel):
        model = EnergyModel(*model)
    return model


def total_energy(model: EnergyModel, mode: str = "full") -> Callable:
    """``energy(params, R, species, mask, topo)`` of the combined model in ``mode``."""
    if mode not in MODES:
        raise ProtstoreError(f"mode must be one of {MODES}, not {mode!r}")

    def energy(params, R, species, mask, topo: Topology):
        e = 0.0
        if mode != "ml-only":
            e = e + prior_energy(params["prior"], R, topo)
        if mode != "prior-only":
            e = e + model.energy(params["model"], R, species, mask, topo)
        return e

    return energy


def batch_forces(energy: Callable) -> Callable:
    """``forces(params, R, species, resid, chain, mask) -> F`` over a batch [B, N, 3]
    (kcal/mol/Å; exactly 0 on padded beads). Not jitted: callers jit their own step."""

    def one(params, R, species, resid, chain, mask):
        topo = build_topology(resid, chain, mask)
        F = -jax.grad(energy, argnums=1)(params, R, species, mask, topo)
        return jnp.where(topo.real[:, None], F, 0.0)

    return jax.vmap(one, in_axes=(None, 0, 0, 0, 0, 0))


def squared_error_sums(F_pred, F_ref, mask, sample_mask):
    """(Σ ||ΔF||² over real beads of real samples, number of such beads); F [B, N, 3]."""
    weight = mask * sample_mask[:, None]
    diff = jnp.where(weight[..., None] > 0, F_pred - F_ref, 0.0)
    return jnp.sum(diff * diff), jnp.sum(weight)
