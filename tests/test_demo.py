"""The end-to-end demo pipeline on a tiny configuration (what `make demo` runs, scaled down)."""

import numpy as np
import pytest

from protstore.demo import DemoConfig
from protstore.demo.pipeline import run_demo
from protstore.simulate import SimulateConfig
from protstore.batching import LoaderConfig
from protstore.train import TrainConfig


@pytest.mark.slow
def test_demo_pipeline_end_to_end(tmp_path):
    config = DemoConfig(lengths=(14, 22, 31), two_chain=(1,), temperatures=(320, 348),
                        replicas=1, frames=20, stride=10, equilibration=100, seed=5)
    lines = []
    short = SimulateConfig(n_steps=200, n_replicas=2, dt_fs=10.0, friction=5.0, save_every=10)
    out = run_demo(tmp_path, config, progress=False, echo=lines.append,
                   train_config=TrainConfig(epochs=1, checkpoint_every_steps=2,
                                            loader=LoaderConfig(batch_size=8)),
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


@pytest.mark.slow  # importing torch
def test_torchmd_nets_mdcath_loader_reads_the_demo_files_as_they_are(demo_files):
    """The demo writes mdCATH's index (mdcath_source.h5) beside its files; torchmd-net's
    MDCATH dataset selects domains and runs from it and reads frames from the files."""
    import h5py

    MDCATH = pytest.importorskip("torchmdnet.datasets.mdcath").MDCATH
    root = demo_files[0].parent
    with h5py.File(root / "mdcath_source.h5") as index:
        assert sorted(index) == sorted(p.stem.removeprefix("mdcath_dataset_") for p in demo_files
                                       if p.suffix == ".h5")
    data = MDCATH(str(root), temperatures=["320", "348"])
    expected = {}
    for path in demo_files:
        with h5py.File(path) as fh:
            for domain, g in fh.items():
                for temp in ("320", "348"):
                    for rep, run in g[temp].items():
                        expected[(domain, temp, rep)] = (g["z"][()], run["coords"][()],
                                                         run["forces"][()])
    assert len(data) == sum(len(c) for _, c, _ in expected.values())  # the corrupt tail too
    seen = set()
    for i in range(len(data)):
        sample = data[i]
        domain_temp_rep, frame = sample.info.rsplit("_", 1)
        domain, temp, rep = domain_temp_rep.rsplit("_", 2)
        z, coords, forces = expected[(domain, temp, rep)]
        assert sample.z.tolist() == z.tolist()
        np.testing.assert_array_equal(sample.pos.numpy(), coords[int(frame)])
        np.testing.assert_array_equal(sample.neg_dy.numpy(), forces[int(frame)])
        seen.add((domain, temp, rep))
    assert seen == set(expected)
    short = MDCATH(str(root), temperatures=["320"], numResidues=20)  # filtered by the index
    assert set(short.processed) == {"demo00n012"}
