"""Post-hoc EMA over checkpoints: the transformation, optax agreement, conventions, streaming,
predecessor import."""

import json
import pickle
import tracemalloc

import jax
import numpy as np
import optax
import pytest

from protstore.checkpoints import CheckpointError, read_checkpoint, write_checkpoint
from protstore.cli import main
from protstore.ema import EmaState, checkpoint_ema, compute_ema, effective_weights
from protstore.errors import PickleRefusedError, ProtstoreError
from protstore.legacy import import_checkpoints

MODEL = {"factory": "x:y", "options": {}}


def params_at(step, rng):
    return {"a": {"w": rng.normal(size=(3, 2)).astype(np.float32) + step},
            "b": rng.normal(size=4).astype(np.float32)}


def write_run(tmp_path, steps, seed=0, first=None):
    rng = np.random.default_rng(seed)
    stream = {}
    for s in steps:
        p = first if (first is not None and s == steps[0]) else params_at(s, rng)
        stream[s] = p
        write_checkpoint(tmp_path / "run" / "checkpoints" / f"step_{s:08d}", p,
                         {"kind": "checkpoint", "step": s, "epoch": 0, "model": MODEL})
    return tmp_path / "run", stream


@pytest.mark.parametrize("debias", [True, False])
def test_every_step_checkpoints_agree_with_optax_ema(tmp_path, debias):
    decay, T = 0.9, 25
    zeros = {"a": {"w": np.zeros((3, 2), np.float32)}, "b": np.zeros(4, np.float32)}
    run, stream = write_run(tmp_path, list(range(T + 1)), first=zeros)  # step 0: the initial state
    compute_ema(run, tmp_path / "ema", decay=decay, debias=debias, echo=lambda m: None)
    ours = read_checkpoint(tmp_path / "ema").params

    ema = optax.ema(decay, debias=debias)
    state = ema.init(zeros)
    for t in range(1, T + 1):
        out, state = ema.update(stream[t], state)
    for x, y in zip(jax.tree.leaves(ours), jax.tree.leaves(out)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_step_aware_and_per_checkpoint_follow_their_formulas(tmp_path):
    steps = [0, 100, 200, 300]
    run, stream = write_run(tmp_path, steps, seed=1)
    d = 0.99
    compute_ema(run, tmp_path / "step", decay=d, debias=False, echo=lambda m: None)
    compute_ema(run, tmp_path / "ckpt", decay=d, decay_per="checkpoint", debias=False,
                echo=lambda m: None)
    a = d ** 100
    e = stream[0]["b"].astype(np.float64)
    for s in steps[1:]:
        e = a * e + (1 - a) * stream[s]["b"]
    np.testing.assert_allclose(read_checkpoint(tmp_path / "step").params["b"], e, rtol=1e-5)
    e = stream[0]["b"].astype(np.float64)
    for s in steps[1:]:
        e = d * e + (1 - d) * stream[s]["b"]
    per_ckpt = read_checkpoint(tmp_path / "ckpt")
    np.testing.assert_allclose(per_ckpt.params["b"], e, rtol=1e-5)
    # per checkpoint with d = 0.99 keeps ~97% on the first checkpoint: the predecessor's mistake
    assert per_ckpt.attrs["ema"]["weights"][0] == pytest.approx(0.99 ** 3)


def test_effective_weights_reproduce_the_result(tmp_path):
    steps = [0, 7, 30, 31, 90]
    run, stream = write_run(tmp_path, steps, seed=2)
    for debias in (True, False):
        doc = compute_ema(run, tmp_path / f"e{debias}", decay=0.98, debias=debias,
                          echo=lambda m: None)
        w = np.array(doc["weights"])
        assert w.sum() == pytest.approx(1.0)
        assert (w[0] == 0) == debias
        expect = sum(wk * stream[s]["a"]["w"].astype(np.float64) for wk, s in zip(w, steps))
        got = read_checkpoint(tmp_path / f"e{debias}").params["a"]["w"]
        np.testing.assert_allclose(got, expect, rtol=1e-5)
    np.testing.assert_allclose(effective_weights(steps, decay=0.98, decay_per="step", debias=True),
                               doc_weights(steps, 0.98), rtol=1e-12)


@pytest.mark.parametrize("decay_per", ["step", "checkpoint"])
@pytest.mark.parametrize("debias", [True, False])
def test_the_transformation_is_pure_and_its_weights_are_effective_weights(decay_per, debias):
    steps = [3, 10, 11, 40, 41, 95]
    rng = np.random.default_rng(5)
    stream = [params_at(s, rng) for s in steps]
    ema = checkpoint_ema(0.97, decay_per=decay_per, debias=debias)
    state = ema.init(stream[0], steps[0])
    assert isinstance(state, EmaState) and state.step == 3 and state.initial_weight == 1.0
    for p, s in zip(stream[1:], steps[1:]):
        before = state
        state = ema.update(state, p, s)
        assert before.step < state.step == s  # a new state; the old one is left as it was
    w = effective_weights(steps, decay=0.97, decay_per=decay_per, debias=debias)
    got = ema.result(state)
    for leaf in (lambda t: t["a"]["w"], lambda t: t["b"]):
        expect = sum(wk * leaf(p).astype(np.float64) for wk, p in zip(w, stream))
        np.testing.assert_allclose(leaf(got), expect, rtol=1e-10)
        assert leaf(got).dtype == np.float64
    # the same calls on the same inputs give the same result: nothing is kept between them
    again = ema.init(stream[0], steps[0])
    for p, s in zip(stream[1:], steps[1:]):
        again = ema.update(again, p, s)
    np.testing.assert_array_equal(ema.result(again)["b"], got["b"])
    with pytest.raises(ProtstoreError, match="increasing step order"):
        ema.update(state, stream[0], steps[-1])


def test_the_transformation_refuses_bad_settings():
    with pytest.raises(ProtstoreError, match=r"decay must be in \(0, 1\), not 1.0"):
        checkpoint_ema(1.0)
    with pytest.raises(ProtstoreError, match="decay_per must be one of"):
        checkpoint_ema(0.9, decay_per="epoch")
    ema = checkpoint_ema(0.9)
    with pytest.raises(ProtstoreError, match="single checkpoint is undefined"):
        ema.result(ema.init({"b": np.ones(2)}, 0))
    plain = checkpoint_ema(0.9, debias=False)
    np.testing.assert_array_equal(plain.result(plain.init({"b": np.ones(2)}, 0))["b"], [1, 1])


def doc_weights(steps, d):
    """Debiased weights written out: (1 - d^Δk) d^(s_last - s_k), renormalised."""
    w = np.array([0.0] + [(1 - d ** (s1 - s0)) * d ** (steps[-1] - s1)
                          for s0, s1 in zip(steps, steps[1:])])
    return w / w.sum()


def test_order_comes_from_stored_steps_and_bad_checkpoints_are_skipped(tmp_path):
    rng = np.random.default_rng(3)
    d = tmp_path / "ck"
    # file names in the opposite order of the steps
    for name, step in (("z", 0), ("y", 10), ("x", 20)):
        write_checkpoint(d / name, params_at(step, rng), {"kind": "checkpoint", "step": step,
                                                          "epoch": 0, "model": MODEL})
    bad = params_at(15, rng)
    bad["b"][0] = np.inf
    write_checkpoint(d / "nan", bad, {"kind": "checkpoint", "step": 15, "epoch": 0, "model": MODEL})
    # attrs claim finite, but the stored arrays were corrupted afterwards
    write_checkpoint(d / "late", params_at(30, rng), {"kind": "checkpoint", "step": 30,
                                                      "epoch": 0, "model": MODEL})
    import zarr
    arr = zarr.open_array(d / "late" / "params" / "b", mode="r+")
    arr[0] = np.nan
    # its leaf no longer matches the digest its document carries: refused, never averaged in
    with pytest.raises(CheckpointError, match="late/params/b: leaf differs from its digest"):
        compute_ema(d, tmp_path / "ema", decay=0.9, echo=lambda m: None)
    meta = d / "late" / "zarr.json"  # a checkpoint from before the digests: skipped as NaN
    doc = json.loads(meta.read_text())
    for key in ("leaves", "fields_digest", "digest"):
        del doc["attributes"]["protstore_checkpoint"][key]
    doc["attributes"]["protstore_checkpoint"]["version"] = 2
    meta.write_text(json.dumps(doc))
    lines = []
    doc = compute_ema(d, tmp_path / "ema", decay=0.9, echo=lines.append)
    assert doc["steps"] == [0, 10, 20] and doc["sources"] == ["z", "y", "x"]
    assert any("skipping" in line and "nan" in line for line in lines)
    assert any("skipping" in line and "late" in line and "NaN" in line for line in lines)
    assert np.isfinite(read_checkpoint(tmp_path / "ema").params["b"]).all()


def test_mismatched_checkpoints_are_refused_naming_the_leaf(tmp_path):
    run, _ = write_run(tmp_path, [0, 10])
    odd = {"a": {"w": np.zeros((3, 3), np.float32)}, "b": np.zeros(4, np.float32)}
    write_checkpoint(run / "checkpoints" / "step_00000020", odd,
                     {"kind": "checkpoint", "step": 20, "epoch": 0, "model": MODEL})
    with pytest.raises(CheckpointError, match=r"step_00000020: leaf params\['a'\]\['w'\] has shape"):
        compute_ema(run, tmp_path / "ema", echo=lambda m: None)
    assert not (tmp_path / "ema").exists()


def test_dominance_warning_and_cli(tmp_path, capsys):
    run, _ = write_run(tmp_path, [0, 10, 20, 30])
    assert main(["ema", str(run), "--out", str(tmp_path / "e"), "--decay-per", "checkpoint",
                 "--no-debias", "--pkl", str(tmp_path / "e.pkl")]) == 0
    out = capsys.readouterr().out
    assert "warning: the first checkpoint carries 100% of the weight" in out
    with open(tmp_path / "e.pkl", "rb") as fh:
        assert pickle.load(fh)["a"]["w"].shape == (3, 2)
    assert main(["ema", str(run), "--out", str(tmp_path / "e")]) == 1  # never overwrites


def test_memory_does_not_grow_with_the_number_of_checkpoints(tmp_path):
    rng = np.random.default_rng(4)
    big = lambda: {"w": rng.normal(size=(256, 256)).astype(np.float32)}  # 256 KiB

    def peak(n, where):
        for s in range(n):
            write_checkpoint(where / f"step_{s:08d}", big(), {"kind": "checkpoint", "step": s,
                                                             "epoch": 0, "model": MODEL})
        tracemalloc.start()
        compute_ema(where, where.parent / f"ema{n}", decay=0.9, echo=lambda m: None)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    few, many = peak(3, tmp_path / "a"), peak(24, tmp_path / "b")
    assert many < 1.5 * few, (few, many)


def test_import_predecessor_pickles(tmp_path):
    src = tmp_path / "old"
    src.mkdir()
    for epoch in (10, 20):
        blob = {"trainer_state": {"params": {"layer": {"w": np.full(2, epoch, np.float32)}}}}
        (src / f"epoch{epoch}.pkl").write_bytes(pickle.dumps(blob))
    (src / "epoch20_error_state.pkl").write_bytes(b"not a pickle")
    (src / "epoch20.meta.pkl").write_bytes(b"not a pickle")
    with pytest.raises(PickleRefusedError, match="--allow-pickle"):
        import_checkpoints(src, tmp_path / "run")
    assert main(["import-checkpoints", str(src), "--out", str(tmp_path / "run")]) == 1
    written = import_checkpoints(src, tmp_path / "run", allow_pickle=True, steps_per_epoch=50,
                                 echo=lambda m: None)
    assert [p.name for p in written] == ["step_00000500", "step_00001000"]
    ck = read_checkpoint(written[1])
    assert ck.attrs["epoch"] == 20 and ck.attrs["kind"] == "imported"
    np.testing.assert_array_equal(ck.params["layer"]["w"], [20, 20])
    doc = compute_ema(tmp_path / "run", tmp_path / "ema", decay=0.99, echo=lambda m: None)
    assert doc["steps"] == [500, 1000]
