"""Physics on realistic data: temperatures, units, cis-peptides in the bond prior, a smooth
network energy."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import protstore
from protstore.errors import ProtstoreError
from protstore.ingest import IngestOptions, ingest
from protstore.model.fit import CIS_MAX, fit_bond

KB = 0.0019872041


def _bond_samples(rng, n, T, k, r0, cis_fraction):
    """Boltzmann samples of a harmonic CA-CA bond at T (with the r² Jacobian), a fraction of
    them cis-peptides near 2.9 Å."""
    x = np.linspace(2.5, 4.6, 40001)
    pdf = x ** 2 * np.exp(-0.5 * k * (x - r0) ** 2 / (KB * T))
    cdf = np.cumsum(pdf) / pdf.sum()
    r = np.interp(rng.random(n), cdf, x)
    n_cis = int(round(cis_fraction * n))
    r[:n_cis] = rng.normal(2.9, 0.05, n_cis)
    return r


@pytest.mark.parametrize("cis_fraction", [0.0, 0.001, 0.01])
@pytest.mark.parametrize("k", [190.0, 566.0])
def test_bond_fit_survives_cis_peptides(k, cis_fraction):
    rng = np.random.default_rng(int(k) + int(cis_fraction * 1e4))
    T = 320.0
    r = _bond_samples(rng, 200_000, T, k, 3.81, cis_fraction)
    fitted, info = fit_bond(r, KB * T)
    trans = r[r >= CIS_MAX]
    assert info["n_cis"] == int(round(cis_fraction * len(r)))
    assert float(fitted["k"]) == pytest.approx(KB * T / trans.var(), rel=0.10)
    assert float(fitted["r0"]) == pytest.approx(trans.mean(), abs=0.01)


def test_bond_fit_at_two_temperatures_is_consistent():
    rng = np.random.default_rng(7)
    k, r0 = 190.0, 3.8
    r = np.concatenate([_bond_samples(rng, 100_000, T, k, r0, 0.002) for T in (300.0, 450.0)])
    kT = np.repeat([KB * 300.0, KB * 450.0], 100_000)
    fitted, _ = fit_bond(r, kT)
    assert float(fitted["k"]) == pytest.approx(k, rel=0.08)
    assert float(fitted["r0"]) == pytest.approx(r0, abs=0.01)


@pytest.fixture(scope="module")
def realistic(tmp_path_factory):
    """CG frames of one 40-residue protein simulated at 320 and 348 K, with mapped forces at a
    real all-atom scale (exact force + 20 kcal/mol/Å of noise per component)."""
    from protstore.demo import DemoConfig
    from protstore.demo.dataset import simulate_protein

    rng = np.random.default_rng(0)
    config = DemoConfig(frames=150, stride=20, equilibration=400)
    seq = list(rng.choice(["ALA", "LEU", "GLU", "LYS", "PRO", "GLY"], size=40))
    R, F = simulate_protein(seq, np.array(["A"] * 40), [320.0, 348.0], config,
                            jax.random.PRNGKey(0))
    F = F + rng.normal(scale=20.0, size=F.shape)
    T = np.repeat([320.0, 348.0], R.shape[1])
    return {"R": R.reshape(-1, 40, 3), "F": F.reshape(-1, 40, 3), "T": T,
            "resname": np.array(seq), "dir": tmp_path_factory.mktemp("units")}


def _ingest_npz(data, name, R, F, **options):
    path = data["dir"] / f"{name}.npz"
    np.savez(path, R=R.astype(np.float32), F=F.astype(np.float32), resname=data["resname"],
             temperature=data["T"].astype(np.float32))
    store = protstore.open_store(data["dir"] / f"{name}.zarr", mode="a")
    lines = []
    report = ingest([path], store, IngestOptions(**options), progress=False, log=lines.append)
    return report, store, lines


@pytest.mark.parametrize("unit, factor", [("kJ/mol/nm", 41.84), ("kJ/mol/angstrom", 4.184),
                                          ("eV/angstrom", 1 / 23.060548),
                                          ("kcal/mol/nm", 10.0)])
def test_undeclared_wrong_force_units_are_refused_naming_the_unit(realistic, unit, factor):
    d = realistic
    name = unit.replace("/", "_")
    report, _, _ = _ingest_npz(d, name, d["R"], d["F"] * factor)
    assert not report.written
    message = next(iter(report.failed.values()))
    assert f"they look like {unit}" in message and f"--force-units '{unit}'" in message
    # declared, the same numbers are converted exactly and accepted
    report, store, _ = _ingest_npz(d, name + "-declared", d["R"], d["F"] * factor,
                                   force_units=unit)
    assert report.written
    pid = store.proteins[0]
    doc = store.protein_doc(pid)
    assert doc["source_units"] == {"length": "angstrom", "force": unit, "declared": True}
    assert doc["unit_check"]["ratio"] == pytest.approx(1.0, abs=0.3)
    stored = store.protein(pid).F.values
    expect = (d["F"] * factor).astype(np.float32).astype(np.float64) / factor
    np.testing.assert_allclose(stored, expect.astype(np.float32), rtol=1e-6, atol=1e-5)


def test_right_units_pass_and_nanometres_are_named(realistic):
    d = realistic
    report, store, _ = _ingest_npz(d, "right", d["R"], d["F"])
    assert report.written
    check = store.protein_doc(store.proteins[0])["unit_check"]
    assert 0.7 < check["ratio"] < 1.3 and "agree with physics" in check["note"]
    report, _, _ = _ingest_npz(d, "nm", d["R"] / 10, d["F"])
    assert "look like nanometres; declare them with --length-units nm" in \
        next(iter(report.failed.values()))
    report, store, _ = _ingest_npz(d, "nm-declared", d["R"] / 10, d["F"], length_units="nm")
    assert report.written
    np.testing.assert_allclose(store.protein(store.proteins[0]).R.values,
                               (d["R"] / 10).astype(np.float32) * 10, rtol=1e-6)


def _ingest_npz_without_temperature(data, name, R, F, **options):
    path = data["dir"] / f"{name}.npz"
    np.savez(path, R=R.astype(np.float32), F=F.astype(np.float32), resname=data["resname"])
    store = protstore.open_store(data["dir"] / f"{name}.zarr", mode="a")
    report = ingest([path], store, IngestOptions(**options), progress=False, log=lambda m: None)
    return report, store


@pytest.mark.parametrize("unit, factor", [("kJ/mol/nm", 41.84), ("eV/angstrom", 1 / 23.060548)])
def test_forces_without_a_temperature_are_checked_by_the_temperature_they_imply(
        realistic, unit, factor):
    d = realistic
    report, _ = _ingest_npz_without_temperature(d, "noT-" + unit.replace("/", "_"), d["R"],
                                                d["F"] * factor)
    assert not report.written
    message = next(iter(report.failed.values()))
    assert "no temperature is recorded" in message and f"they look like {unit}" in message


def test_right_forces_without_a_temperature_pass_and_a_later_temperature_is_checked(realistic):
    from protstore.batching import make_plan
    from protstore.train.priors import check_temperatures

    d = realistic
    report, store = _ingest_npz_without_temperature(d, "noT-right", d["R"], d["F"])
    assert report.written
    pid = store.proteins[0]
    check = store.protein_doc(pid)["unit_check"]
    implied = float(check["note"].split("implies ")[1].split(" K")[0])
    assert 280 < implied < 400, check  # simulated at 320 and 348 K
    assert len(check["unknown_temperature_sums"]) == 7
    plan = make_plan(store.lengths().to_dict(), store.summary()["n_frames"].to_dict(),
                     split="none")
    check_temperatures(store, plan, 330.0)
    with pytest.raises(ProtstoreError, match=rf"protein {pid}: at --temperature 3300 K its "
                                             r"forces are 0.1\d*x what physics expects"):
        check_temperatures(store, plan, 3300.0)


def test_a_small_protein_in_the_wrong_units_is_checked_too(realistic):
    d = realistic
    few = slice(0, 5)  # 5 frames of 39 bonds: under the 200 pairs 0.6 needed
    path = d["dir"] / "few.npz"
    np.savez(path, R=d["R"][few].astype(np.float32),
             F=(d["F"][few] / 23.060548).astype(np.float32), resname=d["resname"],
             temperature=d["T"][few].astype(np.float32))
    store = protstore.open_store(d["dir"] / "few.zarr", mode="a")
    report = ingest([path], store, progress=False, log=lambda m: None)
    assert not report.written
    assert "they look like eV/angstrom" in next(iter(report.failed.values()))


@pytest.mark.slow
def test_unknown_temperature_is_refused_then_fixed_by_the_flag(tmp_path, capsys):
    from protstore.cli import main
    from protstore.demo import DemoConfig
    from protstore.demo.dataset import make_demo_dataset

    config = DemoConfig(lengths=(20, 44), two_chain=(), temperatures=(320,), replicas=1,
                        frames=30, stride=10, equilibration=100, corrupt=False,
                        predecessor_length=24, seed=2)
    files = make_demo_dataset(tmp_path / "data", config, progress=False)
    store = str(tmp_path / "s.zarr")
    assert main(["ingest", *map(str, files), "--store", store, "--no-progress"]) == 0
    assert "stores no temperature" in capsys.readouterr().err
    assert main(["bucket", store, "--split", "none", "--n-buckets", "1"]) == 0
    capsys.readouterr()
    out = str(tmp_path / "priors.json")
    assert main(["fit-priors", store, "--plan", "default", "--out", out]) == 1
    err = capsys.readouterr().err
    assert "predecessor_pre024" in err and "--temperature K" in err and len(err.splitlines()) == 1
    assert main(["train", store, "--plan", "default", "--out", str(tmp_path / "run"),
                 "--epochs", "1"]) == 1
    assert "unknown temperature" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written
    assert main(["fit-priors", store, "--plan", "default", "--out", out,
                 "--temperature", "320"]) == 0
    doc = json.loads(open(out).read())  # strict JSON: no NaN anywhere
    assert doc["fit"]["unknown_temperature_K"] == 320.0
    assert doc["fit"]["temperatures_K"] == {"320": doc["fit"]["n_frames"]}
    assert doc["fit"]["bond_cis"]["n_cis"] > 0  # the 44-residue protein has a cis-proline


def _dense_frame(n=40, seed=0):
    """A compact random CA cloud: ~25-35 beads within 10 Å of each, as in a folded domain."""
    rng = np.random.default_rng(seed)
    R = rng.uniform(-8.0, 8.0, size=(n, 3))
    return jnp.asarray(R, jnp.float32)


def _largest_step_fraction(model, params, R, lo=-12.0, hi=12.0, steps=400, depth=3):
    """How much of the largest change of E between neighbouring points of a path (bead 0
    moving along x) survives refining that interval 100-fold, repeated ``depth`` times: about
    0.01 per level for a continuous energy, about 1 at a jump."""
    from protstore.model import build_topology

    n = R.shape[0]
    topo = build_topology(jnp.arange(n) * 5, jnp.zeros(n, jnp.int32), jnp.ones(n))
    species = jnp.arange(n) % 20
    energy = jax.jit(jax.vmap(lambda t: model.energy(params, R.at[0, 0].set(t), species,
                                                     jnp.ones(n), topo)))
    fractions = []
    for _ in range(depth):
        path = np.linspace(lo, hi, steps)
        jumps = np.abs(np.diff(np.asarray(energy(jnp.asarray(path, jnp.float32)), np.float64)))
        i = int(np.argmax(jumps))
        lo, hi, steps = path[i], path[i + 1], 100
        fractions.append(jumps[i])
    return fractions[-1] / fractions[0]


@pytest.mark.slow
def test_network_energy_is_continuous_when_neighbours_change():
    from protstore.model import load_model

    R = _dense_frame()
    smooth = load_model(options={"max_neighbors": 39, "cutoff": 10.0})
    params = smooth.init(jax.random.PRNGKey(1), {"force_rms": 20.0})
    # a network as after training: its output layer (zero at init) no longer zero
    out = params["out"]
    params = dict(params, out=dict(out, w=0.1 * jax.random.normal(jax.random.PRNGKey(2),
                                                                   out["w"].shape)))
    count, capacity = smooth.neighbors(params, R, jnp.ones(R.shape[0]))
    assert int(count) <= int(capacity)
    # refined twice 100-fold: a continuous energy's largest step shrinks ~10^4-fold
    assert _largest_step_fraction(smooth, params, R) < 1e-2
    # the same weights with too few neighbour slots: the census flags it, the energy jumps
    truncated = load_model(options={"max_neighbors": 8, "cutoff": 10.0})
    small = dict(params, frozen=dict(params["frozen"], neighbor_slots=jnp.zeros(8)))
    count, capacity = truncated.neighbors(small, R, jnp.ones(R.shape[0]))
    assert int(count) > int(capacity) == 8
    assert _largest_step_fraction(truncated, small, R) > 0.3


@pytest.mark.slow
def test_capacity_is_sized_from_the_data_and_overflow_stops_training(train_store, tmp_path):
    from protstore.checkpoints import read_checkpoint
    from protstore.errors import ConfigError
    from protstore.batching import LoaderConfig
    from protstore.train import TrainConfig, train
    from protstore.train.loop import densest_neighbors

    plan = train_store.plan("p")
    largest = densest_neighbors(train_store, plan)(10.0)
    # every frame of the plan counts, not a sample of them
    most = 0
    for pid in plan.proteins:
        R = train_store.protein(pid, chunks=None).R.values.astype(np.float64)
        frames = np.concatenate([plan.split.frames(pid, plan.frames[pid], s)
                                 for s in ("train", "val", "test")]).astype(int)
        d2 = ((R[frames, :, None] - R[frames, None, :]) ** 2).sum(-1)
        most = max(most, int(((d2 < 100.0).sum(-1) - 1).max()))
    assert largest == most > 8
    result = train(train_store, plan, tmp_path / "sized",
                   TrainConfig(epochs=1, loader=LoaderConfig(batch_size=8)),
                   progress=False, echo=lambda m: None)
    slots = read_checkpoint(result.run_dir / "final").params["model"]["frozen"]["neighbor_slots"]
    assert len(slots) >= 1.25 * largest and len(slots) % 8 == 0
    with pytest.raises(ConfigError, match=r"frame \d+: a bead has \d+ beads within the "
                                          r"network's cutoff, more than its 4 neighbour slots"):
        train(train_store, plan, tmp_path / "tiny",
              TrainConfig(epochs=1, model_options={"max_neighbors": 4},
                          loader=LoaderConfig(batch_size=8)),
            progress=False, echo=lambda m: None)
    # refused by step 0's validation, which checks every frame it sees, before any checkpoint
    from protstore.checkpoints import list_checkpoints
    assert list_checkpoints(tmp_path / "tiny") == []


@pytest.mark.slow
def test_x_pro_bonds_have_a_cis_well_and_other_bonds_do_not():
    from protstore.model import build_topology, default_priors, prior_energy
    from protstore.vocab import SPECIES_ID

    p = default_priors()
    species = jnp.array([SPECIES_ID["ALA"], SPECIES_ID["PRO"], SPECIES_ID["GLY"], 21])
    resid, chain, mask = jnp.arange(4), jnp.zeros(4, jnp.int32), jnp.array([1, 1, 1, 0])
    topo = build_topology(resid, chain, mask, species)
    assert topo.prolyl.tolist() == [True, False, False]

    def energy_at(r01, r12):
        R = jnp.array([[0.0, 0, 0], [r01, 0, 0], [r01 + r12 * 0.3, r12 * 0.95, 0], [0, 0, 0]])
        return prior_energy({"bond": p["bond"], "angle": p["angle"], "dihedral": p["dihedral"],
                             "repulsion": dict(p["repulsion"], epsilon=jnp.float32(0.0))},
                            R, topo)

    force = jax.grad(energy_at, argnums=(0, 1))
    f_cis, f_gly = force(2.9, 2.9)
    assert abs(float(f_cis)) < 0.5  # the X-Pro bond rests in its cis well
    assert float(f_gly) < -40.0  # a non-Pro bond at 2.9 Å is pushed back to 3.8
    f_trans, _ = force(3.8, 3.8)
    assert abs(float(f_trans)) < 0.5
    grads = jax.grad(lambda R: prior_energy(p, R, topo))(jnp.zeros((4, 3)).at[1, 0].set(3.8))
    assert bool(jnp.isfinite(grads).all())
