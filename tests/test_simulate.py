"""``protstore simulate``: reproducible, resumable, checked Langevin trajectories that plain
xarray opens; the integrator against jax-md's; the CLI's one-line errors."""

from __future__ import annotations

import json
import pickle
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import protstore
from protstore.checkpoints import write_checkpoint
from protstore.cli import main
from protstore.compare.inputs import open_trajectory
from protstore.errors import ConfigError, SimulationUnstable, StoreError, TrajectoryError
from protstore.ingest import IngestOptions, ingest
from protstore.model import default_priors, load_model
from protstore.model.topology import build_topology
from protstore.simulate import (SimulateConfig, baoab, internal_masses, read_document,
                                simulate)
from protstore.simulate import run as simrun
from protstore.simulate.checks import Diagnostics, failures, remedy
from protstore.simulate.masses import RESIDUE_MASSES, SPECIES_MASSES
from protstore.simulate.trajectory import TrajectoryWriter
from protstore.units import KB_KCAL_PER_MOL_K
from protstore.schemas import check_document
from protstore.vocab import SPECIES_ID, UNK_ID

pytestmark = pytest.mark.slow  # JAX simulation

NAMES = ["ALA", "GLY", "LYS", "PRO", "ALA", "GLY", "LEU", "VAL", "ALA", "GLY"]
SCHNET = "protstore.model.network:schnet"
PLUGIN = "plugin_models:unstable_when_shifted"
# every test uses these block settings: one compilation per model and mode for the file
BASE = SimulateConfig(n_steps=400, n_replicas=3, save_every=20, block_frames=5, seed=7)


def _frames(rng, n_frames, shift_from=None):
    n = len(NAMES)
    R = np.zeros((n_frames, n, 3), np.float32)
    R[..., 0] = 3.8 * np.arange(n)
    R[..., 1] = 1.5 * np.sin(np.arange(n))
    R[..., 0] *= 3.8 / 4.1  # bonds near 3.8 Å despite the zigzag
    R += rng.normal(scale=0.05, size=R.shape).astype(np.float32)
    if shift_from is not None:
        R[shift_from:, :, 1] += 100.0  # a translated copy: the same energy, far in y
    return R


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store with a 10-bead protein p1 (6 frames at 300 K, the last 3 translated by 100 Å
    in y), the same protein at two temperatures (two), and one without temperature (nt);
    checkpoints of protstore's network and of a plug-in energy that is NaN when shifted."""
    tmp = tmp_path_factory.mktemp("sim")
    rng = np.random.default_rng(0)
    store = protstore.open_store(tmp / "s.zarr", mode="a")
    files = {"p1": dict(R=_frames(rng, 6, shift_from=3), temperature=np.full(6, 300.0)),
             "two": dict(R=_frames(rng, 4), temperature=np.array([300.0, 300, 350, 350])),
             "nt": dict(R=_frames(rng, 3))}
    for pid, arrays in files.items():
        F = rng.normal(scale=5.0, size=arrays["R"].shape).astype(np.float32)
        np.savez(tmp / f"{pid}.npz", F=F, resname=np.array(NAMES), **arrays)
        ingest([tmp / f"{pid}.npz"], store, IngestOptions(), progress=False, log=lambda m: None)
    model = load_model(SCHNET, {"max_neighbors": 16})
    attrs = lambda factory, options: {"kind": "final", "step": 0, "epoch": 0,  # noqa: E731
                                      "model": {"factory": factory, "options": options}}
    for name, key in (("ck", 0), ("ck2", 1)):
        net = model.init(jax.random.PRNGKey(key), {"force_rms": 1.0})
        if name == "ck2":  # a network as after training: its output layer (0 at init) is not
            w = 0.1 * jax.random.normal(jax.random.PRNGKey(2), net["out"]["w"].shape)
            net = dict(net, out=dict(net["out"], w=w))
        params = {"prior": default_priors(), "model": net}
        write_checkpoint(tmp / name, params, attrs(SCHNET, {"max_neighbors": 16}))
    write_checkpoint(tmp / "bad_shapes", params, attrs(SCHNET, {"max_neighbors": 16,
                                                                "features": 8}))
    plugin = {"prior": default_priors(), "model": {"w": np.zeros(1, np.float32)}}
    (tmp / "params.pkl").write_bytes(pickle.dumps(params))
    write_checkpoint(tmp / "nan", plugin, attrs(PLUGIN, {}))
    write_checkpoint(tmp / "nbr", plugin, attrs(PLUGIN, {"capacity": 2}))
    return protstore.open_store(tmp / "s.zarr"), tmp


@pytest.fixture(scope="module")
def reference(world):
    """An uninterrupted full-mode run (20 frames in 4 blocks of 5)."""
    store, tmp = world
    simulate(store, tmp / "ck", "p1", tmp / "ref.zarr", BASE, progress=False)
    return xr.open_zarr(tmp / "ref.zarr").load()


def test_masses_are_the_average_residue_masses():
    assert RESIDUE_MASSES["GLY"] == pytest.approx(57.05, abs=0.01)
    assert RESIDUE_MASSES["TRP"] == pytest.approx(186.21, abs=0.01)
    assert SPECIES_MASSES[UNK_ID] == pytest.approx(np.mean(list(RESIDUE_MASSES.values())))
    m = internal_masses([SPECIES_ID["ALA"]])
    assert m.dtype == np.float32 and m[0] == pytest.approx(71.0788 / 418.4)


def test_a_trajectory_is_reproducible_and_opens_with_plain_xarray(world, reference):
    store, tmp = world
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no consolidated-metadata warning either
        ds = xr.open_zarr(tmp / "ref.zarr")
    assert dict(ds.sizes) == {"replica": 3, "frame": 20, "atom": 10, "xyz": 3}
    assert ds.R.dims == ("replica", "frame", "atom", "xyz") and ds.R.dtype == np.float32
    assert ds.R.attrs["units"] == "angstrom" and ds.time.attrs["units"] == "ps"
    assert ds.potential_energy.dims == ds.kinetic_temperature.dims == ("replica", "frame")
    assert ds.potential_energy.attrs["units"] == "kcal/mol"
    np.testing.assert_allclose(ds.time.values, 0.002 * 20 * np.arange(1, 21))
    assert ds.frame.dtype == np.int64 and ds.replica.dtype == np.int32
    protein = xr.open_zarr(f"{store.url}/proteins/p1")  # as plain xarray
    for name in ("species", "resid", "chain", "xyz"):  # labels as codes, as in the store
        assert ds[name].dtype == protein[name].dtype == np.int32
        assert ds[name].values.tolist() == protein[name].values.tolist()
        assert ds[name].attrs == protein[name].attrs
    assert ds.prot.decode_labels().xyz.values.tolist() == ["x", "y", "z"]
    labelled = open_trajectory(tmp / "ref.zarr")  # what compare reads: the labels
    assert labelled.xyz.values.tolist() == ["x", "y", "z"]
    assert labelled.chain.values.tolist() == store.protein("p1").chain.values.tolist()
    doc = ds.attrs["protstore_trajectory"]
    check_document(doc, "trajectory", "ref")
    assert doc["complete"] and doc["steps_done"] == doc["n_steps"] == 400
    assert (doc["protein"], doc["mode"], doc["seed"], doc["temperature"]) == ("p1", "full", 7,
                                                                              300.0)
    assert doc["dt"] == 0.002 and doc["save_every"] == 20 and doc["start_frames"] == [0, 0, 0]
    assert doc["store"] == store.url and doc["params"].endswith("ck")
    assert doc["model"]["factory"] == SCHNET and doc["dropped"] == []
    assert doc["protstore_version"] == protstore.__version__ and "residue" in doc["masses"]
    assert np.isfinite(reference.R.values).all()
    # replicas share the start frame but not the noise
    assert not np.array_equal(reference.R.values[0], reference.R.values[1])
    # the same seed: the same bits; another seed: another trajectory
    simulate(store, tmp / "ck", "p1", tmp / "again.zarr", BASE, progress=False)
    again = xr.open_zarr(tmp / "again.zarr").load()
    for name in ("R", "potential_energy", "kinetic_temperature"):
        assert np.array_equal(again[name].values, reference[name].values)
    simulate(store, tmp / "ck", "p1", tmp / "again.zarr", BASE.replace(seed=8), progress=False,
             overwrite=True)
    assert not np.array_equal(xr.open_zarr(tmp / "again.zarr").R.values, reference.R.values)


class Killed(Exception):
    pass


def test_resume_after_a_kill_equals_the_uninterrupted_run(world, reference, monkeypatch):
    store, tmp = world
    out = tmp / "killed.zarr"
    real = TrajectoryWriter.write_document
    calls = {"n": 0}

    def dies_on_the_third_block(self, doc):
        calls["n"] += 1
        if calls["n"] == 4:  # create, blocks 1 and 2, then the kill before block 3's document
            raise Killed()
        real(self, doc)

    monkeypatch.setattr(TrajectoryWriter, "write_document", dies_on_the_third_block)
    with pytest.raises(Killed):
        simulate(store, tmp / "ck", "p1", out, BASE, progress=False)
    monkeypatch.setattr(TrajectoryWriter, "write_document", real)
    part = xr.open_zarr(out)  # the state before the killed block: 2 blocks, not complete
    doc = part.attrs["protstore_trajectory"]
    assert not doc["complete"] and doc["steps_done"] == 200 and part.sizes["frame"] == 10
    with pytest.raises(TrajectoryError, match="exists; give --resume"):
        simulate(store, tmp / "ck", "p1", out, BASE, progress=False)
    with pytest.raises(TrajectoryError, match="seed=7"):
        simulate(store, tmp / "ck", "p1", out, BASE.replace(seed=1), resume=True,
                 progress=False)
    result = simulate(store, tmp / "ck", "p1", out, BASE, resume=True, progress=False)
    assert result.steps == 200 and result.document["complete"]
    done = xr.open_zarr(out).load()
    for name in ("R", "potential_energy", "kinetic_temperature", "time"):
        assert np.array_equal(done[name].values, reference[name].values), name

    # a full disk: a one-line error, the trajectory stays incomplete and resumable
    def full(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TrajectoryWriter, "append", full)
    with pytest.raises(TrajectoryError, match="No space left on device.*--resume"):
        simulate(store, tmp / "ck", "p1", tmp / "full.zarr", BASE, progress=False)
    assert not read_document(protstore.location.Location(str(tmp / "full.zarr")))[
        "complete"]


def test_a_deliberately_huge_dt_stops_the_run_naming_replica_and_step(world, capsys):
    store, tmp = world
    out = tmp / "boom.zarr"
    with pytest.raises(SimulationUnstable, match=r"replica 0 step 20: ") as err:
        simulate(store, tmp / "ck", "p1", out, BASE.replace(dt_fs=500.0), progress=False)
    assert "\n" not in str(err.value)
    doc = read_document(protstore.location.Location(str(out)))
    assert not doc["complete"] and doc["steps_done"] == 0
    assert doc["stopped"]["replica"] == 0 and doc["stopped"]["step"] == 20
    args = ["simulate", store.url, "--params", str(tmp / "ck"), "--protein", "p1", "--out",
            str(out), "--overwrite", "--steps", "400", "--save-every", "20", "--replicas", "3",
            "--block-frames", "5", "--dt-fs", "500", "--no-progress"]
    assert main(args) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "replica 0 step 20" in lines[0]


@pytest.mark.slow
def test_on_unstable_drop_goes_on_without_the_replica_and_records_it(world):
    store, tmp = world
    config = BASE.replace(start="random", n_replicas=4, on_unstable="drop")
    seed = next(s for s in range(100) if 0 < sum(
        f >= 3 for f in simrun.start_frames(store.protein("p1"), 300.0, config.replace(seed=s)))
        < 4)
    config = config.replace(seed=seed)
    result = simulate(store, tmp / "nan", "p1", tmp / "drop.zarr", config, model=PLUGIN,
                      progress=False)
    doc = result.document
    shifted = [r for r, f in enumerate(doc["start_frames"]) if f >= 3]
    assert doc["complete"] and [d["replica"] for d in doc["dropped"]] == shifted
    assert all(d["step"] == 20 and "non-finite" in d["reason"] for d in doc["dropped"])
    ds = xr.open_zarr(tmp / "drop.zarr")
    R = ds.R.values
    assert np.isnan(R[shifted]).all()
    kept = [r for r in range(4) if r not in shifted]
    assert np.isfinite(R[kept]).all() and np.isfinite(ds.potential_energy.values[kept]).all()
    # every replica unstable: an error, and a trajectory that says it is incomplete
    seed = next(s for s in range(100) if all(
        f >= 3 for f in simrun.start_frames(store.protein("p1"), 300.0, config.replace(seed=s))))
    with pytest.raises(SimulationUnstable, match="every replica"):
        simulate(store, tmp / "nan", "p1", tmp / "drop2.zarr", config.replace(seed=seed),
                 model=PLUGIN, progress=False)
    assert not xr.open_zarr(tmp / "drop2.zarr").attrs["protstore_trajectory"]["complete"]
    # a model whose neighbour capacity the frames overflow: stopped at the first saved frame
    with pytest.raises(SimulationUnstable, match="replica 0 step 20: a bead has 9 beads "
                                                 "within the network's cutoff, more than its 2"
                                                 ".*max_neighbors=N"):
        simulate(store, tmp / "nbr", "p1", tmp / "nbr.zarr", BASE, model=PLUGIN,
                 progress=False)


def test_failures_name_the_first_bad_frame_of_each_live_replica():
    d = Diagnostics(finite=np.array([[True, True], [True, False]]),
                    bond_min=np.array([[3.7, 3.6], [1.5, 3.6]]),
                    bond_max=np.array([[3.9, 4.0], [3.9, 4.0]]),
                    neighbors=np.array([[3, 9], [3, 3]]))
    got = failures(d, np.array([True, True]), bond_range=(2.0, 5.5), capacity=8)
    assert got[0] == (1, "a bond of 1.50 Å outside [2, 5.5] Å")
    assert got[1][0] == 0 and "9 beads" in got[1][1]
    assert failures(d, np.array([False, True]), bond_range=(2.0, 5.5), capacity=None) == {
        1: (1, "non-finite positions, momenta or energy")}
    # a crowded bead is the model's doing, not the step's: the hint says which
    assert "max_neighbors" in remedy(got[1][1]) and "dt" not in remedy(got[1][1])
    assert remedy(got[0][1]) == "a smaller --dt-fs"


def test_prior_only_mode_ignores_the_network(world):
    """ck's network is exactly zero (as initialised), ck2's is not: in full mode they give
    other trajectories, in prior-only mode the same bits."""
    store, tmp = world
    R = {}
    for mode in ("full", "prior-only"):
        for name in ("ck", "ck2"):
            path = tmp / f"{mode}_{name}.zarr"
            simulate(store, tmp / name, "p1", path, BASE.replace(mode=mode, n_steps=100),
                     progress=False)
            assert xr.open_zarr(path).attrs["protstore_trajectory"]["mode"] == mode
            R[mode, name] = xr.open_zarr(path).R.values
    assert not np.array_equal(R["full", "ck"], R["full", "ck2"])  # the network acts
    assert np.array_equal(R["prior-only", "ck"], R["prior-only", "ck2"])


def _protstore_force(store, tmp, mode="full"):
    mp = protstore.evaluate.load_params(tmp / "ck")
    eng = simrun.engine(mp.model, mode, 5)
    ds = store.protein("p1", chunks=None)
    species = jnp.asarray(ds.species.values)
    topo = build_topology(jnp.asarray(ds.resid.values), jnp.zeros(10, jnp.int32),
                          jnp.ones(10), species)
    params = jax.tree.map(jnp.asarray, mp.params)
    return (lambda R: eng.force(R, params, species, topo)), jnp.asarray(ds.R.values[0]), \
        jnp.asarray(internal_masses(ds.species.values))


@pytest.mark.slow
def test_the_integrator_is_jax_mds_baoab(world, reference):
    jax_md = pytest.importorskip("jax_md")
    store, tmp = world
    force, R0, mass = _protstore_force(store, tmp)
    dt, kT, gamma = 0.002, KB_KCAL_PER_MOL_K * 300.0, 1.0
    key = jax.random.split(jax.random.PRNGKey(7), 3)[1]
    theirs_init, theirs_step = jax_md.simulate.nvt_langevin(force, jax_md.space.free()[1], dt,
                                                            kT, gamma=gamma)
    ours_init, ours_step = baoab(force, dt, kT, gamma)
    a, b = theirs_init(key, R0, mass=mass), jax.jit(ours_init)(key, R0, mass)
    np.testing.assert_array_equal(a.momentum, b.momentum)
    run_a = jax.jit(lambda s: jax.lax.fori_loop(0, 100, lambda i, x: theirs_step(x), s))
    run_b = jax.jit(lambda s: jax.lax.fori_loop(0, 100, lambda i, x: ours_step(x), s))
    a, b = run_a(a), run_b(b)
    np.testing.assert_allclose(a.position, b.position, rtol=0, atol=1e-5)
    np.testing.assert_allclose(a.momentum, b.momentum, rtol=0, atol=1e-5)
    assert np.array_equal(a.rng, b.rng)
    # simulate's replica 1 after 100 steps (its 5th saved frame) is that trajectory too
    np.testing.assert_allclose(reference.R.values[1, 4], a.position, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_the_kinetic_temperature_averages_to_the_target(world):
    store, tmp = world
    config = BASE.replace(mode="prior-only", n_steps=20_000, n_replicas=8, save_every=40,
                          friction=5.0, temperature=350.0)
    simulate(store, tmp / "ck", "two", tmp / "hot.zarr", config, progress=False)
    T = xr.open_zarr(tmp / "hot.zarr").kinetic_temperature.values[:, 100:]  # after 8 ps
    # 8 replicas x 400 frames of a 30-degree-of-freedom system: the mean's error is ~1%
    assert T.mean() == pytest.approx(350.0, rel=0.04)
    assert doc_temperature(tmp / "hot.zarr") == 350.0


def doc_temperature(path):
    return xr.open_zarr(path).attrs["protstore_trajectory"]["temperature"]


def test_temperature_and_start_frames_come_from_the_data(world):
    store, tmp = world
    with pytest.raises(ConfigError, match="frames at 300, 350 K; choose one"):
        simulate(store, tmp / "ck", "two", tmp / "t.zarr", BASE, progress=False)
    with pytest.raises(ConfigError, match="stores no temperature"):
        simulate(store, tmp / "ck", "nt", tmp / "t.zarr", BASE, progress=False)
    ds = store.protein("two")
    assert simrun.start_frames(ds, 350.0, BASE) == [2, 2, 2]
    drawn = simrun.start_frames(ds, 350.2, BASE.replace(start="random", n_replicas=20))
    assert set(drawn) == {2, 3}
    assert set(simrun.start_frames(ds, 400.0, BASE.replace(start="random",
                                                           n_replicas=30))) == {0, 1, 2, 3}
    assert not (tmp / "t.zarr").exists()


@pytest.mark.parametrize("extra, message", [
    (["--protein", "nope"], "no protein 'nope'"),
    (["--steps", "0"], "steps must be a positive integer"),
    (["--steps", "-5"], "steps must be a positive integer"),
    (["--temperature", "-1"], "temperature must be a positive finite number"),
    (["--temperature", "0"], "temperature must be a positive finite number"),
    (["--dt-fs", "0"], "dt-fs must be a positive finite number"),
    (["--steps", "30"], "multiple of save-every"),
    (["--params", "bad_shapes"], "leaf params['model']"),
    (["--params", "missing.pkl"], "no such checkpoint"),
    (["--params", "params.pkl"], "pass --allow-pickle only for files you trust"),
    (["--resume"], "no trajectory to resume"),
])
def test_bad_input_is_a_one_line_error(world, capsys, extra, message):
    store, tmp = world
    out = tmp / "cli-bad.zarr"
    args = {"--protein": "p1", "--params": "ck", "--out": str(out)}
    flags = []
    it = iter(extra)
    for flag in it:
        if flag in args:
            args[flag] = next(it)
        else:
            flags.append(flag)
    argv = ["simulate", store.url, "--protein", args["--protein"], "--params",
            str(tmp / args["--params"]), "--out", args["--out"], "--save-every", "20",
            "--no-progress", *flags]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("protstore: error: ") and message in err[0], err
    assert not out.exists()


def test_the_cli_simulates_and_refuses_an_existing_output(world, reference, capsys):
    store, tmp = world
    out = tmp / "cli.zarr"
    argv = ["simulate", store.url, "--params", str(tmp / "ck"), "--protein", "p1", "--out",
            str(out), "--steps", "400", "--save-every", "20", "--replicas", "3",
            "--block-frames", "5", "--seed", "7", "--no-progress"]
    assert main(argv) == 0
    assert "simulated p1 at 300 K: 400 steps x 3 replicas" in capsys.readouterr().out
    assert np.array_equal(xr.open_zarr(out).R.values, reference.R.values)
    assert main(argv) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    (tmp / "not-a-traj").mkdir()
    (tmp / "not-a-traj" / "keep.txt").write_text("mine")
    assert main([*argv[:7], str(tmp / "not-a-traj"), *argv[8:], "--overwrite"]) == 1
    assert "not a protstore trajectory" in capsys.readouterr().err
    assert (tmp / "not-a-traj" / "keep.txt").exists()


def test_a_store_and_a_trajectory_on_s3(world, reference, s3_bucket, capsys):
    store, tmp = world
    url = f"{s3_bucket}/s.zarr"
    assert main(["ingest", str(tmp / "p1.npz"), "--store", url, "--no-progress"]) == 0
    traj = f"{s3_bucket}/runs/p1.zarr"
    remote = protstore.open_store(url)
    result = simulate(remote, tmp / "ck", "p1", traj, BASE, progress=False)
    assert result.document["store"] == url
    ds = xr.open_zarr(traj)
    assert ds.attrs["protstore_trajectory"]["complete"]
    assert np.array_equal(ds.R.values, reference.R.values)
    with pytest.raises(StoreError):
        simulate(remote, tmp / "ck", "nope", f"{s3_bucket}/runs/x.zarr", BASE, progress=False)


def test_compare_reads_what_simulate_writes(world, reference, tmp_path):
    """The two commands' shared contract, end to end: a trajectory straight from simulate."""
    from protstore.compare import compare

    store, tmp = world
    res = compare(store, [tmp / "ref.zarr"], labels=["sim"], tica=False, out=tmp_path / "cmp")
    assert res.doc["trajectories"][0]["n_frames"] == 3 * 20  # every saved frame, 3 replicas
    sim = res.samples.where(res.samples.source == "sim", drop=True)
    np.testing.assert_allclose(sim.rg.values, _rg(reference.R.values.reshape(-1, 10, 3)),
                               rtol=1e-5)
    js = res.table.js.sel(trajectory="sim")
    assert np.isfinite(js.sel(observable=["bond", "angle", "dihedral", "rg", "rmsd"])).all()
    assert "no native contacts" in res.doc["skipped"]["q"]  # a straight 10-bead chain
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["protein"] == "p1"


def _rg(R):
    return np.sqrt(((R - R.mean(axis=1, keepdims=True)) ** 2).sum(-1).mean(-1))
