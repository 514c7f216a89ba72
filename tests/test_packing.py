"""Packed samples (``LoaderConfig(packing=True)``): several whole frames in one padded sample.

The packing is metadata (every frame once, bins never overfull, deterministic, exact resume,
process shares), the packed batch holds each frame's own data at its place, nothing couples
beads of different frames (the energy and forces of a packed sample are those of its frames
alone) and the loss sums are those of the same frames unpacked."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protstore.batching import BatchLoader, LoaderConfig, make_plan
from protstore.batching.loader import pack_sequence, sequence_diversity
from protstore.model import (batch_census, batch_forces, build_topology, default_priors,
                             load_model, total_energy)
from protstore.train.step import BATCH_KEYS, make_eval_step

from helpers import write_chain_store


@pytest.fixture(scope="module")
def packing_store(tmp_path_factory):
    """24 proteins of 6-30 beads (a chain along x, 3.8 Å apart), 60 frames each, in one
    bucket of N_max 30; returns (store, plan)."""
    tmp = tmp_path_factory.mktemp("packing")
    rng = np.random.default_rng(11)
    store = write_chain_store(tmp, rng, rng.integers(6, 31, size=24), 60,
                              lambda i: np.full(60, 300.0 + i), chunk_bytes=4096, noise=0.3,
                              residues=("ALA", "GLY", "PRO"))
    lengths, frames = store.lengths().to_dict(), store.summary()["n_frames"].to_dict()
    plan = make_plan(lengths, frames, boundaries=[30], split="frame", val_fraction=0.1, seed=1)
    return store, plan


def packed(**kw) -> LoaderConfig:
    return LoaderConfig(**{"batch_size": 4, "seed": 3, "packing": True, **kw})


def frames_of(batch) -> list[tuple[int, int]]:
    """(protein_index, frame) of every frame of a packed batch, in bin and segment order."""
    out = []
    for b in range(len(batch["sample_mask"])):
        seg = batch["segment"][b]
        for s in range(int(seg.max()) + 1):
            first = int(np.flatnonzero(seg == s)[0])
            out.append((int(batch["protein_index"][b, first]), int(batch["frame"][b, first])))
    return out


def test_pack_sequence_places_every_frame_once_within_its_bin():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 41, size=3000)
    p = pack_sequence(lengths, B=8, capacity=40, last="pad")
    assert sorted(p.order.tolist()) == list(range(3000))
    assert p.cuts[0] == 0 and p.cuts[-1] == 3000 and (np.diff(p.cuts) > 0).all()
    for a, b in zip(p.cuts[:-1], p.cuts[1:]):
        bins, off, seg, n = p.bin[a:b], p.offset[a:b], p.segment[a:b], lengths[p.order[a:b]]
        assert (np.diff(bins) >= 0).all() and bins.max() < 8
        for k in np.unique(bins):
            mine = bins == k
            # consecutive segments 0, 1, ... laid end to end from bead 0, within the capacity
            assert seg[mine].tolist() == list(range(mine.sum()))
            assert off[mine].tolist() == np.concatenate([[0], np.cumsum(n[mine])[:-1]]).tolist()
            assert n[mine].sum() <= 40
    # no frame moves far from its place in the sequence (the look-ahead is bounded)
    rank = np.empty(3000, np.int64)
    rank[p.order] = np.arange(3000)
    assert np.abs(rank - np.arange(3000)).max() < 200
    fill = lengths.sum() / (8 * 40 * (len(p.cuts) - 1))
    assert fill > 0.9, fill  # items up to a whole bin: a hard case
    assert pack_sequence(lengths, 8, 40).order.tolist() == p.order.tolist()
    dropped = pack_sequence(lengths[:90], 8, 40, last="drop")
    kept = pack_sequence(lengths[:90], 8, 40, last="pad")
    assert len(dropped.cuts) == len(kept.cuts) - 1  # the last batch left a bin empty


def test_packed_batches_hold_every_training_frame_once_with_its_own_data(packing_store):
    store, plan = packing_store
    loader = BatchLoader(store, plan, packed(last="pad"))
    expected = {(i, int(f)) for i, p in enumerate(plan.proteins)
                for f in plan.part_frames(p, "train")}
    seen = collections.Counter()
    R_of = {i: store.protein(p).R.values for i, p in enumerate(plan.proteins)}
    for batch in loader.epoch(0):
        assert batch["R"].shape == (4, 30, 3) and batch["protein_index"].shape == (4, 30)
        real = batch["mask"] > 0
        assert ((batch["segment"] >= 0) == real).all()
        assert (batch["protein_index"][~real] == -1).all() and (batch["R"][~real] == 0).all()
        for b in range(4):
            seg = batch["segment"][b]
            for s in range(int(seg.max()) + 1):
                beads = np.flatnonzero(seg == s)
                i, f = int(batch["protein_index"][b, beads[0]]), int(batch["frame"][b, beads[0]])
                assert (batch["protein_index"][b, beads] == i).all()
                np.testing.assert_array_equal(batch["R"][b, beads], R_of[i][f])
                assert (batch["temperature"][b, beads] == 300 + int(plan.proteins[i][1:])).all()
                assert batch["chain"][b, beads[0]] == 0
        seen.update(frames_of(batch))
    assert set(seen.values()) == {1} and set(seen) == expected


def test_packing_cuts_the_padding_and_the_steps(packing_store):
    store, plan = packing_store
    plain = BatchLoader(store, plan, LoaderConfig(batch_size=4, seed=3))
    pack = BatchLoader(store, plan, packed())
    real = sum(plan.lengths[p] * len(plan.part_frames(p, "train")) for p in plan.proteins)
    pad = {name: 1 - real / (l.steps_per_epoch(0) * 4 * 30) for name, l in
           (("plain", plain), ("packed", pack))}
    assert pad["plain"] > 0.3 and pad["packed"] < 0.1, pad
    assert pack.real_beads_per_step(0) > 1.5 * plain.real_beads_per_step(0)
    div = pack.protein_diversity(0)[0]
    assert div.batch > 4  # more frames than bins, so more proteins than a batch has samples
    assert div.batch_ratio > 0.9 and div.steps_ratio > 0.9


def test_packed_order_is_deterministic_resumable_and_split_over_processes(packing_store):
    store, plan = packing_store
    epoch = [frames_of(b) for b in BatchLoader(store, plan, packed()).epoch(1)]
    assert epoch == [frames_of(b) for b in BatchLoader(store, plan, packed()).epoch(1)]
    assert epoch != [frames_of(b) for b in BatchLoader(store, plan, packed()).epoch(2)]
    assert [frames_of(b) for b in BatchLoader(store, plan, packed()).epoch(1, start_step=5)] \
        == epoch[5:]
    shares = [[frames_of(b) for b in BatchLoader(store, plan, packed(
        process_index=i, process_count=2)).epoch(1)] for i in range(2)]
    for whole, a, b in zip(epoch, *shares):
        assert a + b == whole


def test_sequence_diversity_of_variable_batches_matches_equal_batches():
    rng = np.random.default_rng(1)
    protein = rng.integers(0, 30, size=4000)
    equal = sequence_diversity(protein, 8, steps=10)
    cut = sequence_diversity(protein, 8, steps=10, cuts=np.arange(0, 4001, 8))
    assert equal == cut


def test_packed_energy_and_forces_are_those_of_its_frames_alone(packing_store):
    store, plan = packing_store
    model = load_model(options={"max_neighbors": 16})
    params = {"prior": default_priors(), "model": model.init(jax.random.PRNGKey(0),
                                                             {"force_rms": 5.0})}
    params["model"]["out"]["w"] = 0.1 * jnp.ones_like(params["model"]["out"]["w"])  # not zero
    energy = total_energy(model)
    batch = next(iter(BatchLoader(store, plan, packed(batch_size=2, shuffle=False))))
    assert batch["segment"].max() >= 2  # bins with three frames or more
    forces = jax.jit(batch_forces(energy))(params, *(batch[k] for k in (
        "R", "species", "resid", "chain", "mask", "segment")))
    census = batch_census(model)(params, batch["R"], batch["mask"], batch["segment"])
    for b in range(2):
        seg = batch["segment"][b]
        total, most = 0.0, 0
        for s in range(int(seg.max()) + 1):
            beads = np.flatnonzero(seg == s)
            one = {k: batch[k][b, beads] for k in ("R", "species", "resid", "chain", "mask")}
            topo = build_topology(one["resid"], one["chain"], one["mask"], one["species"])
            total += float(energy(params, one["R"], one["species"], one["mask"], topo))
            alone = -jax.grad(energy, argnums=1)(params, one["R"], one["species"], one["mask"],
                                                 topo)
            np.testing.assert_allclose(forces[b, beads], alone, rtol=1e-4, atol=1e-3)
            most = max(most, int(model.neighbors(params["model"], one["R"], one["mask"])[0]))
        topo = build_topology(batch["resid"][b], batch["chain"][b], batch["mask"][b],
                              batch["species"][b], batch["segment"][b])
        packed_e = float(energy(params, batch["R"][b], batch["species"][b], batch["mask"][b],
                                topo))
        np.testing.assert_allclose(packed_e, total, rtol=1e-5, atol=1e-3)
        assert int(census[0][b]) == most
    # the check has teeth: as one frame (no segments) the frames, which overlap in space, interact
    b = 1
    topo = build_topology(batch["resid"][b], batch["chain"][b], batch["mask"][b],
                          batch["species"][b])
    coupled = float(energy(params, batch["R"][b], batch["species"][b], batch["mask"][b], topo))
    assert abs(coupled - packed_e) > 1.0


def test_packed_and_unpacked_batches_give_the_same_loss_sums(packing_store):
    store, plan = packing_store
    model = load_model(options={"max_neighbors": 16})
    params = {"prior": default_priors(), "model": model.init(jax.random.PRNGKey(0),
                                                             {"force_rms": 5.0})}
    evaluate = make_eval_step(total_energy(model), batch_census(model))
    sums = {}
    for packing in (False, True):
        loader = BatchLoader(store, plan, LoaderConfig(batch_size=4, split="val", last="pad",
                                                       shuffle=False, packing=packing))
        sq = n = 0.0
        for batch in loader.epoch(0):
            a, b, _ = evaluate(params, {k: batch[k] for k in BATCH_KEYS})
            sq, n = sq + float(a), n + float(b)
        sums[packing] = (sq, n)
    assert sums[True][1] == sums[False][1] > 0
    np.testing.assert_allclose(sums[True][0], sums[False][0], rtol=1e-5)


@pytest.mark.slow
def test_training_packs_when_it_pays_and_never_for_a_model_that_cannot(packing_store, tmp_path):
    from protstore.errors import ConfigError
    from protstore.model import default_priors
    from protstore.train import TrainConfig, train

    store, plan = packing_store
    lines = []
    config = TrainConfig(epochs=1, warmup_steps=2, model_options={"max_neighbors": 16},
                         loader=LoaderConfig(batch_size=4))
    result = train(store, plan, tmp_path / "auto", config, priors=default_priors(),
                   progress=False, echo=lines.append)
    packing = [line for line in lines if line.startswith("packing frames")]
    assert packing, lines
    steps = int(packing[0].split()[2])
    assert result.metrics[-1]["step"] == steps
    assert np.isfinite(result.metrics[-1]["val_rmse"])
    # frames/step is the packed count: more frames than the 4 samples a step
    assert result.metrics[-1]["frames"] > 4 * steps
    off = train(store, plan, tmp_path / "off", config.replace(packing="off"),
                priors=default_priors(), progress=False, echo=lambda m: None)
    assert off.metrics[-1]["step"] > 1.5 * steps
    # the same parameters at step 0 (the priors alone) validate the same, packed or not
    assert result.metrics[0]["val_rmse"] == pytest.approx(off.metrics[0]["val_rmse"], rel=1e-5)
    with pytest.raises(ConfigError, match="does not take packed samples"):
        train(store, plan, tmp_path / "on", config.replace(packing="on", model_options={},
                                                           model="plugin_models:zero"),
              priors=default_priors(), progress=False, echo=lambda m: None)


def test_graphs_of_a_packed_batch_are_one_per_frame(packing_store):
    pytest.importorskip("torch_geometric")
    from protstore.torch import batch_to_graphs

    store, plan = packing_store
    batch = next(iter(BatchLoader(store, plan, packed(shuffle=False))))
    graphs = batch_to_graphs(batch)
    frames = frames_of(batch)
    assert graphs.num_graphs == len(frames) > 4
    assert list(zip(graphs.protein_index.tolist(), graphs.frame.tolist())) == frames
    assert graphs.pos.shape[0] == int(batch["mask"].sum())
