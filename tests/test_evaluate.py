"""Force-error analysis: hand-computed per-residue values, padding, parallel = serial, CLI."""

import json
import shutil

import numpy as np
import pytest
import xarray as xr

import protstore
from protstore.checkpoints import write_checkpoint
from protstore.cli import main
from protstore.evaluate import compute_per_residue_errors, forces_block, load_params, select
from protstore.evaluate.compute import protein_static
from protstore.ingest import IngestOptions, ingest
from protstore.model import default_priors
from protstore.vocab import PAD_ID, SPECIES_ID

FRAMES = 4
PROTEINS = {"aa": (["ALA", "GLY", "ALA"], 300.0), "bb": (["GLY", "LYS", "ALA", "GLY", "GLY"], 350.0)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two proteins of different lengths and species orders, and a zero-force model."""
    tmp = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(7)
    forces = {}
    store = protstore.open_store(tmp / "s.zarr", mode="a")
    for pid, (names, T) in PROTEINS.items():
        n = len(names)
        R = np.zeros((FRAMES, n, 3), np.float32)
        R[..., 0] = 3.8 * np.arange(n)
        # bead-dependent force scales so that per-bead RMSEs differ
        F = (rng.normal(size=(FRAMES, n, 3)) * (1 + 3 * rng.random(n))[None, :, None] * 3)
        forces[pid] = F.astype(np.float32)
        np.savez(tmp / f"{pid}.npz", R=R, F=forces[pid], resname=np.array(names))
        ingest([tmp / f"{pid}.npz"], store, IngestOptions(temperature=T), progress=False,
               log=lambda m: None)
    params = {"prior": default_priors(), "model": {"w": np.zeros(1, np.float32)}}
    write_checkpoint(tmp / "zero", params, {"kind": "final", "step": 0, "epoch": 0,
                                            "model": {"factory": "plugin_models:zero",
                                                      "options": {}}})
    return protstore.open_store(tmp / "s.zarr"), tmp / "zero", forces


def test_per_residue_matches_a_hand_computation(tiny):
    store, zero, forces = tiny
    res = compute_per_residue_errors(store, zero, split="all", mode="ml-only", workers=0,
                                     model="plugin_models:zero")
    assert res.proteins == ["aa", "bb"]
    assert res.aa_names[SPECIES_ID["ALA"]] == "ALA"
    # per bead: sqrt(mean over frames of ||F_ref||²) because the model predicts zero force
    for i, pid in enumerate(res.proteins):
        expect = np.sqrt((forces[pid].astype(np.float64) ** 2).sum(-1).mean(0))
        n = len(expect)
        np.testing.assert_allclose(res.rmse_per_atom[i, :n], expect, rtol=1e-6)
        assert np.isnan(res.rmse_per_atom[i, n:]).all() and (res.mask[i, n:] == 0).all()
        species = [SPECIES_ID[x] for x in PROTEINS[pid][0]]
        assert res.species[i, :n].tolist() == species  # from each protein, not from one frame
        assert (res.species[i, n:] == PAD_ID).all()

    sq = {pid: (f.astype(np.float64) ** 2).sum(-1) for pid, f in forces.items()}  # [T, n]
    by = res.tables["by_resname"]
    for name in ("ALA", "GLY", "LYS"):
        values = np.concatenate([sq[pid][:, [j for j, x in enumerate(PROTEINS[pid][0]) if x == name]]
                                 .ravel() for pid in sq])
        bead_rmse = np.concatenate([np.sqrt(sq[pid][:, [j for j, x in enumerate(PROTEINS[pid][0])
                                                        if x == name]].mean(0)) for pid in sq])
        row = by.sel(resname=name)
        assert float(row.rmse_pooled) == pytest.approx(np.sqrt(values.mean()), rel=1e-9)
        assert int(row.n_values) == len(values) and int(row.n_beads) == len(bead_rmse)
        assert float(row.mean_bead_rmse_predecessor) == pytest.approx(bead_rmse.mean(), rel=1e-9)
    # pooled and mean-of-RMSE differ where beads of one type have different errors
    gly = by.sel(resname="GLY")
    assert abs(float(gly.rmse_pooled) - float(gly.mean_bead_rmse_predecessor)) > 1e-3

    # chain positions from each terminus, per temperature
    pos = res.tables["by_position"]
    first = np.concatenate([sq["aa"][:, 0], sq["bb"][:, 0]])
    assert float(pos.sel(position=0).rmse_pooled) == pytest.approx(np.sqrt(first.mean()))
    last = np.concatenate([sq["aa"][:, -1], sq["bb"][:, -1]])
    assert float(res.tables["by_position_from_c"].sel(position_from_c=0).rmse_pooled) == \
        pytest.approx(np.sqrt(last.mean()))
    temps = res.tables["by_temperature"]
    assert float(temps.sel(temperature=350.0).rmse_pooled) == pytest.approx(np.sqrt(sq["bb"].mean()))


def test_flox_reductions_equal_xarrays_groupby(tiny, monkeypatch):
    from protstore.evaluate import reduce

    store, zero, _ = tiny
    res = compute_per_residue_errors(store, zero, split="all", mode="ml-only", workers=0,
                                     model="plugin_models:zero")
    calls = []
    real = reduce.grouped

    def counted(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(reduce, "grouped", counted)
    by_flox = reduce.per_residue_tables(res.dataset)
    assert set(calls) == {"protein", "resname", "position", "position_from_c", "temperature"}

    def xarray_grouped(obj, by, func, dim=None):  # what reduce did before flox
        with xr.set_options(use_flox=False):
            return getattr(obj.groupby(by), func)(dim)

    monkeypatch.setattr(reduce, "grouped", xarray_grouped)
    by_xarray = reduce.per_residue_tables(res.dataset)
    assert by_flox.keys() == by_xarray.keys()
    for key, table in by_flox.items():
        other = by_xarray[key]
        assert list(table.variables) == list(other.variables), key
        for name, var in table.variables.items():  # sums in another order: last bits only
            assert var.dims == other[name].dims and var.dtype == other[name].dtype, (key, name)
            if var.dtype.kind == "f":
                np.testing.assert_allclose(var.values, other[name].values, rtol=1e-13, atol=0)
            else:
                assert (var.values == other[name].values).all(), (key, name)


@pytest.mark.slow
def test_padded_beads_are_never_counted(train_store, trained_run):
    plan = train_store.plan("p")
    res = compute_per_residue_errors(train_store, trained_run.run_dir / "final", plan=plan,
                                     split="val", workers=1)
    beads = res.tables["per_bead"]
    selection = select(train_store, plan=plan, split="val")
    assert beads.sizes["bead"] == sum(s.n_atoms for s in selection)
    assert int(beads["n_frames"].sum()) == sum(s.n_atoms * len(s.frames) for s in selection)
    # the full model's pooled per-component RMSE equals training's own validation RMSE
    total = float(beads["sum_sq"].sum()) / (3 * float(beads["n_frames"].sum()))
    assert np.sqrt(total) == pytest.approx(trained_run.final_val_rmse, rel=1e-4)


@pytest.mark.slow
def test_parallel_equals_serial_and_no_dask(train_store, trained_run):
    from distributed import LocalCluster

    from protstore.evaluate.compute import _force_fn
    from protstore.frozen import FrozenMap

    plan = train_store.plan("p")
    final = trained_run.run_dir / "final"
    _force_fn.cache_clear()
    runs = {w: compute_per_residue_errors(train_store, final, plan=plan, n_frames=9, seed=1,
                                          workers=w).tables["per_bead"] for w in (0, 1, 2)}
    # one compilation per bucket shape, whatever the number of proteins, blocks and workers
    assert _force_fn(load_params(final).model, "full")._cache_size() == len(plan.buckets)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        runs["cluster"] = compute_per_residue_errors(
            train_store, final, plan=plan, n_frames=9, seed=1,
            address=cluster.scheduler_address).tables["per_bead"]
    # no dask at all: the task function called directly, reduced with numpy
    mp = load_params(final)
    expect = []
    for s in select(train_store, plan=plan, n_frames=9, seed=1):
        static = protein_static(train_store, s.protein)
        beads = {k: static[k] for k in ("species", "resid", "chain")}
        out = forces_block(train_store.url, FrozenMap(), s.protein, s.frames, s.n_max, 32, beads,
                           mp.params, mp.model, "full")
        expect.append(np.sqrt((out[..., :3].astype(np.float64) ** 2).sum(-1).mean(0)))
    expect = np.concatenate(expect)
    for name, beads in runs.items():
        np.testing.assert_allclose(beads["rmse"].values, expect, rtol=1e-12, err_msg=str(name))


@pytest.mark.slow
def test_evaluate_cli_writes_plots_tables_and_a_zarr_result(train_store, trained_run, tmp_path,
                                                           capsys):
    out = tmp_path / "eval"
    run = trained_run.run_dir
    assert main(["evaluate", train_store.url, "--params", str(run / "best"), "--plan", "p",
                 "--out", str(out), "--model-id", "m1", "--no-progress"]) == 0
    for name in ("m1_per_residue_rmse.png", "m1_per_residue_rmse.txt",
                 "m1_per_residue_errors.zarr"):
        assert (out / name).exists(), name
    text = (out / "m1_per_residue_rmse.txt").read_text()
    assert "vector norm" in text and "mean_bead_rmse_predecessor" in text
    ds = xr.open_zarr(out / "m1_per_residue_errors.zarr")
    assert set(ds.sq_error.dims) == {"sample", "atom"}
    assert {"protein", "species", "resid", "position", "position_from_c",
            "temperature"} <= set(ds.coords)
    table = xr.open_zarr(out / "m1_per_residue_errors.zarr", group="tables/by_resname")
    assert "rmse_pooled" in table
    from protstore.schemas import check_document
    summary = json.loads((out / "m1_per_residue_metrics.json").read_text())
    check_document(summary, "eval_metrics", "summary")
    assert summary["split"] == "val" and summary["mode"] == "per-residue"

    assert main(["evaluate", train_store.url, "--params", str(run / "params.pkl"), "--plan", "p",
                 "--out", str(out), "--mode", "prior-only"]) == 1
    assert "--allow-pickle" in capsys.readouterr().err
    assert main(["evaluate", train_store.url, "--params", str(run / "params.pkl"), "--plan", "p",
                 "--out", str(out), "--mode", "prior-only", "--allow-pickle",
                 "--no-progress"]) == 0
    assert (out / "params_prior_only_forces.png").exists()
    text = (out / "params_prior_only_forces.txt").read_text()
    assert "rmse_component" in text and "rmse_x" in text and "mae_vector" in text

    # an EMA of the run evaluates unchanged
    assert main(["ema", str(run), "--out", str(tmp_path / "ema"), "--decay", "0.9"]) == 0
    assert main(["evaluate", train_store.url, "--params", str(tmp_path / "ema"), "--plan", "p",
                 "--out", str(out), "--mode", "full", "--no-progress"]) == 0
    assert (out / "ema_full_forces.txt").exists()


@pytest.mark.slow
def test_notebook_runs_on_a_fresh_result(train_store, trained_run, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    from protstore.evaluate import EvalConfig, evaluate
    from pathlib import Path

    evaluate(train_store, trained_run.run_dir / "final", tmp_path, EvalConfig(model_id="nb"),
             plan=train_store.plan("p"), progress=False, echo=lambda m: None)
    monkeypatch.setenv("PROTSTORE_EVAL", str(tmp_path / "nb_per_residue_errors.zarr"))
    path = Path(__file__).resolve().parents[1] / "notebooks" / "per_residue_analysis.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum(o.output_type == "display_data" for o in outputs) >= 4  # the plots


def test_a_checkpoint_never_runs_the_code_it_names(train_store, trained_run, tmp_path, capsys):
    from protstore.checkpoints import read_checkpoint, write_checkpoint
    from protstore.errors import ConfigError

    marker = tmp_path / "marker"
    params = read_checkpoint(trained_run.run_dir / "final").params
    evil = tmp_path / "evil"
    write_checkpoint(evil, params, {"kind": "final", "step": 0, "epoch": 0, "model": {
        "factory": "os:system", "options": {"command": f"touch {marker}"}}})
    assert main(["evaluate", train_store.url, "--params", str(evil), "--plan", "p",
                 "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "'os:system'" in err and "--model os:system" in err and len(err.splitlines()) == 1
    with pytest.raises(ConfigError, match="not one of protstore's built-in models"):
        load_params(evil)
    with pytest.raises(ConfigError):
        compute_per_residue_errors(train_store, evil, plan=train_store.plan("p"), workers=0)
    assert not marker.exists()
    # a run directory whose config.json names a plug-in is resumed only when it is named again
    run = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run)
    shutil.rmtree(run / "final")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(dict(config, model="os:system")))
    assert main(["train", train_store.url, "--plan", "p", "--resume", str(run),
                 "--no-progress"]) == 1
    assert "--model os:system" in capsys.readouterr().err
    assert not marker.exists()


def test_evaluation_reports_the_test_part_by_default(tiny, tmp_path):
    from protstore.batching import make_plan
    from protstore.evaluate import EvalConfig, evaluate

    store, zero, _ = tiny
    plan = make_plan(store.lengths().to_dict(), store.summary()["n_frames"].to_dict(),
                     name="vt", split="frame", val_fraction=0.25, test_fraction=0.25,
                     runs={p: [FRAMES] for p in store.proteins})
    assert all(len(plan.split.frames(p, FRAMES, "test")) == 1 for p in store.proteins)
    for out, split in (("e", None), ("v", "val")):
        evaluate(store, zero, tmp_path / out,
                 EvalConfig(mode="full", split=split, model="plugin_models:zero"), plan=plan,
                 progress=False, echo=lambda m: None)
    summary = json.loads((tmp_path / "e" / "zero_full_metrics.json").read_text())
    assert summary["split"] == "test" and summary["n_frames"] == 2
    assert json.loads((tmp_path / "v" / "zero_full_metrics.json").read_text())["split"] == "val"


def test_the_overall_plot_shows_a_seeded_random_subset_of_the_samples():
    from protstore.evaluate.report import plot_samples

    pick = plot_samples(1000, 400)
    assert len(pick) == 400 and len(set(pick.tolist())) == 400
    assert np.all(np.diff(pick) > 0) and 0 <= pick[0] and pick[-1] < 1000  # sorted: reads in order
    assert not np.array_equal(pick, np.arange(400))  # not simply the first 400
    assert pick[-1] >= 900 and (pick >= 400).sum() > 150  # spread over all of them
    np.testing.assert_array_equal(pick, plot_samples(1000, 400))  # the same every time
    assert not np.array_equal(pick, plot_samples(1000, 400, seed=1))  # the seed decides
    np.testing.assert_array_equal(plot_samples(300, 400), np.arange(300))  # few: all of them


def test_eval_config_is_hashable_data_and_refuses_bad_values_in_one_line():
    from protstore.errors import ConfigError
    from protstore.evaluate import EvalConfig, evaluate

    config = EvalConfig(mode="full", proteins=["aa", "bb"], n_frames=np.int64(2))
    assert config.proteins == ("aa", "bb") and config == EvalConfig(mode="full",
                                                                   proteins=("aa", "bb"),
                                                                   n_frames=2)
    assert hash(config) == hash(EvalConfig(mode="full", proteins=("aa", "bb"), n_frames=2))
    assert EvalConfig().mode == "per-residue" and EvalConfig().split is None
    for changes, message in ((dict(mode="forces"), "mode must be one of"),
                             (dict(split="holdout"), "split must be one of"),
                             (dict(n_frames=0), "n_frames must be a positive integer, not 0"),
                             (dict(frame_block=2.5), "frame_block must be a positive integer"),
                             (dict(workers=-1), "workers must be an integer >= 0, not -1"),
                             (dict(seed=True), "seed must be an integer, not True"),
                             (dict(proteins="aa"), "proteins must be a sequence of protein ids"),
                             (dict(model=""), "model must be a non-empty string"),
                             (dict(allow_pickle="yes"), "allow_pickle must be True or False")):
        with pytest.raises(ConfigError, match=message) as info:
            EvalConfig(**changes)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="config must be an EvalConfig, not dict"):
        evaluate(None, "params", "out", {"mode": "full"})


def test_evaluating_a_runs_checkpoint_compares_the_store_with_what_the_run_read(
        train_store, trained_run, tmp_path, monkeypatch):
    """``evaluate --plan`` warns of proteins changed since the store version the *run* read
    (its run.json), which is later than its plan's; other params are compared with the plan's."""
    import protstore.evaluate.run as evaluate_run

    run = trained_run.run_dir
    assert evaluate_run.run_of(run / "final")[0] == str(run)
    assert evaluate_run.run_of(run / "checkpoints" / "step_00000005")[0] == str(run)
    assert evaluate_run.run_of(tmp_path / "elsewhere" / "final") is None
    recorded = json.loads((run / "run.json").read_text())["store_version"]
    assert recorded == train_store.version

    class Stop(Exception):
        pass

    asked = []

    def record(store, version, proteins, what):
        asked.append((version, what))
        raise Stop

    monkeypatch.setattr(evaluate_run, "warn_if_changed", record)
    plan = train_store.plan("p")
    for params in (run / "final", tmp_path / "copy"):
        if params != run / "final":
            shutil.copytree(run / "final", params)
        with pytest.raises(Stop):
            evaluate_run.evaluate(train_store, params, tmp_path / "out", plan=plan,
                                  progress=False, echo=lambda m: None)
    assert asked == [(recorded, f"the run in {run}"), (plan.store_version, "plan 'p'")]
