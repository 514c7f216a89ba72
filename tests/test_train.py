"""Training: learning beyond the priors, compilations, checkpoints, resume, schedules, devices."""

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from protstore.batching import BatchLoader, LoaderConfig
from protstore.checkpoints import (CheckpointError, list_checkpoints, read_checkpoint,
                                   write_checkpoint)
from protstore.model import load_model, total_energy
from protstore.train import TrainConfig, TrainingDiverged, make_eval_step, train
from protstore.train.step import BATCH_KEYS

REPO = Path(__file__).resolve().parents[1]


def val_rmse(store, params, mode):
    """Validation force RMSE per component of ``params`` in ``mode`` (None: zero forces)."""
    loader = BatchLoader(store, store.plan("p"), LoaderConfig(batch_size=8, split="val",
                                                              shuffle=False, last="pad"))
    evaluate = make_eval_step(total_energy(load_model(), mode)) if mode else None
    s = n = 0.0
    for batch in loader.epoch(0):
        if evaluate is None:
            w = batch["mask"] * batch["sample_mask"][:, None]
            s += float((w[..., None] * batch["F"].astype(np.float64) ** 2).sum())
            n += float(w.sum())
        else:
            a, b = evaluate(params, {k: batch[k] for k in BATCH_KEYS})
            s, n = s + float(a), n + float(b)
    return np.sqrt(s / (3 * n))


@pytest.mark.slow
def test_training_learns_beyond_the_priors(train_store, trained_run):
    final = read_checkpoint(trained_run.run_dir / "final").params
    zero = val_rmse(train_store, None, None)
    prior = val_rmse(train_store, final, "prior-only")
    full = val_rmse(train_store, final, "full")
    assert full == pytest.approx(trained_run.final_val_rmse, rel=1e-4)
    assert prior < 0.5 * zero
    assert full < prior - 0.02, (zero, prior, full)
    # the learned energy starts at exactly zero: step 0 is the priors alone
    assert trained_run.priors_val_rmse == pytest.approx(prior, rel=1e-6)
    assert trained_run.best_step > 0 and trained_run.best_val_rmse < prior


@pytest.mark.slow
def test_a_network_that_never_beats_the_priors_is_reported_and_stops_early(train_store,
                                                                           tmp_path):
    from protstore.model import default_priors
    lines = []
    config = TrainConfig(epochs=4, model="plugin_models:zero", early_stopping_patience=2,
                         loader=LoaderConfig(batch_size=8))
    result = train(train_store, train_store.plan("p"), tmp_path / "flat", config,
                   priors=default_priors(), progress=False, echo=lines.append)
    # every epoch ties step 0: no lower figure in 2 epochs ends the run after epoch 2
    assert [m["epoch"] for m in result.metrics] == [0, 1, 2]
    assert any(line.startswith("early stopping") for line in lines)
    assert result.best_step == 0 and result.best_val_rmse == result.priors_val_rmse
    assert any("never beat the priors" in line for line in lines), lines
    assert read_checkpoint(tmp_path / "flat" / "best").attrs["step"] == 0


def test_one_compilation_per_bucket_shape(trained_run):
    assert trained_run.compilations == 2  # two buckets


def test_run_directory_contents(trained_run):
    d = trained_run.run_dir
    for name in ("config.json", "priors.json", "priors.png", "run.json", "metrics.jsonl",
                 "loss_curve.png", "params.pkl", "final", "best"):
        assert (d / name).exists(), name
    metrics = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1, 2, 3]  # step 0: the priors alone
    assert metrics[0]["step"] == 0 and metrics[0]["train_loss"] is None
    assert all(set(m["val_rmse_per_bucket"]) == {"0", "1"} for m in metrics)
    from protstore.schemas import check_document
    for name, schema in (("config.json", "train_config"), ("run.json", "run"),
                         ("priors.json", "priors")):
        check_document(json.loads((d / name).read_text()), schema, name)
    run_doc = json.loads((d / "run.json").read_text())
    assert run_doc["store_version"] is not None
    from protstore import open_store
    assert run_doc["store_version"] == open_store(run_doc["store"]).version
    for m in metrics:
        check_document(m, "metrics", "metrics.jsonl")
    found = list_checkpoints(d)
    steps = [a["step"] for _, a in found]
    assert steps[0] == 0 and steps == sorted(steps)
    assert any(a["val_rmse"] is None for _, a in found[1:])  # mid-epoch (every 5 steps)
    validated = [a for _, a in found if a["val_rmse"] is not None]
    assert [a["step"] for a in validated][0] == 0 and len(validated) == 4
    best = read_checkpoint(d / "best")
    assert best.attrs["val_rmse"] == min(a["val_rmse"] for a in validated)
    with open(d / "params.pkl", "rb") as fh:
        pkl = pickle.load(fh)
    final = read_checkpoint(d / "final").params
    assert pkl["model"]["embed"].shape == (22, 32)  # vocabulary-sized, whatever the proteins
    np.testing.assert_array_equal(pkl["model"]["embed"], final["model"]["embed"])
    # the priors are not trained
    step0 = read_checkpoint(found[0][0]).params
    np.testing.assert_array_equal(step0["prior"]["bond"]["k"], final["prior"]["bond"]["k"])
    assert not np.array_equal(step0["model"]["embed"], final["model"]["embed"])


def test_checkpoints_are_plain_zarr_and_never_overwritten(trained_run, tmp_path):
    import zarr
    path = trained_run.run_dir / "final"
    g = zarr.open_group(path, mode="r")
    assert g["params/prior/bond/r0"].shape == ()
    assert g.attrs["protstore_checkpoint"]["kind"] == "final"
    with pytest.raises(CheckpointError, match="never overwritten"):
        write_checkpoint(path, {"a": np.zeros(2)}, {"kind": "final", "step": 1, "epoch": 0,
                                                   "model": {"factory": "x:y", "options": {}}})


def test_list_checkpoints_orders_by_stored_step_and_skips_bad(tmp_path):
    model = {"factory": "x:y", "options": {}}
    d = tmp_path / "checkpoints"
    # names sort the other way round from the steps
    write_checkpoint(d / "b", {"w": np.ones(2)}, {"kind": "checkpoint", "step": 10, "epoch": 1, "model": model})
    write_checkpoint(d / "c", {"w": np.zeros(2)}, {"kind": "checkpoint", "step": 2, "epoch": 0, "model": model})
    write_checkpoint(d / "a", {"w": np.array([np.nan, 1])}, {"kind": "checkpoint", "step": 5, "epoch": 0, "model": model})
    (d / "junk").mkdir()
    warnings = []
    found = list_checkpoints(tmp_path, warn=warnings.append)
    assert [p.name for p, _ in found] == ["c", "b"]
    assert any("a: non-finite" in w for w in warnings) and any("junk" in w for w in warnings)


@pytest.mark.slow
def test_resume_gives_the_same_result_as_an_uninterrupted_run(train_store, trained_run, tmp_path):
    full = trained_run.run_dir
    cut = tmp_path / "run"
    shutil.copytree(full, cut)
    # simulate a crash after step 15 (mid-epoch 2): later checkpoints and outputs never happened
    for p, a in list_checkpoints(cut):
        if a["step"] > 15:
            shutil.rmtree(p)
    for name in ("final", "best"):
        shutil.rmtree(cut / name)
    for name in ("params.pkl", "loss_curve.png"):
        (cut / name).unlink()
    (cut / "checkpoints" / ".step_00000020.tmp-dead").mkdir()  # an interrupted write
    result = train(train_store, train_store.plan("p"), cut, resume=True, progress=False,
                   echo=lambda m: None)
    a = read_checkpoint(full / "final").params
    b = read_checkpoint(cut / "final").params
    for x, y in zip(__import__("jax").tree.leaves(a), __import__("jax").tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    assert result.final_val_rmse == pytest.approx(trained_run.final_val_rmse, rel=1e-5)
    metrics = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1, 2, 3]
    # the resumed epoch's train loss covers the whole epoch, not only the steps after the cut
    reference = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    assert metrics[2]["train_loss"] == pytest.approx(reference[2]["train_loss"], rel=1e-5)


@pytest.mark.slow
def test_resume_completes_whatever_a_killed_run_is_missing(train_store, trained_run, tmp_path):
    full = trained_run.run_dir
    reference = (full / "metrics.jsonl").read_text().splitlines()
    # killed right after final/ was written: no best/, params.pkl, loss curve
    late = tmp_path / "late"
    shutil.copytree(full, late)
    shutil.rmtree(late / "best")
    (late / "params.pkl").unlink()
    (late / "loss_curve.png").unlink()
    train(train_store, train_store.plan("p"), late, resume=True, progress=False,
          echo=lambda m: None)
    for name in ("best", "params.pkl", "loss_curve.png"):
        assert (late / name).exists(), name
    # killed between an epoch-end checkpoint and its metrics line
    lost = tmp_path / "lost"
    shutil.copytree(full, lost)
    shutil.rmtree(lost / "final")
    (lost / "metrics.jsonl").write_text("\n".join(reference[:2]) + "\n")
    train(train_store, train_store.plan("p"), lost, resume=True, progress=False,
          echo=lambda m: None)
    restored = (lost / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in restored] == \
        [json.loads(x)["step"] for x in reference]
    assert json.loads(restored[2])["val_rmse"] == json.loads(reference[2])["val_rmse"]
    # killed before its step-0 checkpoint: resume starts the run from step 0
    early = tmp_path / "early"
    early.mkdir()
    for name in ("config.json", "priors.json", "run.json"):
        shutil.copy(full / name, early / name)
    result = train(train_store, train_store.plan("p"), early, resume=True, progress=False,
                   echo=lambda m: None)
    assert result.final_val_rmse == pytest.approx(trained_run.final_val_rmse, rel=1e-5)


def test_config_file_errors_name_the_file_and_field(tmp_path):
    from protstore.errors import ProtstoreError
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"epochs": 2, "learning_rat": 1e-3}))
    with pytest.raises(ProtstoreError, match=r"cfg.json: unknown key 'learning_rat'"):
        TrainConfig.from_file(path)
    path.write_text(json.dumps({"schedule": "round-robin"}))
    with pytest.raises(ProtstoreError, match=r"cfg.json.*schedule"):
        TrainConfig.from_file(path)
    path.write_text(json.dumps({"epochs": 2, "schedule": "sequential"}))
    assert TrainConfig.from_file(path) == TrainConfig(epochs=2, schedule="sequential")


def test_new_run_refuses_an_existing_directory(train_store, trained_run):
    from protstore.errors import ProtstoreError
    with pytest.raises(ProtstoreError, match="not empty"):
        train(train_store, train_store.plan("p"), trained_run.run_dir, progress=False)


@pytest.mark.slow
def test_sequential_schedule_trains_bucket_after_bucket(train_store, tmp_path):
    config = TrainConfig(epochs=1, schedule="sequential", model="plugin_models:pairwise_species",
                         loader=LoaderConfig(batch_size=8))
    priors = json.loads((REPO / "tests" / "data" / "priors.json").read_text())
    from protstore.model.fit import priors_from_doc
    result = train(train_store, train_store.plan("p"), tmp_path / "seq", config,
                   priors=priors_from_doc(priors), progress=False, echo=lambda m: None)
    metrics = result.metrics
    assert [(m["bucket"], m["epoch"]) for m in metrics] == [(0, 0), (0, 1), (1, 1)]
    assert result.compilations == 2
    ck = list_checkpoints(tmp_path / "seq")
    assert [a["bucket"] for _, a in ck if a["val_rmse"] is not None] == [0, 0, 1]
    final = read_checkpoint(tmp_path / "seq" / "final")
    assert final.attrs["model"]["factory"] == "plugin_models:pairwise_species"
    assert final.params["model"]["w"].shape == (22, 22)


@pytest.mark.slow
def test_divergence_stops_without_a_checkpoint(train_store, tmp_path):
    from protstore.model import default_priors
    config = TrainConfig(epochs=1, model="plugin_models:exploding_later",
                         loader=LoaderConfig(batch_size=8))
    with pytest.raises(TrainingDiverged, match="diverged at step 2 .*the loss is nan"):
        train(train_store, train_store.plan("p"), tmp_path / "bad", config,
              priors=default_priors(), progress=False, echo=lambda m: None)
    assert [a["step"] for _, a in list_checkpoints(tmp_path / "bad")] == [0]
    diverged = list((tmp_path / "bad" / "diverged").iterdir())
    assert len(diverged) == 1
    # a model that is not finite at its initial params is caught by step 0's validation
    config = TrainConfig(epochs=1, model="plugin_models:exploding",
                         loader=LoaderConfig(batch_size=8))
    with pytest.raises(TrainingDiverged, match="diverged at step 0 .*validation RMSE is nan"):
        train(train_store, train_store.plan("p"), tmp_path / "nan0", config,
              priors=default_priors(), progress=False, echo=lambda m: None)
    assert not (tmp_path / "nan0" / "checkpoints").exists()


@pytest.mark.slow
def test_data_parallel_on_two_cpu_devices_matches_one(train_store, tmp_path):
    script = f"""
import jax, json, numpy as np
import protstore
from protstore.batching import LoaderConfig
from protstore.train import train, TrainConfig
from protstore.model.fit import priors_from_doc
assert len(jax.devices()) == 2, jax.devices()
store = protstore.open_store({str(train_store.url)!r})
priors = priors_from_doc(json.load(open({str(REPO / "tests" / "data" / "priors.json")!r})))
r = train(store, store.plan("p"), {str(tmp_path / "two")!r},
          TrainConfig(epochs=1, loader=LoaderConfig(batch_size=8)),
          priors=priors, progress=False)
print("VAL", r.final_val_rmse)
"""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=str(REPO / "tests"))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "data-parallel over 2 devices" in out.stdout
    from protstore.model.fit import priors_from_doc
    priors = priors_from_doc(json.loads((REPO / "tests" / "data" / "priors.json").read_text()))
    one = train(train_store, train_store.plan("p"), tmp_path / "one",
                TrainConfig(epochs=1, loader=LoaderConfig(batch_size=8)), priors=priors,
                progress=False,
                echo=lambda m: None)
    two_val = float(out.stdout.split("VAL")[-1])
    assert two_val == pytest.approx(one.final_val_rmse, rel=1e-4)
    a = read_checkpoint(tmp_path / "one" / "final").params["model"]["embed"]
    b = read_checkpoint(tmp_path / "two" / "final").params["model"]["embed"]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_fit_priors_and_train_cli(train_store, tmp_path, capsys):
    from protstore.cli import main
    pri = tmp_path / "priors.json"
    assert main(["fit-priors", train_store.url, "--plan", "p", "--out", str(pri)]) == 0
    doc = json.loads(pri.read_text())
    assert set(doc["fit"]["temperatures_K"]) == {"320", "348"}  # each fitted at its own kT
    assert 320 < doc["fit"]["temperature_K"] < 348
    assert abs(doc["params"]["bond"]["r0"] - 3.8) < 0.05  # the generator's bond length
    assert pri.with_suffix(".png").exists()
    run = tmp_path / "cli-run"
    args = ["train", train_store.url, "--plan", "p", "--out", str(run), "--priors", str(pri),
            "--epochs", "1", "--batch-size", "8", "--model", "plugin_models:pairwise_species",
            "--model-option", "scale=0.5", "--no-progress"]
    assert main(args) == 0
    assert "final validation force RMSE per component" in capsys.readouterr().out
    assert json.loads((run / "priors.json").read_text())["params"] == doc["params"]
    ck = read_checkpoint(run / "final")
    assert ck.attrs["model"]["options"] == {"scale": 0.5}
    assert float(ck.params["model"]["frozen"]["scale"]) == 0.5
    assert main(args) == 1  # the run directory is taken
    assert "not empty" in capsys.readouterr().err
    assert main(["train", train_store.url, "--plan", "p", "--resume", str(run),
                 "--model", "plugin_models:pairwise_species"]) == 0
    assert "nothing is missing" in capsys.readouterr().out


@pytest.mark.slow
def test_a_plan_without_held_out_data_trains_without_validation(train_store, tmp_path):
    import protstore
    from protstore.batching import plan_from_store, save_plan
    writable = protstore.open_store(train_store.url, mode="a")
    plan = plan_from_store(writable, name="all-train", strategy="optimal", n_buckets=2,
                           split="none")
    save_plan(writable, plan, overwrite=True)
    config = TrainConfig(epochs=1, model="plugin_models:pairwise_species",
                         loader=LoaderConfig(batch_size=8))
    from protstore.model import default_priors
    result = train(train_store, plan, tmp_path / "noval", config, priors=default_priors(),
                   progress=False, echo=lambda m: None)
    assert result.final_val_rmse is None and result.best_step is None
    assert (tmp_path / "noval" / "final").exists() and not (tmp_path / "noval" / "best").exists()
    assert result.metrics[0]["val_rmse"] is None and result.metrics[0]["train_loss"] > 0


def test_configs_of_runs_written_before_newer_fields_keep_their_hash_and_behaviour(tmp_path):
    import hashlib

    # a config.json from before batch_beads, early stopping and loss weighting existed
    old = {k: v for k, v in TrainConfig(epochs=2).flat().items()
           if k not in ("batch_beads", "early_stopping_patience", "loss_weighting",
                        "read_threads", "open_proteins")}
    (tmp_path / "config.json").write_text(json.dumps(old))
    config = TrainConfig.of_run(tmp_path / "config.json")
    assert config.loss_weighting == "frame"  # what those runs did, not today's default
    text = json.dumps(old, sort_keys=True, separators=(",", ":"))
    assert config.hash() == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    assert TrainConfig.from_file(tmp_path / "config.json").loss_weighting == "bead"
    assert TrainConfig(epochs=2).hash() != config.hash()
    assert config.replace(batch_beads=400).hash() != config.hash()
