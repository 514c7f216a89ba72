"""Plug-in energies used by the tests (the ``--model package.module:factory`` contract)."""

import jax.numpy as jnp

from protstore.model import EnergyModel


def pairwise_species(scale: float = 1.0) -> EnergyModel:
    """A tiny learned energy: a species-pair weight on a Gaussian of the distance."""

    def init(key, stats):
        return {"w": jnp.zeros((22, 22), jnp.float32), "frozen": {"scale": jnp.float32(scale)}}

    def energy(params, R, species, mask, topo):
        from protstore.model.geometry import pair_distances
        d = pair_distances(R, topo.pair)
        w = params["w"][species[:, None], species[None, :]]
        return params["frozen"]["scale"] * jnp.sum(jnp.where(topo.pair, w * jnp.exp(-(d - 6.0) ** 2), 0.0))

    return EnergyModel(init, energy)


def exploding() -> EnergyModel:
    """An energy whose forces are NaN: training must stop and never save it as a checkpoint."""

    def init(key, stats):
        return {"w": jnp.ones(3, jnp.float32)}

    def energy(params, R, species, mask, topo):
        return jnp.sum(params["w"]) * jnp.sqrt(-jnp.sum(R * R) - 1.0)

    return EnergyModel(init, energy)


def exploding_later() -> EnergyModel:
    """Finite forces at its initial params, NaN gradients there: the first update makes every
    parameter NaN, so the loss of step 2 is NaN."""

    def init(key, stats):
        return {"w": jnp.ones(3, jnp.float32)}

    def energy(params, R, species, mask, topo):
        return jnp.sum(jnp.sqrt(-(params["w"] - 1.0) ** 2)) * jnp.sum(R * R)

    return EnergyModel(init, energy)


def zero() -> EnergyModel:
    """No learned energy at all: in ml-only mode the predicted forces are exactly zero."""

    def init(key, stats):
        return {"w": jnp.zeros(1, jnp.float32)}

    def energy(params, R, species, mask, topo):
        return params["w"][0] * 0.0 * jnp.sum(jnp.where(mask[:, None] > 0, R, 0.0))

    return EnergyModel(init, energy)


def unstable_when_shifted(threshold: float = 50.0, capacity: int | None = None) -> EnergyModel:
    """Zero energy but NaN wherever the frame's mean y exceeds ``threshold`` Å (a replica
    started from a shifted frame is unstable at once); with ``capacity``, a neighbour census
    that always exceeds it (every bead counts all the others)."""

    def init(key, stats):
        return {"w": jnp.zeros(1, jnp.float32)}

    def energy(params, R, species, mask, topo):
        return params["w"][0] + jnp.where(jnp.mean(R[:, 1]) > threshold, jnp.nan, 0.0)

    def neighbors(params, R, mask):
        return jnp.int32(R.shape[0] - 1), jnp.int32(capacity)

    return EnergyModel(init, energy, None if capacity is None else neighbors)
