"""The force field: topology rules, NaN-safe geometry with padding, priors and their fit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protstore.model import (batch_forces, build_topology, default_priors, load_model,
                             total_energy)
from protstore.model.fit import fit_bond, fit_dihedral, fit_repulsion
from protstore.model.geometry import bond_angles, dihedral_angles
from protstore.vocab import PAD_ID

KT = 0.0019872041 * 300


def test_topology_breaks_bonds_at_chain_changes_and_resid_gaps():
    resid = jnp.array([1, 2, 3, 5, 6, 1, 2, -1])
    chain = jnp.array([0, 0, 0, 0, 0, 1, 1, -1])
    mask = jnp.array([1, 1, 1, 1, 1, 1, 1, 0])
    t = build_topology(resid, chain, mask)
    assert t.bond.tolist() == [True, True, False, True, False, True, False]
    assert t.angle.tolist() == [True, False, False, False, False, False]
    assert not t.dihedral.any()
    pair = np.asarray(t.pair)
    assert not pair[0, 1] and not pair[0, 2]  # one and two bonds apart: excluded
    assert pair[2, 3]  # a resid gap: not bonded, so a non-bonded pair
    assert pair[4, 5]  # across the chain break
    assert not pair[:, 7].any() and not pair[7].any()  # padding
    assert not np.tril(pair).any()


def test_angles_and_dihedrals_known_values():
    R = jnp.array([[1.0, 0, 0], [0, 0, 0], [0, 1, 0], [0, 1, 1]])
    assert float(bond_angles(R, jnp.ones(2, bool))[0]) == pytest.approx(np.pi / 2)
    # IUPAC: looking down b1, the far bond rotated clockwise is positive
    # here b1 = -x, b2 = y, b3 = z: the far bond is the near one turned anticlockwise, -90°
    phi = float(dihedral_angles(R, jnp.ones(1, bool))[0])
    assert phi == pytest.approx(-np.pi / 2)
    mirror = R * jnp.array([1.0, 1.0, -1.0])  # the mirror image turns the other way
    assert float(dihedral_angles(mirror, jnp.ones(1, bool))[0]) == pytest.approx(np.pi / 2)
    R2 = R.at[3].set(jnp.array([1.0, 1, 0]))
    assert float(dihedral_angles(R2, jnp.ones(1, bool))[0]) == pytest.approx(0.0, abs=1e-6)


def _frame(n_real, n_max, seed=0):
    rng = np.random.default_rng(seed)
    R = np.zeros((n_max, 3), np.float32)
    steps = rng.normal(size=(n_real, 3))
    R[:n_real] = np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=1, keepdims=True), 0)
    species = np.full(n_max, PAD_ID, np.int32)
    species[:n_real] = rng.integers(0, 20, n_real)
    resid = np.full(n_max, -1, np.int32)
    resid[:n_real] = np.arange(n_real)
    chain = np.where(np.arange(n_max) < n_real, 0, -1).astype(np.int32)
    mask = (np.arange(n_max) < n_real).astype(np.float32)
    return R, species, resid, chain, mask


@pytest.fixture(scope="module")
def params():
    """The network with its output layer no longer zero (as after training): at init the
    learned energy is exactly 0, and these tests would not see the network at all. Its
    capacity (16) holds every neighbour of the tests' frames: beyond it the energy loses pairs
    (an error wherever a frame is used, never a result)."""
    model = load_model(options={"max_neighbors": 16})
    net = model.init(jax.random.PRNGKey(0), {"force_rms": 3.0})
    w = 0.1 * jax.random.normal(jax.random.PRNGKey(1), net["out"]["w"].shape)
    return model, {"prior": default_priors(), "model": dict(net, out=dict(net["out"], w=w))}


@pytest.mark.parametrize("mode", ["full", "prior-only", "ml-only"])
@pytest.mark.slow
def test_padding_changes_nothing_and_is_nan_free(params, mode):
    model, p = params
    forces = jax.jit(batch_forces(total_energy(model, mode)))
    small = [x[None] for x in _frame(11, 11)]
    padded = [x[None] for x in _frame(11, 20)]
    most, capacity = model.neighbors(p["model"], small[0][0], small[4][0])
    assert int(most) <= int(capacity)  # within the capacity: the energy is the exact sum
    F_small = np.asarray(forces(p, *small))
    F_pad = np.asarray(forces(p, *padded))
    assert np.abs(F_small).max() > 0.1  # forces to compare, from the network too (ml-only)
    np.testing.assert_allclose(F_pad[0, :11], F_small[0], rtol=2e-5, atol=2e-5)
    assert (F_pad[0, 11:] == 0).all()

    def loss(p):
        return jnp.sum(forces(p, *padded) ** 2)
    grads = jax.grad(loss)(p)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    assert np.isfinite(F_pad).all()


@pytest.mark.slow
def test_forces_are_minus_the_energy_gradient(params):
    model, p = params
    energy = total_energy(model)
    R, species, resid, chain, mask = _frame(9, 9, seed=2)
    topo = build_topology(resid, chain, mask)
    F = np.asarray(batch_forces(energy)(p, R[None], species[None], resid[None], chain[None],
                                        mask[None]))[0]
    h = 1e-2
    R64 = R.astype(np.float64)
    e_jit = jax.jit(lambda X: energy(p, X, species, mask, topo))
    e = lambda X: float(e_jit(jnp.asarray(X, jnp.float32)))
    dR = np.zeros_like(R64)
    dR[4, 1] = h
    numeric = -(e(R64 + dR) - e(R64 - dR)) / (2 * h)
    assert F[4, 1] == pytest.approx(numeric, rel=2e-2, abs=2e-2)


def _sample(density, lo, hi, n, seed):
    """Rejection samples of an unnormalised density on [lo, hi]."""
    rng = np.random.default_rng(seed)
    x = np.linspace(lo, hi, 4001)
    top = density(x).max()
    out = []
    while sum(len(o) for o in out) < n:
        c = rng.uniform(lo, hi, n)
        out.append(c[rng.uniform(0, top, n) < density(c)])
    return np.concatenate(out)[:n]


def test_bond_fit_recovers_k_and_r0():
    k, r0 = 80.0, 3.82
    r = _sample(lambda x: x ** 2 * np.exp(-0.5 * k * (x - r0) ** 2 / KT), 3.3, 4.3, 200_000, 0)
    fitted, _ = fit_bond(r, KT)
    assert float(fitted["r0"]) == pytest.approx(r0, abs=0.01)
    assert float(fitted["k"]) == pytest.approx(k, rel=0.08)


def test_dihedral_fit_recovers_the_series():
    k = np.array([0.6, 0.0, 0.3])
    gamma = np.array([0.9, 0.0, 0.0])
    U = lambda x: sum(k[n] * (1 + np.cos((n + 1) * x - gamma[n])) for n in range(3))
    phi = _sample(lambda x: np.exp(-U(x) / KT), -np.pi, np.pi, 300_000, 1)
    fitted, _ = fit_dihedral(phi, KT)
    assert np.asarray(fitted["k"]) == pytest.approx(k, abs=0.05)
    assert float(fitted["gamma"][0]) == pytest.approx(0.9, abs=0.1)
    assert float(fitted["gamma"][2]) == pytest.approx(0.0, abs=0.15)


def test_repulsion_fit_finds_the_wall():
    sigma, p = 4.0, 12
    d = _sample(lambda x: x ** 2 * np.exp(-KT * (sigma / x) ** p / KT), 2.5, 12.0, 300_000, 2)
    fitted, _ = fit_repulsion(d, KT)
    assert 4 <= float(fitted["power"]) <= 12
    # the fitted wall reaches kT at about the same distance as the true one
    r_kt = float(fitted["sigma"])
    assert r_kt == pytest.approx(sigma, rel=0.1)


def test_model_spec_errors_are_clear():
    from protstore.errors import ProtstoreError
    with pytest.raises(ProtstoreError, match="package.module:factory"):
        load_model("no_colon")
    with pytest.raises(ProtstoreError, match="cannot import"):
        load_model("protstore.nonexistent:factory")


def test_a_model_spec_is_hashable_data_that_builds_its_model():
    import pickle

    from protstore.errors import ConfigError
    from protstore.model import DEFAULT_MODEL, EnergyModel, ModelSpec

    a = ModelSpec(DEFAULT_MODEL, {"max_neighbors": 8, "cutoff": 10.0})
    b = ModelSpec(DEFAULT_MODEL, [("cutoff", 10.0), ("max_neighbors", 8)])
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.options == (("cutoff", 10.0), ("max_neighbors", 8))  # sorted items
    assert a != ModelSpec(DEFAULT_MODEL, {"max_neighbors": 9, "cutoff": 10.0})
    assert ModelSpec() == ModelSpec(DEFAULT_MODEL, {}) and ModelSpec().options == ()
    doc = a.to_doc()
    assert doc == {"factory": DEFAULT_MODEL, "options": {"cutoff": 10.0, "max_neighbors": 8}}
    assert ModelSpec.from_doc(doc) == a and ModelSpec.from_doc({"factory": "x:y"}).options == ()
    assert pickle.loads(pickle.dumps(a)) == a  # travels to dask workers as it is
    nested = ModelSpec("x:y", {"widths": [4, 8], "sub": {"b": 1, "a": [2]}})
    hash(nested)
    assert nested.options_dict == {"sub": {"a": [2], "b": 1}, "widths": [4, 8]}
    model = a.load()
    assert isinstance(model, EnergyModel) and model.neighbors is not None
    with pytest.raises(ConfigError, match=r"model 'x:y' options\['bad'\]: a set is not"):
        ModelSpec("x:y", {"bad": {1, 2}})
    with pytest.raises(ConfigError, match="package.module:factory"):
        ModelSpec("no_colon").load()
