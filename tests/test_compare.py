"""``protstore compare``: observables, JS divergence and the whole comparison against hand
computations on toy data; the document, the table, the plots; one-line errors; S3."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import xarray as xr
from scipy.spatial.distance import jensenshannon
from scipy.spatial.transform import Rotation

import protstore
from protstore.cli import main
from protstore.compare import compare
from protstore.compare import divergence as dv
from protstore.compare import observables as obs
from protstore.errors import InputError, ProtstoreError, StoreError
from protstore.ingest import ingest
from protstore.schemas import check_document

from compare_helpers import write_trajectory
from helpers import write_mdcath

# ------------------------------------------------------------------------------ observables
# a 4-bead chain: bonds 1.5, 2, 3 Å along x, y, z; both angles 90°; dihedral +90°
TOY = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [1.5, 2.0, 0.0], [1.5, 2.0, 3.0]])
ONE_CHAIN = dict(resid=[1, 2, 3, 4], chain=["A"] * 4)


def test_bonds_angles_dihedrals_rg_end_to_end_of_a_toy_chain():
    t = obs.terms(**ONE_CHAIN)
    R = TOY[None]
    np.testing.assert_allclose(obs.bond_lengths(R, t), [[1.5, 2.0, 3.0]], atol=1e-6)
    np.testing.assert_allclose(obs.bond_angles(R, t), [[np.pi / 2, np.pi / 2]], atol=1e-6)
    np.testing.assert_allclose(obs.dihedral_angles(R, t), [[np.pi / 2]], atol=1e-6)
    mirror = TOY * [1, 1, -1]  # the mirror image turns the other way
    np.testing.assert_allclose(obs.dihedral_angles(mirror[None], t), [[-np.pi / 2]], atol=1e-6)
    centre = TOY.mean(axis=0)  # (1.125, 1, 0.75)
    rg = np.sqrt(sum(((p - centre) ** 2).sum() for p in TOY) / 4)
    np.testing.assert_allclose(obs.radius_of_gyration(R), [rg])
    np.testing.assert_allclose(obs.end_to_end(R, ONE_CHAIN["chain"]), [np.sqrt(15.25)])


def test_a_resid_gap_or_a_chain_change_breaks_the_chain():
    gap = obs.terms(resid=[1, 2, 4, 5], chain=["A"] * 4)
    assert gap.bond.tolist() == [0, 2] and gap.angle.size == 0 and gap.dihedral.size == 0
    two = obs.terms(resid=[1, 2, 1, 2], chain=np.array(["A", "A", "B", "B"], dtype="T"))
    assert two.bond.tolist() == [0, 2]
    # end-to-end: the first and last bead of the first chain
    np.testing.assert_allclose(obs.end_to_end(TOY[None], ["A", "A", "B", "B"]), [1.5])


def test_rmsd_is_zero_for_a_rotated_translated_copy_and_matches_an_independent_fit():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(12, 3)) * 5
    rot = Rotation.random(random_state=1)
    copy = rot.apply(ref) + [10.0, -3.0, 7.0]
    noisy = ref + rng.normal(scale=0.3, size=ref.shape)
    mirrored = ref * [-1, 1, 1]  # no proper rotation maps a chiral cloud onto its mirror
    got = obs.kabsch_rmsd(np.stack([copy, rot.apply(noisy) - 4.0, mirrored]), ref)
    assert got[0] < 1e-6
    a, b = noisy - noisy.mean(0), ref - ref.mean(0)
    _, rssd = Rotation.align_vectors(b, a)
    np.testing.assert_allclose(got[1], rssd / np.sqrt(len(ref)), rtol=1e-6)
    _, rssd = Rotation.align_vectors(b, mirrored - mirrored.mean(0))
    np.testing.assert_allclose(got[2], rssd / np.sqrt(len(ref)), rtol=1e-6)
    assert got[2] > 0.5


def helix(n: int, scale: float = 1.0) -> np.ndarray:
    """[n, 3] CA positions of an ideal α-helix (radius 2.3 Å, rise 1.5 Å, 100° per residue:
    CA-CA 3.8 Å); ``scale`` stretches it along its axis."""
    k = np.arange(n)
    phi = np.deg2rad(100.0) * k
    return np.stack([2.3 * np.cos(phi), 2.3 * np.sin(phi), 1.5 * scale * k], axis=1)


def test_native_contacts_and_q_of_best_hummer_eaton():
    native = helix(8)
    resid, chain = np.arange(1, 9), ["A"] * 8
    pairs, r0 = obs.native_contacts(native, resid, chain)
    # by hand: |i - j| > 3 and closer than 8 Å in the native frame
    want = [(i, j) for i in range(8) for j in range(i + 4, 8)
            if np.linalg.norm(native[i] - native[j]) < 8.0]
    assert [tuple(p) for p in pairs] == want and len(want) > 0
    q = obs.fraction_native_contacts(np.stack([native, helix(8, 3.0)]), pairs, r0)
    hand = np.mean([1 / (1 + np.exp(5.0 * (d - 1.5 * d))) for d in r0])
    np.testing.assert_allclose(q[0], hand, rtol=1e-12)
    assert q[0] > 0.999 and q[1] < 0.01
    # another chain is never "along the chain": its close beads are contacts at any resid
    two_chains = obs.native_contacts(native, [1, 2, 3, 4, 1, 2, 3, 4], ["A"] * 4 + ["B"] * 4)
    assert len(two_chains[0]) > len(pairs)


# ------------------------------------------------------------------------------ divergence
def test_js_is_0_for_identical_1_for_disjoint_and_a_hand_value_between():
    assert dv.js_divergence([3, 1, 0], [6, 2, 0]) == 0.0
    assert dv.js_divergence([1, 2, 0, 0], [0, 0, 5, 1]) == 1.0
    # p = (1, 0), q = (1/2, 1/2): m = (3/4, 1/4)
    hand = 0.5 * np.log2(4 / 3) + 0.5 * (0.5 * np.log2(2 / 3) + 0.5 * np.log2(2))
    np.testing.assert_allclose(dv.js_divergence([1, 0], [1, 1]), hand, rtol=1e-12)
    p, q = np.array([5, 0, 3, 2, 0]), np.array([1, 4, 4, 0, 0])
    np.testing.assert_allclose(dv.js_divergence(p, q), jensenshannon(p, q, base=2) ** 2,
                               rtol=1e-10)


def test_shared_bins_clip_wrap_and_widen():
    a, b = np.linspace(0, 1, 1001), np.linspace(0.5, 3, 1001)
    bins = dv.shared_edges(a, b, n_bins=10)
    np.testing.assert_allclose([bins.lo, bins.hi], [np.percentile(a, 0.5), np.percentile(b, 99.5)])
    assert bins.counts(np.array([-100.0, 100.0])).tolist() == [1] + [0] * 8 + [1]
    same = dv.shared_edges(np.full(5, 2.0), np.full(3, 2.0))
    assert (same.lo, same.hi) == (1.5, 2.5) and dv.js_of_samples(np.full(5, 2.0), np.full(3, 2.0),
                                                               same) == 0.0
    period = dv.shared_edges(a, b, n_bins=4, period=(-np.pi, np.pi))
    assert period.index(np.array([-np.pi, np.pi, np.pi + 0.1, -0.1])).tolist() == [0, 0, 0, 1]
    np.testing.assert_allclose(dv.circular_mean([np.pi - 0.1, -np.pi + 0.1]), np.pi)


# ------------------------------------------------------------------------------ the comparison
N_RES = 8


@pytest.fixture(scope="module")
def helix_store(tmp_path_factory):
    """A store with one 8-residue helical protein 'hx': 320 K replicas 0 and 1 (20 frames
    each) and 348 K replica 0; CA = helix + 0.15 Å noise."""
    tmp = tmp_path_factory.mktemp("compare")
    resnames = ("MET", "ALA", "GLY", "LYS", "PRO", "ALA", "LEU", "SER")
    write_mdcath(tmp / "hx.h5", domain="hx", resnames=resnames, frames=20,
                 runs=((320, 0), (320, 1), (348, 0)))
    rng = np.random.default_rng(5)
    with h5py.File(tmp / "hx.h5", "r+") as fh:
        for temp, rep in ((320, 0), (320, 1), (348, 0)):
            coords = fh[f"hx/{temp}/{rep}/coords"]
            ca = helix(N_RES)[None] + rng.normal(scale=0.15, size=(20, N_RES, 3))
            full = np.repeat(ca, 4, axis=1) + rng.normal(scale=1.0, size=(20, 4 * N_RES, 3))
            full[:, 1::4] = ca
            coords[...] = full.astype(np.float32)
    ingest([tmp / "hx.h5"], protstore.open_store(tmp / "s.zarr", mode="a"), progress=False,
           log=lambda m: None)
    return protstore.open_store(tmp / "s.zarr")


def reference(store, T=320.0):
    ds = store.protein("hx", chunks=None).load()
    return ds, ds.R.values[ds.temperature.values == T].reshape(2, 20, N_RES, 3)


def traj(store, where, R, **kw):
    ds = store.protein("hx", chunks=None)
    args = dict(protein="hx", species=ds.species.values, resid=ds.resid.values,
                chain=ds.chain.values, temperature=320.0)
    return write_trajectory(where, R, **{**args, **kw})


@pytest.fixture(scope="module")
def two(helix_store, tmp_path_factory):
    """The reference's own frames ('same') and a stretched, noisier helix ('loose')."""
    tmp = tmp_path_factory.mktemp("trajs")
    _, R = reference(helix_store)
    rng = np.random.default_rng(2)
    loose = helix(N_RES, 1.6)[None, None] + rng.normal(scale=0.4, size=(2, 30, N_RES, 3))
    paths = [traj(helix_store, tmp / "same.zarr", R), traj(helix_store, tmp / "loose.zarr", loose)]
    out = tmp / "out"
    result = compare(helix_store, paths, out=out)
    return {"paths": paths, "R": R, "loose": loose, "result": result, "out": out,
            "store": helix_store}


def test_compare_numbers_equal_a_hand_computation(two):
    res, doc = two["result"], two["result"].doc
    ref = np.concatenate(two["R"])  # replicas pooled
    loose = np.concatenate(two["loose"])
    t = res.table
    # the reference against itself: JS 0, equal means
    same = t.sel(trajectory="same")
    assert (same.js.values == 0).all()
    np.testing.assert_allclose(same.sim_mean.values[:-1], same.ref_mean.values[:-1])
    # rg by hand
    def rg(X):
        return np.sqrt(((X - X.mean(1, keepdims=True)) ** 2).sum(-1).mean(-1))
    np.testing.assert_allclose(float(t.ref_mean.sel(trajectory="loose", observable="rg")),
                               rg(ref).mean(), rtol=1e-6)
    np.testing.assert_allclose(float(t.sim_mean.sel(trajectory="loose", observable="rg")),
                               rg(loose).mean(), rtol=1e-6)
    # bond lengths pooled; JS on the recorded shared bins, by np.histogram and scipy
    bonds_ref = np.linalg.norm(np.diff(ref, axis=1), axis=-1).ravel()
    bonds_sim = np.linalg.norm(np.diff(loose, axis=1), axis=-1).ravel()
    entry = doc["trajectories"][1]["observables"]["bond"]
    b = entry["bins"][0]
    assert b["lo"] == pytest.approx(min(np.percentile(bonds_ref, 0.5), np.percentile(bonds_sim, 0.5)),
                                    rel=1e-5)
    hists = [np.histogram(np.clip(x, b["lo"], b["hi"]), bins=b["n"], range=(b["lo"], b["hi"]))[0]
             for x in (bonds_ref, bonds_sim)]
    assert entry["js"] == pytest.approx(jensenshannon(*hists, base=2) ** 2, abs=1e-6)
    assert entry["sim_mean"] == pytest.approx(bonds_sim.mean(), rel=1e-6)
    # Q: contacts of the reference's first frame (replica 0, source frame 0)
    native = ref[0]
    pairs = [(i, j) for i in range(N_RES) for j in range(i + 4, N_RES)
             if np.linalg.norm(native[i] - native[j]) < 8.0]
    r0 = np.array([np.linalg.norm(native[i] - native[j]) for i, j in pairs])
    d = np.stack([np.linalg.norm(loose[:, i] - loose[:, j], axis=-1) for i, j in pairs], -1)
    q = (1 / (1 + np.exp(5.0 * (d - 1.5 * r0)))).mean(-1)
    assert doc["trajectories"][1]["observables"]["q"]["sim_mean"] == pytest.approx(q.mean(),
                                                                                  rel=1e-6)
    assert float(t.ref_mean.sel(trajectory="same", observable="q")) > 0.9 > q.mean()
    # RMSD to the first reference frame: 0 for that frame itself
    s = res.samples
    assert float(s.rmsd[(s.source == "reference").values][0]) < 1e-5
    # TICA fitted on the reference, applied to both: the same frames project the same
    ref_tic = s.tic1[(s.source == "reference").values].values
    np.testing.assert_allclose(s.tic1[(s.source == "same").values].values, ref_tic)
    assert doc["tica"]["n_lagged_pairs"] == 2 * 19 and doc["tica"]["lagtime_frames"] == 1
    fes = res.fes.free_energy
    assert fes.dims == ("source", "tic1", "tic2") and float(fes.min()) == 0.0
    assert list(res.fes.source.values) == ["reference", "same", "loose"]


def test_the_document_the_table_and_the_plots(two):
    out, res = two["out"], two["result"]
    text = (out / "compare.json").read_text()
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in compare.json"))
    check_document(doc, "compare", "compare.json")
    assert doc == json.loads(json.dumps(res.doc))
    assert doc["store_version"] == two["store"].version is not None
    assert set(doc["observables"]) == {"bond", "angle", "dihedral", "rg", "rmsd", "q",
                                       "end_to_end", "tic1", "tic2", "tica"}
    assert doc["observables"] == doc["trajectories"][0]["observables"]  # the first trajectory's
    assert [t["label"] for t in doc["trajectories"]] == ["same", "loose"]
    assert doc["observables"]["tica"]["ref_mean"] is None
    assert res.table.js.dims == ("trajectory", "observable")
    table = (out / "compare.txt").read_text()
    assert "same_js" in table and "loose_js" in table and "\nq " in table
    for name in ("compare_observables.png", "compare_fes.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    frame = res.table.to_dataframe()
    assert frame.loc[("loose", "rmsd"), "js"] > 0.5


def test_frames_in_many_small_blocks_give_the_same_numbers(helix_store, two, monkeypatch):
    monkeypatch.setattr(obs, "BLOCK_VALUES", 1)  # one frame per block
    res = compare(helix_store, two["paths"])
    xr.testing.assert_allclose(res.table, two["result"].table)
    xr.testing.assert_allclose(res.samples, two["result"].samples)


def test_burn_in_incomplete_dropped_and_nonfinite_frames(helix_store, tmp_path):
    _, R = reference(helix_store)
    R = R.copy()
    R[1, 5, 2] = np.nan  # one bad frame
    # 20 frames each at (k + 1) * 0.1 ps; steps_done 100 of 200 -> frames up to 1.0 ps
    path = traj(helix_store, tmp_path / "t.zarr", R, complete=False, steps_done=100,
                dropped=[{"replica": 0, "step": 60, "reason": "test"}])
    with pytest.raises(InputError, match="t.zarr: trajectory is incomplete"):
        compare(helix_store, path, tica=False)
    res = compare(helix_store, path, tica=False, allow_incomplete=True, burn_in=0.3)
    d = res.doc["trajectories"][0]
    # replica 0: 0.3..0.5 ps (dropped at step 60 = 0.6 ps) -> 3; replica 1: 0.3..1.0 minus NaN -> 7
    assert d["n_frames"] == 3 + 7 and d["complete"] is False
    assert "tica" in res.doc["skipped"] and res.fes is None


def test_cli_compares_and_refuses_bad_input_in_one_line(helix_store, two, tmp_path, capsys):
    store = str(helix_store.location.path)
    _, R = reference(helix_store)
    out = tmp_path / "cli"
    assert main(["compare", store, *two["paths"], "--out", str(out), "--labels", "a,b",
                 "--no-progress"]) == 0
    assert "a_js" in capsys.readouterr().out and (out / "compare.json").exists()
    assert main(["compare", store, two["paths"][0], "--out", str(out)]) == 1  # exists
    assert main(["compare", store, two["paths"][0], "--out", str(out), "--overwrite",
                 "--labels", "only"]) == 0
    doc = json.loads((out / "compare.json").read_text())
    assert [t["label"] for t in doc["trajectories"]] == ["only"]
    capsys.readouterr()
    bad = {
        "incomplete": traj(helix_store, tmp_path / "inc.zarr", R, complete=False, steps_done=50),
        "unknown": traj(helix_store, tmp_path / "unk.zarr", R, protein="nope"),
        "mismatch": traj(helix_store, tmp_path / "mis.zarr", R,
                         species=np.zeros(N_RES, np.int32)),
        "no frames at T": traj(helix_store, tmp_path / "hot.zarr", R, temperature=400.0),
        "not found": str(tmp_path / "missing.zarr"),
        "tica lag": two["paths"][0],
    }
    words = {"incomplete": "is incomplete", "unknown": "no protein 'nope'",
             "mismatch": "not the same protein", "no frames at T": "no frames at 400 K",
             "not found": "trajectory not found", "tica lag": "too few for TICA"}
    for i, (case, path) in enumerate(bad.items()):
        dest = tmp_path / f"bad{i}"
        extra = ["--tica-lag", "25"] if case == "tica lag" else []
        assert main(["compare", store, path, "--out", str(dest), *extra]) == 1, case
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("protstore: error: "), (case, err)
        assert words[case] in err[0], (case, err)
        assert not (dest / "compare.json").exists()


def test_python_api_errors(helix_store, two):
    with pytest.raises(ProtstoreError, match="labels must be distinct"):
        compare(helix_store, two["paths"], labels=["x", "x"])
    with pytest.raises(StoreError, match="not a protstore"):
        compare("/nonexistent/store.zarr", two["paths"])


@pytest.mark.slow
def test_compare_on_s3(s3_bucket, tmp_path, capsys):
    write_mdcath(tmp_path / "aa1.h5", domain="aa1", resnames=("MET", "ALA", "GLY", "LYS", "ALA"),
                 frames=12, runs=((320, 0),), seed=1)
    url = f"{s3_bucket}/s.zarr"
    assert main(["ingest", str(tmp_path / "aa1.h5"), "--store", url, "--no-progress"]) == 0
    ds = protstore.open_store(url).protein("aa1", chunks=None).load()
    t = write_trajectory(f"{s3_bucket}/t.zarr", ds.R.values[None], protein="aa1",
                         species=ds.species.values, resid=ds.resid.values, chain=ds.chain.values,
                         temperature=320.0)
    assert main(["compare", url, t, "--out", f"{s3_bucket}/cmp", "--no-progress"]) == 0
    import fsspec

    fs = fsspec.filesystem("s3")
    names = {p.rsplit("/", 1)[-1] for p in fs.ls(f"{s3_bucket}/cmp", detail=False)}
    assert {"compare.json", "compare.txt", "compare_observables.png", "compare_fes.png"} <= names
    doc = json.loads(fs.cat_file(f"{s3_bucket}/cmp/compare.json"))
    assert doc["observables"]["rg"]["js"] == 0.0 and "q" in doc["skipped"]
    assert not (tmp_path / "s3:").exists()
