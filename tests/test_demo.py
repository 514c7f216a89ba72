"""The end-to-end demo pipeline on a tiny configuration (what `make demo` runs, scaled down)."""

import pytest

from protstore.demo import DemoConfig
from protstore.demo.pipeline import run_demo
from protstore.simulate import SimulateConfig
from protstore.train import TrainConfig


@pytest.mark.slow
def test_demo_pipeline_end_to_end(tmp_path):
    config = DemoConfig(lengths=(14, 22, 31), two_chain=(1,), temperatures=(320, 348),
                        replicas=1, frames=20, stride=10, equilibration=100, seed=5)
    lines = []
    short = SimulateConfig(n_steps=200, n_replicas=2, dt_fs=10.0, friction=5.0, save_every=10)
    out = run_demo(tmp_path, config, progress=False, echo=lines.append,
                   train_config=TrainConfig(epochs=1, batch_size=8, checkpoint_every_steps=2),
                   simulate_config=short)
    assert out["ok"]  # corrupt frames are excluded and reported; every protein is written
    import protstore
    doc = protstore.open_store(out["store"]).protein_doc("demo00n014")
    assert len(doc["excluded_frames"]) == 2
    for name in ("info.txt", "plan.txt", "priors.json", "priors.png", "summary.txt",
                 "summary.png", "run/final", "run/loss_curve.png", "ema",
                 "eval/final_per_residue_rmse.png", "eval/final_per_residue_rmse.txt"):
        assert (tmp_path / name).exists(), name
    # the held-out proteins simulated with priors only and with the trained model, compared
    held_out = protstore.open_store(out["store"]).plan("demo").split.val_proteins
    assert sorted(out["comparisons"]) == sorted(held_out)
    for protein, res in out["comparisons"].items():
        assert list(res.table.trajectory.values) == ["prior-only", "trained"]
        assert (tmp_path / "simulate" / protein / "compare.json").exists()
        assert (tmp_path / "simulate" / f"{protein}_trained.zarr").exists()
    summary = (tmp_path / "summary.txt").read_text()
    assert "Jensen-Shannon" in summary and f"{held_out[0]:<10s} prior-only" in summary
    s = out["summary"]
    assert s["zero-force baseline"] > s["prior-only"]
    assert abs(s["EMA params"] - s["final params"]) < 0.5 * s["final params"]
    # a second run reuses the data and the finished training run
    lines.clear()
    run_demo(tmp_path, config, progress=False, echo=lines.append, simulate_config=short)
    assert any("reusing" in line and "files" in line for line in lines)
    assert any("reusing the finished run" in line for line in lines)
