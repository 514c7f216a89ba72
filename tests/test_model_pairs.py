"""The network's compact pair list against the K-slot formulation it replaced, and the
neighbour census inside the jitted train and evaluation steps against the separate check."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from protstore.model import (batch_census, batch_forces, batch_neighbor_census, build_topology,
                             default_priors, load_model, neighbor_overflow, total_energy)
from protstore.model import network
from protstore.model.geometry import pair_distances, safe_norm
from protstore.train import TrainConfig, TrainState, make_eval_step, make_optimizer, make_train_step
from protstore.train.step import BATCH_KEYS, force_loss
from protstore.vocab import PAD_ID


def slot_energy(params, R, species, mask, topo):
    """protstore 0.6.1's network energy: each bead's K nearest beads (top_k), K padded slots."""
    frozen = params["frozen"]
    cutoff, centers, real = frozen["cutoff"], frozen["rbf_centers"], topo.real
    n = real.shape[0]
    k = min(frozen["neighbor_slots"].shape[0], n - 1)
    neighbour = real[:, None] & real[None, :] & ~jnp.eye(n, dtype=bool)
    d_all = jax.lax.stop_gradient(pair_distances(R, neighbour))
    _, nbr = jax.lax.top_k(-jnp.where(neighbour, d_all, jnp.inf), k)
    valid = jnp.take_along_axis(neighbour, nbr, axis=1)
    d = safe_norm(R[nbr] - R[:, None, :], valid)
    within = valid & (d < cutoff)
    fc = jnp.where(within, 0.5 * (jnp.cos(jnp.pi * d / cutoff) + 1.0), 0.0)
    width = centers[1] - centers[0]
    rbf = jnp.exp(-0.5 * ((d[..., None] - centers) / width) ** 2)
    x = params["embed"][species]
    layer = 0
    while f"interaction_{layer}" in params:
        p = params[f"interaction_{layer}"]
        w = network._apply(p["filter_2"], jax.nn.silu(network._apply(p["filter_1"], rbf)))
        w = w * fc[..., None]
        message = jnp.einsum("ikf,ikf->if", w, network._apply(p["input"], x)[nbr])
        x = x + network._apply(p["update_2"], jax.nn.silu(network._apply(p["update_1"], message)))
        layer += 1
    e_bead = network._apply(params["out"], jax.nn.silu(network._apply(params["out_hidden"], x)))
    return frozen["energy_scale"] * jnp.sum(jnp.where(real, e_bead[:, 0], 0.0))


def globules(n_frames: int, n_max: int, n_real, radius: float, seed: int = 0) -> dict:
    """A batch of compact random globules (beads >= 3 Å apart in a ball of ``radius`` Å), each
    sample with ``n_real[b]`` real beads of ``n_max`` (padding at the origin)."""
    rng = np.random.default_rng(seed)
    R = np.zeros((n_frames, n_max, 3), np.float32)
    mask = np.zeros((n_frames, n_max), np.float32)
    for b in range(n_frames):
        points = []
        while len(points) < n_real[b]:
            p = rng.uniform(-radius, radius, 3)
            if np.linalg.norm(p) <= radius and all(np.linalg.norm(p - q) >= 3.0 for q in points):
                points.append(p)
        R[b, :n_real[b]] = points
        mask[b, :n_real[b]] = 1
    real = mask > 0
    return {"R": R, "mask": mask, "F": rng.normal(0, 5, R.shape).astype(np.float32),
            "species": np.where(real, rng.integers(0, 20, mask.shape), PAD_ID).astype(np.int32),
            "resid": np.where(real, np.arange(n_max), -1).astype(np.int32),
            "chain": np.where(real, 0, -1).astype(np.int32),
            "sample_mask": np.ones(n_frames, np.float32)}


def densest_numpy(batch) -> np.ndarray:
    real = batch["mask"] > 0
    d = np.linalg.norm(batch["R"][:, :, None] - batch["R"][:, None], axis=-1)
    near = (d < 10.0) & real[:, :, None] & real[:, None, :]
    return np.where(real, near.sum(-1) - 1, 0).max(-1)


def trained_like(slots: int) -> tuple:
    model = load_model(options={"max_neighbors": slots, "cutoff": 10.0})
    p = model.init(jax.random.PRNGKey(1), {"force_rms": 5.0})
    p["out"]["w"] = 0.3 * jax.random.normal(jax.random.PRNGKey(2), p["out"]["w"].shape)
    return model, {"prior": default_priors(), "model": p}


@pytest.mark.slow
def test_pair_list_gives_the_k_slot_energy_and_forces():
    batch = globules(3, 32, [32, 21, 2], radius=10.0)
    most = int(densest_numpy(batch).max())
    assert 10 < most < 31  # dense enough that the cutoff matters, K below N - 1 below
    for slots in (most, 64):  # at the densest count, and beyond N - 1
        model, params = trained_like(slots)
        keys = ("R", "species", "resid", "chain", "mask")
        args = [batch[k] for k in keys]
        new = np.asarray(jax.jit(batch_forces(total_energy(model)))(params, *args))
        old = np.asarray(jax.jit(batch_forces(total_energy(model._replace(
            energy=slot_energy))))(params, *args))
        assert np.abs(new).max() > 1.0
        np.testing.assert_allclose(new, old, rtol=1e-4, atol=1e-4 * np.abs(old).max())

        def energies(energy):
            def one(R, species, resid, chain, mask):
                topo = build_topology(resid, chain, mask, species)
                return energy(params["model"], R, species, mask, topo)
            return np.asarray(jax.jit(jax.vmap(one))(*args))
        e_new, e_old = energies(network.network_energy), energies(slot_energy)
        np.testing.assert_allclose(e_new, e_old, rtol=1e-5, atol=1e-4)
        assert np.abs(e_new).max() > 0.1


@pytest.mark.slow
def test_train_step_with_its_census_matches_the_old_step_and_the_old_check():
    batch = globules(4, 32, [32, 24, 17, 32], radius=10.0, seed=3)
    batch["sample_mask"][3] = 0.0  # a padded sample never counts
    most = densest_numpy(batch)
    assert most[3] > most[:3].max()
    for slots in (int(most[:3].max()) - 1, int(most[:3].max())):  # overflow; none
        model, params = trained_like(slots)
        opt = make_optimizer(TrainConfig(), 10)
        state = TrainState(params, opt.init(params))
        fused = make_train_step(total_energy(model), opt, neighbors=batch_census(model))
        state_new, loss_new, census = fused(state, {k: batch[k] for k in BATCH_KEYS if k in batch})
        # 0.6.1's step: value_and_grad over all params, the census a separate program
        loss_fn = force_loss(total_energy(model._replace(energy=slot_energy)))

        @jax.jit
        def old_step(state, batch):
            (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
            updates, opt_state = opt.update(grads, state.opt_state, state.params)
            return TrainState(optax.apply_updates(state.params, updates), opt_state), loss

        counts, capacity = batch_neighbor_census(model)(params, batch["R"], batch["mask"])
        real = batch["sample_mask"] > 0
        old_flag = neighbor_overflow(np.where(real, counts, 0), capacity)
        new_flag = neighbor_overflow(census.counts, census.capacity)
        assert new_flag == old_flag
        expected = np.flatnonzero((most > slots) & real)
        assert old_flag == (int(expected[0]) if len(expected) else None)
        np.testing.assert_array_equal(np.asarray(census.counts), np.where(real, most, 0))
        assert (np.asarray(census.capacity) == slots).all()
        if new_flag is None:  # within the capacity: the same update as 0.6.1's step
            state_old, loss_old = old_step(state, {k: batch[k] for k in BATCH_KEYS if k in batch})
            assert float(loss_new) == pytest.approx(float(loss_old), rel=1e-5)
            for a, b in zip(jax.tree.leaves(state_new.params),
                            jax.tree.leaves(state_old.params)):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
        # validation's program carries the same census
        sq, n, val_census = make_eval_step(total_energy(model), batch_census(model))(
            params, {k: batch[k] for k in BATCH_KEYS if k in batch})
        np.testing.assert_array_equal(np.asarray(val_census.counts), np.asarray(census.counts))
        assert float(n) == batch["mask"][real].sum()
