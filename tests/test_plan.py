import itertools

import numpy as np
import pytest

from protstore.batching import PlanError, load_plan, make_plan, save_plan
from protstore.errors import StoreError
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


def _bucket_counts(lengths, boundaries):
    return np.bincount(assign(np.asarray(lengths), boundaries)).tolist()


def test_equal_count_buckets_are_as_even_as_the_ties_allow():
    # a cut inside a run of equal lengths used to put the whole run below it, and two cuts in
    # one run collapsed into one: 4 + 6 proteins in 2 buckets became one bucket of 10
    assert _bucket_counts([10] * 4 + [20] * 6, equal_count_boundaries([10] * 4 + [20] * 6, 2)) \
        == [4, 6]
    ties = [10] + [20] * 6 + [30, 40]
    assert equal_count_boundaries(ties, 3) == [10, 20]  # 1, 6, 2 (not 7, 2)
    lengths = {f"p{i}": n for i, n in enumerate(ties)}
    plans = [make_plan(lengths, {p: 5 for p in lengths}, split="protein", val_fraction=0.3,
                       seed=seed) for seed in (0, 0, 1)]
    assert [len(b.proteins) for b in plans[0].buckets] == [1, 6, 2]
    assert plans[0] == plans[1] and plans[0].boundaries == plans[2].boundaries
    rng = np.random.default_rng(0)
    for _ in range(60):  # lengths full of ties: the most even buckets there are, as many as can be
        lengths = rng.choice([30, 60, 90, 120, 150], size=rng.integers(3, 25),
                             p=rng.dirichlet(np.ones(5)))
        k = int(rng.integers(2, 5))
        counts = _bucket_counts(lengths, equal_count_boundaries(lengths, k))
        counts = [c for c in counts if c]
        distinct = sorted(set(lengths.tolist()))
        best = min(sum(c * c for c in _bucket_counts(lengths, list(cuts)) if c)
                   for cuts in itertools.combinations(distinct[:-1], min(k, len(distinct)) - 1))
        assert len(counts) == min(k, len(distinct)), (lengths, k)
        assert sum(c * c for c in counts) == best, (lengths, k, counts)
    distinct = np.arange(20, 120, 10)  # no ties: the cuts are where they always were
    for k in (2, 3, 4):
        counts = _bucket_counts(distinct, equal_count_boundaries(distinct, k))
        assert np.cumsum(counts)[:-1].tolist() == [round(j * 10 / k) for j in range(1, k)]


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
    # blocks of 4 frames (the default, 40 autocorrelation times, is one block per run here)
    f = make_plan(lengths, frames, split="frame", val_fraction=0.25, block_frames=4, seed=1)
    tr, va = f.split.frames("p3", 40, "train"), f.split.frames("p3", 40, "val")
    assert len(va) == 10 and not set(tr) & set(va) and len(tr) + len(va) == 40
    again = make_plan(lengths, frames, split="frame", val_fraction=0.25, block_frames=4, seed=1)
    np.testing.assert_array_equal(va, again.split.frames("p3", 40, "val"))
    other = make_plan(lengths, frames, split="frame", val_fraction=0.25, block_frames=4, seed=2)
    assert not np.array_equal(va, other.split.frames("p3", 40, "val"))  # the seed decides


def test_plan_round_trips_through_the_store(demo_store):
    plan = make_plan(demo_store.lengths().to_dict(),
                     demo_store.summary()["n_frames"].to_dict(), name="rt", strategy="optimal",
                     n_buckets=2, split="frame", val_fraction=0.3)
    save_plan(demo_store, plan, overwrite=True)
    loaded = load_plan(demo_store, "rt")
    assert loaded == plan
    assert "rt" in demo_store.plans()
    with pytest.raises(StoreError, match=r"plans/rt exists; pass --overwrite to replace it"):
        save_plan(demo_store, plan)


def _sixty_proteins():
    """60 proteins of 30-400 residues and 5-50 frames (seeded)."""
    rng = np.random.default_rng(4)
    lengths = {f"p{i}": int(n) for i, n in enumerate(rng.integers(30, 400, size=60))}
    return lengths, {p: int(rng.integers(5, 50)) for p in lengths}


def test_protein_split_is_stratified_by_bucket():
    lengths, frames = _sixty_proteins()
    plan = make_plan(lengths, frames, boundaries=[60, 300], split="protein",
                     val_fraction=0.25, seed=0)
    sizes = [len(b.proteins) for b in plan.buckets]
    assert min(sizes) < 12 < max(sizes)  # buckets of very different sizes
    for bucket in plan.buckets:
        held = set(bucket.proteins) & set(plan.split.val_proteins)
        assert len(held) == max(1, round(0.25 * len(bucket.proteins)))
    with pytest.raises(PlanError, match="at least 2 proteins"):
        make_plan({"a": 10}, {"a": 5}, split="protein", val_fraction=0.2)


def _planned_store(tmp_path):
    """Proteins aa1 and bb2 (24 frames each) ingested into tmp_path/s.zarr, and their plan
    ``p`` (one bucket, a frame split) saved there: (url, store, plan)."""
    import protstore
    from protstore.batching import plan_from_store
    from protstore.ingest import ingest

    from helpers import write_mdcath

    for i, domain in enumerate(("aa1", "bb2")):
        write_mdcath(tmp_path / f"{domain}.h5", domain=domain, frames=8, seed=i)
    url = str(tmp_path / "s.zarr")
    store = protstore.open_store(url, mode="a")
    ingest([tmp_path / "aa1.h5", tmp_path / "bb2.h5"], store, progress=False, log=lambda m: None)
    plan = plan_from_store(store, name="p", n_buckets=1, split="frame", val_fraction=0.25)
    save_plan(store, plan)
    return url, store, plan


def test_a_stale_plan_is_refused_by_every_command(tmp_path, capsys):
    import protstore
    from protstore.batching import BatchLoader, LoaderConfig
    from protstore.cli import main
    from protstore.ingest import IngestOptions, ingest

    from helpers import write_mdcath

    url, store, plan = _planned_store(tmp_path)
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


def test_a_plan_is_stale_when_a_protein_is_ingested_again_from_other_data(tmp_path, capsys):
    """Same frame count, other coordinates: the plan's fingerprint of bb2 no longer matches."""
    import protstore
    from protstore.batching import BatchLoader, LoaderConfig
    from protstore.cli import main

    from helpers import write_mdcath

    url, store, plan = _planned_store(tmp_path)
    old = make_plan(plan.lengths, plan.frames, name="old", n_buckets=1)  # no fingerprints
    save_plan(store, old)
    assert store.plan("p").fingerprints == plan.fingerprints  # stored and read back
    before = store.protein_doc("bb2")
    (tmp_path / "other").mkdir()
    write_mdcath(tmp_path / "other" / "bb2.h5", domain="bb2", frames=8, seed=7)
    assert main(["ingest", str(tmp_path / "other" / "bb2.h5"), "--store", url, "--overwrite",
                 "--no-progress"]) == 0
    capsys.readouterr()
    store = protstore.open_store(url)
    after = store.protein_doc("bb2")
    assert after["n_frames"] == before["n_frames"]
    assert after["sources"][0]["checksum"] != before["sources"][0]["checksum"]
    message = "plan 'p' is stale: protein 'bb2' was ingested again from other data"
    with pytest.raises(PlanError, match=message):
        store.plan("p")
    with pytest.raises(PlanError, match=message):
        BatchLoader(store, plan, LoaderConfig(batch_size=2))
    assert main(["train", url, "--plan", "p", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert message in err and "make the plan again" in err and len(err.splitlines()) == 1
    assert main(["validate", url, "--no-progress"]) == 1
    assert message in capsys.readouterr().out
    # a plan written before fingerprints keeps the frame-count check only, and still loads
    assert store.plan("old").fingerprints == {}
    assert main(["bucket", url, "--name", "p", "--overwrite", "--split", "frame"]) == 0
    assert protstore.open_store(url).plan("p").fingerprints["bb2"] != plan.fingerprints["bb2"]

def _ar1(n: int, phi: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    noise = rng.normal(size=n)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + noise[t]
    return x


def test_integrated_autocorrelation_time_of_known_series():
    from protstore.timeseries import integrated_time

    # AR(1): τ = (1 + φ) / (1 - φ)
    for phi in (0.5, 0.8, 0.9):
        tau = np.mean([integrated_time(_ar1(20000, phi, s)) for s in range(3)])
        assert tau == pytest.approx((1 + phi) / (1 - phi), rel=0.15), phi
    assert integrated_time(np.random.default_rng(0).normal(size=5000)) == pytest.approx(1, abs=0.2)
    assert integrated_time(np.ones(50)) == 1.0 and integrated_time(np.arange(2.0)) == 1.0


def test_run_series_fed_in_blocks_equals_the_whole_runs():
    from protstore.timeseries import RunSeries, run_times

    rng = np.random.default_rng(1)
    # a slowly breathing chain: every bead follows one AR(1) amplitude, plus noise
    amp = _ar1(300, 0.95, 2)
    R = (np.arange(12)[None, :, None] * np.array([3.8, 0, 0]) * (1 + 0.01 * amp[:, None, None])
         + rng.normal(scale=0.05, size=(300, 12, 3)))
    whole = run_times(R, [200, 100])
    series = RunSeries(12)
    for a in range(0, 300, 64):  # blocks that straddle the run boundary at 200
        b = min(a + 64, 300)
        cut = np.clip(200, a, b)
        series.add(0, R[a:cut])
        series.add(1, R[cut:b])
    assert series.times() == pytest.approx(whole)
    # the breathing is slow: several frames per independent sample; noise alone is not
    noise = run_times(R[:1] + rng.normal(scale=0.3, size=(300, 12, 3)), [200, 100])
    assert whole[0] > 3 and max(noise) < 1.6, (whole, noise)


def _near(labels: np.ndarray, runs, taus, parts=(1, 2)) -> tuple[int, int]:
    """Brute force: held-out frames within τ of a training frame of their run."""
    near = total = 0
    start = 0
    for n, tau in zip(runs, taus):
        part = labels[start:start + n]
        train = np.flatnonzero(part == 0)
        for i in np.flatnonzero(np.isin(part, parts)):
            total += 1
            near += bool(len(train)) and np.abs(train - i).min() <= tau
        start += n
    return near, total


def test_frame_split_blocks_follow_the_autocorrelation_time():
    lengths = {f"p{i}": 30 + i for i in range(6)}
    runs = {p: [1000, 1000, 1000] for p in lengths}
    frames = {p: 3000 for p in lengths}
    taus = {p: [3.0 + i, 6.0, 2.5] for i, p in enumerate(lengths)}
    plan = make_plan(lengths, frames, split="frame", val_fraction=0.1, test_fraction=0.1,
                     runs=runs, autocorr=taus, seed=4)
    s = plan.split
    assert s.block_tau == 40 and s.block_frames is None
    near = total = 0
    for p in lengths:
        labels = s.labels(p, 3000)
        assert (labels == 1).sum() == 300 and (labels == 2).sum() == 300
        a, b = _near(labels, runs[p], taus[p])
        near, total = near + a, total + b
    assert s.leakage_tau == pytest.approx(near / total)
    assert s.leakage_tau <= 0.05
    assert "within one autocorrelation time" in plan.table()
    # the same data split into fixed blocks of 20 frames: far more held-out frames near training
    fixed = make_plan(lengths, frames, split="frame", val_fraction=0.1, test_fraction=0.1,
                      runs=runs, autocorr=taus, seed=4, block_frames=20)
    assert fixed.split.leakage_tau > 0.3
    # train, validation and test are disjoint and cover every frame
    p = "p2"
    parts = [set(s.frames(p, 3000, k).tolist()) for k in ("train", "val", "test")]
    assert sum(map(len, parts)) == 3000 and not (parts[0] & parts[1] or parts[1] & parts[2])


def test_short_correlated_runs_are_reported_and_run_split_holds_out_whole_runs():
    lengths = {f"p{i}": 40 for i in range(4)}
    lengths["solo"] = 50
    runs = {p: [100] * 5 for p in lengths}
    runs["solo"] = [500]
    frames = {p: 500 for p in lengths}
    taus = {p: [20.0] * len(runs[p]) for p in lengths}
    # one long correlated run per protein: a 100-frame block has 20 frames within τ of training
    frame = make_plan(lengths, frames, split="frame", val_fraction=0.2,
                      runs={p: [500] for p in lengths}, autocorr={p: [20.0] for p in lengths})
    assert frame.split.leakage_tau == pytest.approx(0.2)
    assert "--split run" in frame.table()
    plan = make_plan(lengths, frames, split="run", val_fraction=0.2, test_fraction=0.2,
                     runs=runs, autocorr=taus, seed=1)
    s = plan.split
    assert s.leakage_tau == 0.0 and s.val_leakage == 0.0
    for p in lengths:
        labels = s.labels(p, 500)
        per_run = labels.reshape(-1, 100) if p != "solo" else labels[None]
        assert (per_run == per_run[:, :1]).all()  # whole runs
        if p == "solo":  # one run: it trains
            assert (labels == 0).all()
        else:
            assert sorted(per_run[:, 0].tolist()) == [0, 0, 0, 1, 2]
    assert "whole runs" in plan.table()


def test_test_proteins_are_held_out_besides_validation_and_old_splits_are_unchanged():
    lengths, frames = _sixty_proteins()
    plain = make_plan(lengths, frames, boundaries=[60, 300], split="protein",
                      val_fraction=0.25, seed=0)
    plan = make_plan(lengths, frames, boundaries=[60, 300], split="protein",
                     val_fraction=0.25, test_fraction=0.15, seed=0)
    # validation is drawn as before; test comes from the rest, bucket by bucket
    assert plan.split.val_proteins == plain.split.val_proteins
    assert not set(plan.split.val_proteins) & set(plan.split.test_proteins)
    for bucket in plan.buckets:
        n = len(bucket.proteins)
        test = set(bucket.proteins) & set(plan.split.test_proteins)
        val = set(bucket.proteins) & set(plan.split.val_proteins)
        assert len(test) == min(max(1, round(0.15 * n)), n - 1 - len(val))  # one trains
    p = plan.split.test_proteins[0]
    assert len(plan.split.frames(p, frames[p], "test")) == frames[p]
    assert len(plan.split.frames(p, frames[p], "val")) == 0
    assert plan.split.has_test and not plain.split.has_test
    # a plan document without the new fields (0.6) loads and splits as it did
    from protstore.batching.plan import BucketPlan
    from protstore.schemas import check_document
    old = plain.to_doc()
    assert not {"test_fraction", "test_proteins", "autocorr"} & set(old["split"])
    check_document(plan.to_doc(), "plan", "plan")
    assert BucketPlan.from_doc(old) == plain
    frame = make_plan(lengths, frames, split="frame", val_fraction=0.25, seed=1,
                      runs={q: [frames[q]] for q in lengths}, block_frames=4)
    for q in list(lengths)[:5]:  # 0.6's block draw, reproduced
        r = np.random.default_rng([1, __import__("zlib").crc32(q.encode())])
        n_val, val = int(round(0.25 * frames[q])), np.zeros(frames[q], bool)
        blocks = [(a, min(a + 4, frames[q])) for a in range(0, frames[q], 4)]
        taken = 0
        for b in r.permutation(len(blocks)):
            if taken >= n_val:
                break
            a, e = blocks[b]
            e = min(e, a + n_val - taken)
            val[a:e] = True
            taken += e - a
        np.testing.assert_array_equal(frame.split.held_out(q, frames[q]), val)
    with pytest.raises(PlanError, match="add up to less than 1"):
        make_plan(lengths, frames, split="frame", val_fraction=0.5, test_fraction=0.5)


def test_ingest_records_each_runs_autocorrelation_time(demo_store):
    from protstore.batching import plan_from_store
    from protstore.timeseries import run_times

    store, recorded = demo_store, {}
    for pid in store.proteins:  # every run's time, measured again on the stored frames
        runs = [r["n_frames"] for r in store.protein_doc(pid)["runs"]]
        measured = run_times(store.protein(pid, chunks=None).R.values, runs)
        recorded[pid] = [r["autocorr_frames"] for r in store.protein_doc(pid)["runs"]]
        assert recorded[pid] == pytest.approx(measured, abs=1e-3), pid
    plan = plan_from_store(store, name="auto", split="frame", val_fraction=0.25)
    for pid, taus in recorded.items():
        assert plan.split.autocorr[pid] == pytest.approx(taus), pid
    assert plan.split.leakage_tau is not None


def test_a_damaged_plan_document_is_a_finding_of_validate_and_an_error_naming_it(
        tmp_path, capsys):
    """A plan whose document lost a field: validate reports it (no crash); loading it is a
    one-line error naming the plan."""
    import json

    import protstore
    from protstore.batching import load_plan, make_plan, save_plan
    from protstore.cli import main
    from protstore.errors import ProtstoreError
    from helpers import write_mdcath

    write_mdcath(tmp_path / "mdcath_dataset_p1.h5", domain="p1")
    assert main(["ingest", str(tmp_path / "mdcath_dataset_p1.h5"), "--store",
                 str(tmp_path / "s.zarr"), "--no-progress"]) == 0
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    save_plan(store, make_plan(store.lengths().to_dict(), store.summary()["n_frames"].to_dict(),
                               name="p", n_buckets=1, split="none"))
    meta_path = tmp_path / "s.zarr" / "plans" / "p" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    del meta["attributes"]["protstore_plan"]["buckets"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ProtstoreError, match=r"plans/p.*buckets"):
        load_plan(protstore.open_store(tmp_path / "s.zarr"), "p")
    capsys.readouterr()
    assert main(["validate", str(tmp_path / "s.zarr"), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "plans/p: unreadable plan" in out and "1 error(s)" in out
