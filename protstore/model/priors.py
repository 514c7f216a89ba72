"""Physics priors of the CG force field (domain notes section 4): global, not species-specific.

    E_prior = Σ_bonds ½ k (r - r0)²                                    (trans; X-Pro bonds below)
            + Σ_angles Σ_n [a_n cos(nθ) + b_n sin(nθ)]              (n = 1..3, a short Fourier series)
            + Σ_dihedrals Σ_n k_n (1 + cos(nφ - γ_n))               (n = 1..3)
            + Σ_non-bonded ε (σ / r)^p

An X-Pro bond (into a proline: the only peptide that is cis in real proteins) has a smooth
double well, the Boltzmann inversion of a two-population distribution at the fit's kT:

    U(r) = -kT ln[(1 - w) exp(-½ k (r - r0)² / kT) + w exp(-½ k_cis (r - r0_cis)² / kT)]

so a cis-proline sits in its own well (r0_cis ~2.9 Å) instead of being pulled to 3.8 Å. Priors
without ``w_cis`` (written before protstore 0.5) treat every bond as trans.

Units: r, σ in Å; θ, φ, γ in radians; k in kcal/mol/Å²; a, b, k_n, ε, kT in kcal/mol; w a
fraction. Parameters are a nested dict of arrays (a pytree), fitted by
:mod:`protstore.model.fit`; training keeps them fixed.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .geometry import bond_angles, bond_lengths, dihedral_angles, pair_distances
from .topology import Topology

N_FOURIER = 3


def default_priors() -> dict:
    """A plausible CA prior (r0 3.8 Å, weak angles/dihedrals, σ 4 Å) for tests and fallbacks."""
    z = np.zeros(N_FOURIER, np.float32)
    return {
        "bond": {"k": np.float32(50.0), "r0": np.float32(3.8), "k_cis": np.float32(50.0),
                 "r0_cis": np.float32(2.9), "w_cis": np.float32(0.05), "kT": np.float32(0.6)},
        "angle": {"cos": z.copy(), "sin": z.copy()},
        "dihedral": {"k": z.copy(), "gamma": z.copy()},
        "repulsion": {"epsilon": np.float32(0.6), "sigma": np.float32(4.0),
                      "power": np.float32(6.0)},
    }


def fourier(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """Σ_n cos_n cos(n x) + sin_n sin(n x), n = 1..len(cos), elementwise over x."""
    n = jnp.arange(1, cos.shape[-1] + 1)
    nx = x[..., None] * n
    return jnp.sum(cos * jnp.cos(nx) + sin * jnp.sin(nx), axis=-1)


def dihedral_terms(phi: jnp.ndarray, k: jnp.ndarray, gamma: jnp.ndarray) -> jnp.ndarray:
    """Σ_n k_n (1 + cos(n φ - γ_n)) elementwise over φ."""
    n = jnp.arange(1, k.shape[-1] + 1)
    return jnp.sum(k * (1.0 + jnp.cos(phi[..., None] * n - gamma)), axis=-1)


def bond_energies(bond: dict, r: jnp.ndarray, prolyl: jnp.ndarray) -> jnp.ndarray:
    """[N-1] energy of each bond of length r: trans harmonic, X-Pro (``prolyl``) a double well
    (module docstring). Finite in value and gradient wherever r is finite."""
    trans = 0.5 * bond["k"] * (r - bond["r0"]) ** 2
    if "w_cis" not in bond:
        return trans
    kT, w = bond["kT"], bond["w_cis"]
    cis = 0.5 * bond["k_cis"] * (r - bond["r0_cis"]) ** 2
    double = -kT * jnp.logaddexp(jnp.log1p(-w) - trans / kT, jnp.log(w) - cis / kT)
    return jnp.where(prolyl, double, trans)


def prior_terms(p: dict, R: jnp.ndarray, topo: Topology) -> dict[str, jnp.ndarray]:
    """Energy of each prior term (kcal/mol) for one frame R [N, 3]."""
    r = bond_lengths(R, topo.bond)
    theta = bond_angles(R, topo.angle)
    phi = dihedral_angles(R, topo.dihedral)
    d = pair_distances(R, topo.pair)
    rep = p["repulsion"]
    # masked pairs get d = 0; divide by 1 there instead (values and gradients stay finite)
    inv = rep["sigma"] / jnp.where(topo.pair, d, 1.0)
    return {
        "bond": jnp.sum(jnp.where(topo.bond, bond_energies(p["bond"], r, topo.prolyl), 0.0)),
        "angle": jnp.sum(jnp.where(topo.angle, fourier(theta, p["angle"]["cos"], p["angle"]["sin"]), 0.0)),
        "dihedral": jnp.sum(jnp.where(topo.dihedral, dihedral_terms(
            phi, p["dihedral"]["k"], p["dihedral"]["gamma"]), 0.0)),
        "repulsion": jnp.sum(jnp.where(topo.pair, rep["epsilon"] * inv ** rep["power"], 0.0)),
    }


def prior_energy(p: dict, R: jnp.ndarray, topo: Topology) -> jnp.ndarray:
    """Total prior energy (kcal/mol, scalar) of one frame R [N, 3]."""
    return sum(prior_terms(p, R, topo).values())
