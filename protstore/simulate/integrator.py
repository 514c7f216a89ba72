"""BAOAB Langevin dynamics in jax-md's shape: ``init, step = baoab(force_fn, dt, kT, gamma)``.

The scheme (Leimkuhler & Matthews; jax-md's ``simulate.nvt_langevin``), one step of ``dt``::

    B  p += dt/2 F(x)            A  x += dt/2 p/m
    O  p  = c1 p + sqrt(kT (1 - c1²) m) ξ,   c1 = exp(-γ dt),  ξ ~ N(0, 1)
    A  x += dt/2 p/m             B  p += dt/2 F(x)

written operation for operation as jax-md 0.2 writes it, with the same random stream (the key
is split once in ``init``, Maxwell-Boltzmann momenta from the second half, centred; one split
per step for ξ), so the two agree to float rounding on the same force, key and steps
(``tests/test_simulate.py`` checks it when jax-md is installed: ``pip install
'protstore[md]'``). protstore keeps its own copy because jax-md imports flax, e3nn-jax, jraph
and pymatgen; the state is a NamedTuple instead of jax-md's dataclass.

Units are the caller's, consistent: protstore uses Å, ps, kcal/mol, kT in kcal/mol, γ in 1/ps and
masses in kcal/mol·ps²/Å² (:func:`protstore.simulate.masses.internal_masses`). Works under
``jax.vmap`` (replicas) and ``jax.jit``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


class BAOABState(NamedTuple):
    """position [N, 3]; momentum [N, 3] (mass × velocity); force [N, 3] at ``position``;
    mass [N, 1]; rng: the PRNG key of the next step's noise."""

    position: jnp.ndarray
    momentum: jnp.ndarray
    force: jnp.ndarray
    mass: jnp.ndarray
    rng: jnp.ndarray

    @property
    def velocity(self) -> jnp.ndarray:
        return self.momentum / self.mass


def baoab(force_fn: Callable, dt: float, kT: float, gamma: float) -> tuple[Callable, Callable]:
    """``init(key, R, mass, momentum=None, **kw) -> BAOABState`` and ``step(state, **kw)``.

    ``force_fn(R, **kw) -> [N, 3]``; ``kw`` (e.g. the parameters) are passed on to it.
    ``dt`` step, ``kT`` thermal energy, ``gamma`` friction: the defaults, which ``step(state,
    dt=, kT=, gamma=)`` and ``init(..., kT=)`` override (as jax-md's ``dt``/``kT`` keywords;
    traced values there let one compilation serve every setting). ``mass`` is [N] or a
    scalar; without ``momentum``, momenta are drawn from the Maxwell-Boltzmann distribution
    at ``kT`` and their mean is removed.
    """

    def init(key, R, mass, momentum=None, **kwargs) -> BAOABState:
        _kT = kwargs.pop("kT", kT)
        key, split = jax.random.split(key)
        force = force_fn(R, **kwargs)
        mass = jnp.asarray(mass)
        if mass.ndim == 1:
            mass = jnp.reshape(mass, (mass.shape[0], 1))
        if momentum is None:
            (k,) = jax.random.split(split, 1)
            momentum = jnp.sqrt(mass * _kT) * jax.random.normal(k, R.shape, dtype=R.dtype)
            if R.shape[0] > 1:
                momentum = momentum - jnp.mean(momentum, axis=0, keepdims=True)
        return BAOABState(R, momentum, force, mass, key)

    def step(state: BAOABState, **kwargs) -> BAOABState:
        _dt, _kT = kwargs.pop("dt", dt), kwargs.pop("kT", kT)
        _gamma = kwargs.pop("gamma", gamma)
        dt_2 = _dt / 2
        p = state.momentum + dt_2 * state.force
        x = state.position + dt_2 * p / state.mass
        c1 = jnp.exp(-_gamma * _dt)
        c2 = jnp.sqrt(_kT * (1 - c1**2))
        key, split = jax.random.split(state.rng)
        mean, sigma = c1 * p, jnp.sqrt(c2**2 * state.mass)
        p = mean + sigma * jax.random.normal(split, mean.shape, dtype=mean.dtype)
        x = x + dt_2 * p / state.mass
        force = force_fn(x, **kwargs)
        p = p + dt_2 * force
        return BAOABState(x, p, force, state.mass, key)

    return init, step


def kinetic_energy(momentum: jnp.ndarray, mass: jnp.ndarray) -> jnp.ndarray:
    """Σ p² / 2m over the last two axes (kcal/mol for protstore's units)."""
    return 0.5 * jnp.sum(momentum * momentum / mass, axis=(-2, -1))


def kinetic_temperature(momentum: jnp.ndarray, mass: jnp.ndarray, kB: float) -> jnp.ndarray:
    """2 KE / (3 N kB): Langevin dynamics conserves no momentum, so all 3N degrees of freedom
    are thermal (K for protstore's units with kB in kcal/mol/K)."""
    n = momentum.shape[-2]
    return 2.0 * kinetic_energy(momentum, mass) / (3 * n * kB)
