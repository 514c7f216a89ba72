"""Physics priors of the CG force field (domain notes section 4): global, not species-specific.

    E_prior = Σ_bonds ½ k (r - r0)²                                    (trans; X-Pro bonds below)
            + Σ_angles U_θ(cos θ)                                   (a polynomial in cos θ, below)
            + Σ_dihedrals Σ_n k_n (1 + cos(nφ - γ_n))               (n = 1..3)
            + Σ_non-bonded ε (σ / r)^p

The angle term is a function of c = cos θ, computed from the dot product of the two bonds (no
arccos), so energy and force are smooth everywhere, a straight chain (θ = π) included. On the
data's range [c_lo, c_hi] it is a Chebyshev series in s = (2c - c_lo - c_hi) / (c_hi - c_lo),

    U_θ(c) = Σ_n a_n T_n(s)                                          (n = 0..len(a) - 1)

and outside it the series' tangent plus a stiffening, U_θ(c_b) + U_θ'(c_b) (c - c_b) +
½ k_out (c - c_b)² at the nearer end c_b: continuous in value and force, and (the fit makes
U_θ' point outwards at both ends) rising away from the data, so no well can form where nothing
was observed. Priors written by protstore 0.6 and earlier hold a Fourier series in θ instead,
``{"cos": a_n, "sin": b_n}`` for Σ_n a_n cos(nθ) + b_n sin(nθ), n = 1..3; they evaluate as
they always did (through the clipped arccos).

An X-Pro bond (into a proline: the only peptide that is cis in real proteins) has a smooth
double well, the Boltzmann inversion of a two-population distribution at the fit's kT:

    U(r) = -kT ln[(1 - w) exp(-½ k (r - r0)² / kT) + w exp(-½ k_cis (r - r0_cis)² / kT)]

so a cis-proline sits in its own well (r0_cis ~2.9 Å) instead of being pulled to 3.8 Å. w is
the weight of the cis well, not the cis fraction: the fit chooses it so that the bond's own
Boltzmann distribution, r² exp(-U(r) / kT) (r² the Jacobian of a 3-D distance), has the data's
cis fraction (:func:`protstore.model.fit.cis_weight`). Priors without ``w_cis`` (written before
protstore 0.5) treat every bond as trans.

Units: r, σ in Å; θ, φ, γ in radians; c = cos θ and s dimensionless; k in kcal/mol/Å²; a, b,
k_n, ε, kT, k_out in kcal/mol; w a fraction. Parameters are a nested dict of arrays (a
pytree), fitted by :mod:`protstore.model.fit`; training keeps them fixed.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .geometry import bond_angles, bond_cosines, bond_lengths, dihedral_angles, pair_distances
from .topology import Topology

N_FOURIER = 3
ANGLE_DEGREE = 6  # of the Chebyshev series in cos θ


def default_priors() -> dict:
    """A plausible CA prior (r0 3.8 Å, weak angles/dihedrals, σ 4 Å) for tests and fallbacks."""
    z = np.zeros(N_FOURIER, np.float32)
    return {
        "bond": {"k": np.float32(50.0), "r0": np.float32(3.8), "k_cis": np.float32(50.0),
                 "r0_cis": np.float32(2.9), "w_cis": np.float32(0.05), "kT": np.float32(0.6)},
        "angle": {"cheb": np.zeros(ANGLE_DEGREE + 1, np.float32),
                  "c_range": np.array([-0.9, 0.5], np.float32), "k_out": np.float32(60.0)},
        "dihedral": {"k": z.copy(), "gamma": z.copy()},
        "repulsion": {"epsilon": np.float32(0.6), "sigma": np.float32(4.0),
                      "power": np.float32(6.0)},
    }


def fourier(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """Σ_n cos_n cos(n x) + sin_n sin(n x), n = 1..len(cos), elementwise over x."""
    n = jnp.arange(1, cos.shape[-1] + 1)
    nx = x[..., None] * n
    return jnp.sum(cos * jnp.cos(nx) + sin * jnp.sin(nx), axis=-1)


def chebyshev(s: jnp.ndarray, a: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(Σ_n a_n T_n(s), its derivative in s), n = 0..len(a) - 1, elementwise over s."""
    t_prev, t = jnp.ones_like(s), s  # T_0, T_1
    d_prev, d = jnp.zeros_like(s), jnp.ones_like(s)  # T_0', T_1'
    value, slope = a[0] * t_prev, jnp.zeros_like(s)
    for n in range(1, a.shape[-1]):
        value, slope = value + a[n] * t, slope + a[n] * d
        t_prev, t, d_prev, d = t, 2 * s * t - t_prev, d, 2 * t + 2 * s * d - d_prev
    return value, slope


def angle_energies(angle: dict, c: jnp.ndarray) -> jnp.ndarray:
    """Energy of each angle of cosine ``c`` (module docstring): the Chebyshev series on the
    data's range ``c_range``, its tangent plus ½ k_out (c - c_b)² beyond. Finite in value and
    gradient for every finite c."""
    lo, hi = angle["c_range"][0], angle["c_range"][1]
    half = 0.5 * (hi - lo)
    inside = jnp.clip(c, lo, hi)
    value, slope = chebyshev((inside - 0.5 * (hi + lo)) / half, angle["cheb"])
    out = c - inside
    return value + slope / half * out + 0.5 * angle["k_out"] * out ** 2


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
    if "cos" in p["angle"]:  # a Fourier series in θ (priors of protstore <= 0.6)
        angle = fourier(bond_angles(R, topo.angle), p["angle"]["cos"], p["angle"]["sin"])
    else:
        angle = angle_energies(p["angle"], bond_cosines(R, topo.angle))
    phi = dihedral_angles(R, topo.dihedral)
    d = pair_distances(R, topo.pair)
    rep = p["repulsion"]
    # masked pairs get d = 0; divide by 1 there instead (values and gradients stay finite)
    inv = rep["sigma"] / jnp.where(topo.pair, d, 1.0)
    return {
        "bond": jnp.sum(jnp.where(topo.bond, bond_energies(p["bond"], r, topo.prolyl), 0.0)),
        "angle": jnp.sum(jnp.where(topo.angle, angle, 0.0)),
        "dihedral": jnp.sum(jnp.where(topo.dihedral, dihedral_terms(
            phi, p["dihedral"]["k"], p["dihedral"]["gamma"]), 0.0)),
        "repulsion": jnp.sum(jnp.where(topo.pair, rep["epsilon"] * inv ** rep["power"], 0.0)),
    }


def prior_energy(p: dict, R: jnp.ndarray, topo: Topology) -> jnp.ndarray:
    """Total prior energy (kcal/mol, scalar) of one frame R [N, 3]."""
    return sum(prior_terms(p, R, topo).values())
