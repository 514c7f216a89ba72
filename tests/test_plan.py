import itertools

import numpy as np
import pytest

from protstore.batching import PlanError, load_plan, make_plan, save_plan
from protstore.batching.plan import (assign, equal_count_boundaries, optimal_boundaries,
                                     padded_cost, waste)


def test_boundaries_are_inclusive_upper_bounds():
    np.testing.assert_array_equal(assign(np.array([50, 100, 101, 200, 201, 500]), [100, 200]),
                                  [0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize("bad", [[0, 10], [-5], [100, 100], [200, 100], [1.5]])
def test_boundaries_are_validated(bad):
    with pytest.raises(PlanError, match="boundaries must be"):
        make_plan({"a": 10, "b": 20}, {"a": 1, "b": 1}, boundaries=bad)


def test_explicit_boundaries_pad_to_longest_and_drop_empty_buckets():
    lengths = {"a": 30, "b": 90, "c": 150, "d": 420}
    frames = {p: 10 for p in lengths}
    plan = make_plan(lengths, frames, boundaries=[100, 200, 300])
    assert [b.n_max for b in plan.buckets] == [90, 150, 420]  # (200, 300] is empty: dropped
    assert [b.proteins for b in plan.buckets] == [["a", "b"], ["c"], ["d"]]
    plan8 = make_plan(lengths, frames, boundaries=[100, 200], pad_multiple=8)
    assert [b.n_max for b in plan8.buckets] == [96, 152, 424]


def test_default_is_three_equal_count_buckets():
    lengths = {f"p{i}": n for i, n in enumerate([20, 30, 40, 50, 60, 70, 80, 90, 100])}
    plan = make_plan(lengths, {p: 5 for p in lengths})
    assert [len(b.proteins) for b in plan.buckets] == [3, 3, 3]
    assert plan.boundaries == [40, 70]


def _brute_force(lengths, frames, k, cost):
    distinct = sorted(set(lengths))
    best = padded_cost(lengths, frames, [], cost)
    for r in range(1, k):
        for cuts in itertools.combinations(distinct[:-1], r):
            best = min(best, padded_cost(lengths, frames, list(cuts), cost))
    return best


@pytest.mark.parametrize("cost", ["linear", "pair"])
@pytest.mark.parametrize("seed", range(6))
def test_optimal_matches_brute_force_and_beats_equal_count(cost, seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 400, size=9)
    frames = rng.integers(1, 50, size=9)
    for k in (2, 3, 4):
        opt = padded_cost(lengths, frames, optimal_boundaries(lengths, frames, k, cost), cost)
        assert opt == pytest.approx(_brute_force(lengths, frames, k, cost))
        eq = padded_cost(lengths, frames, equal_count_boundaries(lengths, k), cost)
        assert opt <= eq + 1e-9


def test_frame_weighting_matters():
    # one long protein with many frames: optimal isolates it even with 2 buckets
    lengths = np.array([50, 60, 70, 300])
    frames = np.array([1, 1, 1, 1000])
    assert optimal_boundaries(lengths, frames, 2, "linear") == [70]
    assert waste(lengths, frames, [70], "linear") < waste(lengths, frames, [50], "linear")


def test_max_waste_picks_the_fewest_buckets():
    rng = np.random.default_rng(0)
    lengths = {f"p{i}": int(n) for i, n in enumerate(rng.integers(50, 500, size=40))}
    frames = {p: 10 for p in lengths}
    plan = make_plan(lengths, frames, max_waste=0.1)
    assert plan.total_waste() <= 0.1
    fewer = make_plan(lengths, frames, n_buckets=len(plan.buckets) - 1, strategy="optimal")
    assert fewer.total_waste() > 0.1


def test_splits_are_deterministic_and_disjoint():
    lengths = {f"p{i}": 20 + i for i in range(10)}
    frames = {p: 40 for p in lengths}
    a = make_plan(lengths, frames, split="protein", val_fraction=0.2, seed=3)
    b = make_plan(lengths, frames, split="protein", val_fraction=0.2, seed=3)
    assert a.split.val_proteins == b.split.val_proteins and len(a.split.val_proteins) == 3
    # stratified: one held-out protein in each of the 3 buckets (3-4 proteins each)
    assert all(len(set(bk.proteins) & set(a.split.val_proteins)) == 1 for bk in a.buckets)
    f = make_plan(lengths, frames, split="frame", val_fraction=0.25, seed=1)
    tr, va = f.split.frames("p3", 40, "train"), f.split.frames("p3", 40, "val")
    assert len(va) == 10 and not set(tr) & set(va) and len(tr) + len(va) == 40
    np.testing.assert_array_equal(va, f.split.frames("p3", 40, "val"))


def test_plan_round_trips_through_the_store(demo_store):
    plan = make_plan(demo_store.lengths().to_dict(),
                     demo_store.summary()["n_frames"].to_dict(), name="rt", strategy="optimal",
                     n_buckets=2, split="frame", val_fraction=0.3)
    save_plan(demo_store, plan, overwrite=True)
    loaded = load_plan(demo_store, "rt")
    assert loaded == plan
    assert "rt" in demo_store.plans()
    with pytest.raises(Exception, match="exists"):
        save_plan(demo_store, plan)


def test_protein_split_is_stratified_by_bucket():
    rng = np.random.default_rng(4)
    lengths = {f"p{i}": int(n) for i, n in enumerate(rng.integers(30, 400, size=60))}
    frames = {p: int(rng.integers(5, 50)) for p in lengths}
    plan = make_plan(lengths, frames, boundaries=[60, 300], split="protein",
                     val_fraction=0.25, seed=0)
    sizes = [len(b.proteins) for b in plan.buckets]
    assert min(sizes) < 12 < max(sizes)  # buckets of very different sizes
    for bucket in plan.buckets:
        held = set(bucket.proteins) & set(plan.split.val_proteins)
        assert len(held) == max(1, round(0.25 * len(bucket.proteins)))
    with pytest.raises(PlanError, match="at least 2 proteins"):
        make_plan({"a": 10}, {"a": 5}, split="protein", val_fraction=0.2)


def test_a_stale_plan_is_refused_by_every_command(tmp_path, capsys):
    import protstore
    from protstore.batching import BatchLoader, LoaderConfig, plan_from_store
    from protstore.cli import main
    from protstore.ingest import IngestOptions, ingest

    from conftest import write_mdcath

    for i, domain in enumerate(("aa1", "bb2")):
        write_mdcath(tmp_path / f"{domain}.h5", domain=domain, frames=8, seed=i)
    url = str(tmp_path / "s.zarr")
    store = protstore.open_store(url, mode="a")
    ingest([tmp_path / "aa1.h5", tmp_path / "bb2.h5"], store, progress=False, log=lambda m: None)
    plan = plan_from_store(store, name="p", n_buckets=1, split="frame", val_fraction=0.25)
    save_plan(store, plan)
    # bb2 is ingested again from a longer trajectory: the plan's frame counts are stale
    write_mdcath(tmp_path / "bb2.h5", domain="bb2", frames=12, seed=5)
    ingest([tmp_path / "bb2.h5"], protstore.open_store(url, mode="a"),
           IngestOptions(overwrite=True), progress=False, log=lambda m: None)
    store = protstore.open_store(url)
    message = "plan 'p' is stale: protein 'bb2' has 36 frames, the plan was made when it had 24"
    with pytest.raises(PlanError, match=message):
        store.plan("p")
    with pytest.raises(PlanError, match=message):
        BatchLoader(store, plan, LoaderConfig(batch_size=2))
    ckpt = tmp_path / "ckpt"
    from protstore.checkpoints import write_checkpoint
    from protstore.model import default_priors
    write_checkpoint(ckpt, {"prior": default_priors(), "model": {"w": np.zeros(1, np.float32)}},
                     {"kind": "final", "step": 0, "epoch": 0,
                      "model": {"factory": "plugin_models:zero", "options": {}}})
    for args in (["train", url, "--plan", "p", "--out", str(tmp_path / "run")],
                 ["fit-priors", url, "--plan", "p", "--out", str(tmp_path / "pr.json")],
                 ["evaluate", url, "--plan", "p", "--params", str(ckpt), "--out",
                  str(tmp_path / "ev"), "--model", "plugin_models:zero"],
                 ["export-npz", url, "--plan", "p", "--out", str(tmp_path / "npz")]):
        assert main(args) == 1, args[0]
        err = capsys.readouterr().err
        assert message in err and "make the plan again" in err, args[0]
    assert main(["bucket", url, "--name", "p", "--overwrite", "--split", "frame"]) == 0
    assert protstore.open_store(url).plan("p").frames["bb2"] == 36
