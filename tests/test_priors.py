"""The priors' fits on exact Boltzmann samples: a repulsion σ that random halves agree on, an
angle prior in cos θ with its minimum inside the data and a continuous force through θ = π,
an X-Pro double well whose own Boltzmann distribution has the data's cis fraction."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protstore.model import build_topology, default_priors, prior_energy
from protstore.model.fit import (CIS_MAX, fit_angle, fit_bond, fit_repulsion, priors_from_doc,
                                 priors_to_doc)
from protstore.train.priors import write_priors
from protstore.model.geometry import bond_angles
from protstore.model.priors import angle_energies, bond_energies, fourier, prior_terms

KB = 0.0019872041
KT = KB * 300


def _exact_samples(density, lo, hi, n, seed):
    """n samples of an unnormalised 1-D density on [lo, hi] by inverse CDF on a fine grid."""
    x = np.linspace(lo, hi, 400_001)
    cdf = np.cumsum(density(x))
    return np.interp(np.random.default_rng(seed).random(n), cdf / cdf[-1], x)


# --- repulsion ------------------------------------------------------------------------------

SIGMA, POWER = 4.0, 12.0


def _pair_density(r):
    """r² exp(-(σ/r)^p) (the wall at ε = kT) times a smooth bulk peaked at 6.5 Å."""
    return r ** 2 * np.exp(-(SIGMA / r) ** POWER) * np.exp(-0.5 * ((r - 6.5) / 4.0) ** 2)


def test_repulsion_sigma_agrees_across_random_halves_and_with_the_truth():
    d = _exact_samples(_pair_density, 2.0, 12.0, 200_000, 3)
    full = float(fit_repulsion(d, KT)[0]["sigma"])
    rng = np.random.default_rng(4)
    halves = []
    for _ in range(4):
        idx = rng.permutation(len(d))
        halves += [float(fit_repulsion(d[part], KT)[0]["sigma"])
                   for part in (idx[:len(d) // 2], idx[len(d) // 2:])]
    assert np.max(np.abs(np.array(halves) / full - 1)) < 0.02, (full, halves)
    # the statistic: where the exact potential of mean force, -kT ln(p / r²), is kT above its
    # minimum (the bulk adds a little to the wall, so this is a bit beyond σ)
    r = np.linspace(3.0, 8.0, 50001)
    pmf = -np.log(_pair_density(r) / r ** 2)
    crossing = r[np.argmin(np.abs(pmf[: np.argmin(pmf)] - pmf.min() - 1.0))]
    assert full == pytest.approx(crossing, rel=0.02)
    assert full == pytest.approx(SIGMA, rel=0.05)


def test_repulsion_at_two_temperatures_is_one_wall():
    wall = lambda kT: (lambda r: r ** 2 * np.exp(-KT * (SIGMA / r) ** POWER / kT))
    d = np.concatenate([_exact_samples(wall(KB * T), 2.0, 12.0, 100_000, int(T))
                        for T in (300.0, 400.0)])
    kT = np.repeat([KB * 300.0, KB * 400.0], 100_000)
    fitted, _ = fit_repulsion(d, kT)
    # each temperature's wall is kT high at its own distance; the fit averages them
    assert float(fitted["sigma"]) == pytest.approx(SIGMA * (1 - 0.5 * np.log(4 / 3) / POWER),
                                                   rel=0.02)
    assert 10.0 <= float(fitted["power"]) <= 12.0


# --- angle ----------------------------------------------------------------------------------

def _angle_U(c):
    """A CA-like angle potential (kcal/mol) in c = cos θ: helix (θ ~ 91°) and strand (~120°)
    wells a kT apart."""
    return KT * (300 * (c + 0.02) ** 2 * (c + 0.5) ** 2 + 0.5 * c)


@pytest.fixture(scope="module")
def angle_fit():
    # the density of c is p(θ) / sin θ: exp(-U(c) / kT) on [-1, 1]
    c = _exact_samples(lambda c: np.exp(-_angle_U(c) / KT), -1.0, 1.0, 300_000, 5)
    return fit_angle(np.arccos(c), KT)[0]


def _U(angle, c):
    return np.asarray(angle_energies({k: jnp.asarray(v) for k, v in angle.items()},
                                     jnp.asarray(c, jnp.float32)), np.float64)


def test_angle_fit_recovers_a_known_potential_with_moderate_coefficients(angle_fit):
    c = np.linspace(*angle_fit["c_range"], 400)
    weight = np.exp(-_angle_U(c) / KT)  # where the data are
    diff = _U(angle_fit, c) - _angle_U(c)
    diff -= np.average(diff, weights=weight)
    assert np.sqrt(np.average(diff ** 2, weights=weight)) < 0.1 * KT
    # coefficients the size of the potential's features, not large ones that cancel
    span = np.ptp(_angle_U(c))
    assert np.abs(angle_fit["cheb"]).max() < span
    assert np.abs(angle_fit["cheb"]).sum() < 2 * span


def _assert_rises_out_of_the_data(angle):
    lo, hi = (float(v) for v in angle["c_range"])
    c = np.linspace(-1.0, 1.0, 4001)
    U = _U(angle, c)
    assert lo <= c[np.argmin(U)] <= hi
    assert (np.diff(U[c <= lo]) < 0).all() and (np.diff(U[c >= hi]) > 0).all()


def test_angle_minimum_inside_the_data_and_no_well_outside(angle_fit):
    _assert_rises_out_of_the_data(angle_fit)
    # data cut off on the side where the potential still falls (a well that would lie beyond
    # them): the fit is held to rise out of the data range, the minimum stays inside
    c = _exact_samples(lambda c: np.exp(-12 * (c + 0.9) ** 2) * (c > -0.5), -1.0, 0.2,
                       100_000, 6)
    angle = fit_angle(np.arccos(c), KT)[0]
    _assert_rises_out_of_the_data(angle)
    lo = float(angle["c_range"][0])
    assert _U(angle, np.array([lo - 0.05]))[0] > _U(angle, np.array([lo]))[0]


def _three_beads(t):
    """Beads 0, 1, 2 with the angle at bead 1 equal to t (rad; beyond π the chain bends back
    the other way)."""
    return jnp.stack([jnp.array([3.8, 0.0, 0.0]), jnp.zeros(3),
                      3.8 * jnp.stack([jnp.cos(t), jnp.sin(t), 0.0])])


def _angle_force_across_pi(angle):
    """Force on bead 0 (kcal/mol/Å) from the angle prior alone, on a path through θ = π."""
    p = default_priors()
    p["angle"] = angle
    p["repulsion"] = dict(p["repulsion"], epsilon=np.float32(0.0))
    topo = build_topology(jnp.arange(3), jnp.zeros(3, jnp.int32), jnp.ones(3))
    t = np.pi + np.linspace(-0.05, 0.05, 2001)  # 5·10⁻⁵ rad apart
    force = jax.jit(jax.vmap(lambda t: -jax.grad(lambda R: prior_energy(p, R, topo))(
        _three_beads(t))[0]))
    return np.asarray(force(jnp.asarray(t, jnp.float32)), np.float64)


def test_angle_force_is_continuous_through_a_straight_chain(angle_fit):
    F = _angle_force_across_pi(angle_fit)
    assert np.isfinite(F).all()
    # the prior's slope at θ = π is that of a smooth function of cos θ: steps of 5·10⁻⁵ rad
    # change the force by about that fraction of its scale, no jump
    scale = np.abs(F).max() + 1.0
    assert np.abs(np.diff(F, axis=0)).max() < 1e-3 * scale
    # the Fourier series in θ of older priors, through the clipped arccos, jumps there
    old = {"cos": np.array([0.8, -1.7, -0.1], np.float32),
           "sin": np.array([-12.5, 0.3, 0.5], np.float32)}
    F_old = _angle_force_across_pi(old)
    assert np.abs(np.diff(F_old, axis=0)).max() > 1.0


def test_older_priors_with_a_fourier_angle_load_and_evaluate_as_before(tmp_path):
    p = default_priors()
    p["angle"] = {"cos": np.array([0.8, -1.7, -0.1], np.float32),
                  "sin": np.array([-12.5, 0.3, 0.5], np.float32)}
    write_priors(priors_to_doc(p, None, created_by="protstore 0.6.1"), tmp_path / "old.json")
    loaded = priors_from_doc(json.loads((tmp_path / "old.json").read_text()))
    R = jnp.asarray(np.cumsum(np.random.default_rng(0).normal(size=(6, 3)) * 2.2, 0),
                    jnp.float32)
    topo = build_topology(jnp.arange(6), jnp.zeros(6, jnp.int32), jnp.ones(6))
    got = float(prior_terms(loaded, R, topo)["angle"])
    expect = float(jnp.sum(fourier(bond_angles(R, topo.angle), p["angle"]["cos"],
                                   p["angle"]["sin"])))
    assert got == pytest.approx(expect, rel=1e-6)


@pytest.mark.slow
def test_cos_angle_prior_is_nan_free_with_padding_and_straight_chains(angle_fit):
    p = default_priors()
    p["angle"] = angle_fit
    n_real, n = 5, 8
    R = np.zeros((n, 3), np.float32)
    R[:n_real, 0] = 3.8 * np.arange(n_real)  # a straight chain: every θ = π
    mask = (np.arange(n) < n_real).astype(np.float32)
    resid = np.where(mask > 0, np.arange(n), -1)
    topo = build_topology(jnp.asarray(resid), jnp.asarray(np.where(mask > 0, 0, -1)),
                          jnp.asarray(mask))
    E, G = jax.value_and_grad(lambda R: prior_energy(p, R, topo))(jnp.asarray(R))
    assert np.isfinite(float(E)) and np.isfinite(np.asarray(G)).all()
    assert (np.asarray(G)[n_real:] == 0).all()


# --- X-Pro double well ----------------------------------------------------------------------

def _bonds(rng, n, fraction_cis_prolyl):
    """Trans CA-CA bonds (k = 190 kcal/mol/Å², r0 3.81 Å, Boltzmann with r²), a tenth of them
    X-Pro, that fraction of which cis (near 2.95 Å)."""
    r = _exact_samples(lambda x: x ** 2 * np.exp(-0.5 * 190 * (x - 3.81) ** 2 / KT),
                       3.0, 4.6, n, int(rng.integers(1 << 30)))
    prolyl = np.zeros(n, bool)
    prolyl[: n // 10] = True
    n_cis = int(round(fraction_cis_prolyl * prolyl.sum()))
    r[:n_cis] = rng.normal(2.95, 0.06, n_cis)
    return r, prolyl


def _boltzmann_cis_fraction(bond):
    """Fraction of the X-Pro prior's own Boltzmann distribution r² exp(-U / kT) below CIS_MAX,
    by quadrature of the prior's energy as the model evaluates it."""
    r = np.linspace(1.5, 5.5, 400_001)
    U = np.asarray(bond_energies({k: jnp.float32(v) for k, v in bond.items()},
                                 jnp.asarray(r, jnp.float32), jnp.ones(len(r), bool)),
                   np.float64)
    rho = r ** 2 * np.exp(-(U - U.min()) / float(bond["kT"]))
    return rho[r < CIS_MAX].sum() / rho.sum()


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.30])
def test_x_pro_double_well_reproduces_the_data_cis_fraction(fraction):
    r, prolyl = _bonds(np.random.default_rng(int(fraction * 100)), 100_000, fraction)
    bond, info = fit_bond(r, KT, prolyl)
    observed = np.mean(r[prolyl] < CIS_MAX)
    assert info["cis_fraction"] == pytest.approx(observed)
    assert _boltzmann_cis_fraction(bond) == pytest.approx(observed, rel=0.10)
    # the cis well's weight is not the fraction: the wells differ in width and in r²
    assert float(bond["w_cis"]) > 1.2 * observed
