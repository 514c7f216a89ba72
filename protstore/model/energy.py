"""The combined CG energy, forces, and the plug-in contract for learned energies.

Plug-in contract (``--model package.module:factory``)::

    factory(**options) -> EnergyModel(init, energy[, neighbors[, packing]])
    init(key, stats) -> params            # nested dict of arrays; stats: {"force_rms": float,
                                          #   "max_neighbors": cutoff -> int (the data's densest)}
    energy(params, R, species, mask, topo) -> scalar kcal/mol, for ONE frame:
        R [N, 3] Å, species [N] int (protstore vocabulary, PAD_ID for padding),
        mask [N] (1 real, 0 padded), topo: protstore.model.Topology of that frame

The energy must be a pure JAX function, must not depend on padded beads, and must be NaN-free in
value and gradient when padded beads sit at the origin. A model that declares ``packing=True``
also takes packed samples (several frames one after another in one padded sample, told apart by
``topo.segment``): its energy couples no beads of different segments, and its ``neighbors``
takes ``(params, R, mask, segment)``; training packs samples only for such models. Leaves
under a ``"frozen"`` key are never
trained. protstore vmaps and jits it (one compilation per bucket shape) and adds the priors:

    E_full(params) = E_prior(params["prior"], R, topo) + model.energy(params["model"], R, ...)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..errors import ConfigError, ProtstoreError
from .priors import prior_energy
from .topology import Topology, build_topology, one_segment

MODES = ("full", "prior-only", "ml-only")
DEFAULT_MODEL = "protstore.model.network:schnet"
#: The learned energies protstore ships. A checkpoint (or a run's config.json) may name these by
#: itself; any other factory is imported and called only when the user names it (``--model``,
#: ``model=``): a stored name is data, and importing what data names runs code.
BUILTIN_MODELS = (DEFAULT_MODEL,)


class EnergyModel(NamedTuple):
    """A learned energy: ``init(key, stats) -> params``; ``energy(params, R, species, mask, topo)``;
    optionally ``neighbors(params, R, mask) -> (largest neighbour count, capacity)`` for one frame,
    which training and evaluation check on every frame (a model with a fixed neighbour capacity
    is smooth only within it). ``packing``: the model takes packed samples (module
    docstring)."""

    init: Callable
    energy: Callable
    neighbors: Callable | None = None
    packing: bool = False


def trusted_model(stored: str, named: str | None, where: str) -> str:
    """The model factory to build for parameters stored with factory ``stored`` when the user
    named ``named`` (None: nothing named): the user's choice, else ``stored`` if it is one of
    :data:`BUILTIN_MODELS`; anything else is refused, naming the flag that accepts it."""
    if named is not None:
        return named
    if stored in BUILTIN_MODELS:
        return stored
    raise ConfigError(f"{where}: stored with model factory {stored!r}, which is not one of "
                      f"protstore's built-in models ({', '.join(BUILTIN_MODELS)}); building it "
                      f"imports and runs the code it names, so pass --model {stored} (model=) "
                      f"only if you trust it")


def load_model(spec: str = DEFAULT_MODEL, options: dict | None = None) -> EnergyModel:
    """Build the EnergyModel named by ``"package.module:factory"`` with ``options``.

    ``spec`` must come from the user or :data:`BUILTIN_MODELS` (see :func:`trusted_model`):
    this imports its module and calls the factory."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"model {spec!r}: expected 'package.module:factory'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"model {spec!r}: cannot import ({exc})") from None
    if not callable(factory):
        raise ConfigError(f"model {spec!r}: {attr} is not a factory function")
    try:
        model = factory(**(options or {}))
        if not isinstance(model, EnergyModel):
            model = EnergyModel(*model)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model {spec!r} with options {options or {}}: {exc}") from None
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
    """``forces(params, R, species, resid, chain, mask, segment=None) -> F`` over a batch
    [B, N, 3] (kcal/mol/Å; exactly 0 on padded beads); ``segment`` [B, N] for packed samples.
    Not jitted: callers jit their own step."""

    def one(params, R, species, resid, chain, mask, segment):
        topo = build_topology(resid, chain, mask, species, segment)
        F = -jax.grad(energy, argnums=1)(params, R, species, mask, topo)
        return jnp.where(topo.real[:, None], F, 0.0)

    vmapped = jax.vmap(one, in_axes=(None, 0, 0, 0, 0, 0, 0))

    def forces(params, R, species, resid, chain, mask, segment=None):
        segment = one_segment(mask) if segment is None else segment
        return vmapped(params, R, species, resid, chain, mask, segment)

    return forces


def batch_census(model: EnergyModel) -> Callable | None:
    """``census(params, R, mask, segment=None) -> (counts [B], capacity [B])``: the model's
    neighbour capacity check over a batch R [B, N, 3], mask [B, N] (and segment [B, N] of packed
    samples; ``params`` the full params; None if the model has none). Not jitted: the training
    and evaluation steps run it inside their own jitted functions, so it costs no compilation
    and no host sync of its own."""
    if model.neighbors is None:
        return None
    if not model.packing:
        one = jax.vmap(lambda params, R, mask: model.neighbors(params["model"], R, mask),
                       in_axes=(None, 0, 0))
        return lambda params, R, mask, segment=None: one(params, R, mask)
    both = jax.vmap(lambda params, R, mask, segment: model.neighbors(params["model"], R, mask,
                                                                       segment),
                    in_axes=(None, 0, 0, 0))
    return lambda params, R, mask, segment=None: both(
        params, R, mask, one_segment(mask) if segment is None else segment)


def batch_neighbor_census(model: EnergyModel) -> Callable | None:
    """:func:`batch_census`, jitted (one compilation per bucket shape), for a check on its
    own."""
    census = batch_census(model)
    return None if census is None else jax.jit(census)


def neighbor_overflow(counts, capacity) -> int | None:
    """The first sample whose densest bead has more neighbours than the capacity, or None."""
    import numpy as np

    over = np.flatnonzero(np.asarray(counts) > np.asarray(capacity))
    return int(over[0]) if len(over) else None


def overflow_message(count: int, capacity: int) -> str:
    """The clause every neighbour-capacity error shares (training, evaluation)."""
    return (f"a bead has {count} beads within the network's cutoff, more than its {capacity} "
            "neighbour slots")


def squared_error_sums(F_pred, F_ref, mask, sample_mask):
    """(Σ ||ΔF||² over real beads of real samples, number of such beads); F [B, N, 3]."""
    weight = mask * sample_mask[:, None]
    diff = jnp.where(weight[..., None] > 0, F_pred - F_ref, 0.0)
    return jnp.sum(diff * diff), jnp.sum(weight)
