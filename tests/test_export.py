"""protstore export: torchmd-net's and mlcg's HDF5 layouts read back with h5py (and with
torchmd-net's own HDF5 dataset class where it is installed), frame by frame against the store."""

import dataclasses

import fsspec
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import protstore
from protstore.batching import make_plan, save_plan
from protstore.batching.sample import padded_topology
from protstore.cli import main
from protstore.errors import ProtstoreError
from protstore.export import export
from protstore.export.frames import PriorForces, parts
from protstore.ingest import ingest
from protstore.model import build_topology, default_priors, prior_energy
from protstore.model.fit import priors_from_doc, priors_to_doc
from protstore.train.priors import write_priors
from protstore.store.layout import chain_codes
from protstore.vocab import VOCABULARY

from helpers import write_mdcath

CORRUPT = {(320, 0, 2): "nan", (348, 0, 5): "overflow"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three proteins in two buckets, several small chunks each; toy1 had 2 corrupt frames;
    toy2 holds prolines (X-Pro bonds), toy3 two chains. Plan 'p': frame split with val and
    test parts."""
    tmp = tmp_path_factory.mktemp("export")
    truth = {"toy1": write_mdcath(tmp / "toy1.h5", domain="toy1", frames=12, corrupt=CORRUPT,
                                  seed=1),
             "toy2": write_mdcath(tmp / "toy2.h5", domain="toy2", frames=12, seed=2,
                                  resnames=("GLY", "PRO", "ALA", "PRO", "LYS", "TRP", "SER",
                                            "PRO", "VAL")),
             "toy3": write_mdcath(tmp / "toy3.h5", domain="toy3", frames=12, seed=3,
                                  resnames=("MET", "ALA", "GLU", "LEU", "ARG", "ASP", "CYS",
                                            "HIS"), chains=list("AAAABBBB"),
                                  resids=[1, 2, 3, 4, 1, 2, 3, 4])}
    protstore.store.create_store(tmp / "s.zarr", protstore.Encoding(chunk_bytes=1024))
    s = protstore.open_store(tmp / "s.zarr", mode="a")
    ingest(sorted(tmp.glob("toy*.h5")), s, progress=False, log=lambda m: None)
    plan = make_plan(s.lengths().to_dict(), s.summary()["n_frames"].to_dict(), name="p",
                     boundaries=[6], split="frame", val_fraction=0.25, test_fraction=0.2,
                     block_frames=3, seed=0)
    save_plan(s, plan)
    s = protstore.open_store(tmp / "s.zarr")
    s.truth = truth
    return s


@pytest.fixture(scope="module")
def priors_doc():
    """Priors with every term switched on (angle series, dihedrals, the X-Pro double well)."""
    p = default_priors()
    p["angle"]["cheb"] = np.array([0.0, 0.4, -0.3, 0.2, 0.1, -0.05, 0.02], np.float32)
    p["dihedral"]["k"] = np.array([0.3, 0.2, 0.1], np.float32)
    p["dihedral"]["gamma"] = np.array([0.5, -1.0, 2.0], np.float32)
    p["bond"]["w_cis"] = np.float32(0.2)
    return priors_to_doc(p, None, created_by="test")


def _frames(store, plan, pid, split):
    return np.sort(plan.split.frames(pid, plan.frames[pid], split))


def _labels(plan, pid, frames):
    return np.array([0 if f in set(_frames(None, plan, pid, "train")) else
                     1 if f in set(_frames(None, plan, pid, "val")) else 2 for f in frames])


def _check_frames(store, plan, pid, group, split, pos, forces):
    """The group holds the store's ``split`` frames of ``pid``, bit for bit, with their
    provenance."""
    ds = store.protein(pid, chunks=None).load()
    frames = _frames(store, plan, pid, split)
    np.testing.assert_array_equal(group["frame"][:], frames)
    assert group[pos].dtype == np.float32 and group[forces].dtype == np.float32
    np.testing.assert_array_equal(group[pos][:], ds.R.values[frames])
    np.testing.assert_array_equal(group[forces][:], ds.F.values[frames])
    np.testing.assert_array_equal(group["temperature"][:], ds.temperature.values[frames])
    np.testing.assert_array_equal(group["replica"][:], ds.replica.values[frames])
    np.testing.assert_array_equal(group["source_frame"][:], ds.source_frame.values[frames])
    np.testing.assert_array_equal(group["split"][:], _labels(plan, pid, frames))
    assert [r.decode() for r in group.attrs["resname"]] == ds.resname.values.tolist()
    np.testing.assert_array_equal(group.attrs["resid"], ds.resid.values)
    assert group[pos].attrs["unit"] == "Angstrom"
    assert group[forces].attrs["unit"] == "kcal/mol/Angstrom"
    return ds, frames


def test_torchmdnet_layout_holds_every_frame_bit_for_bit(store, tmp_path, frame_chunk_reads):
    plan = store.plan("p")
    result = export(store, plan, tmp_path / "t.h5", "torchmd-net", progress=False)
    assert (result.n_proteins, result.n_frames) == (3, sum(plan.frames.values()))
    # each stored chunk of R and F is read once
    n_chunks = sum(2 * store.protein_readers(p)["R"].n_chunks for p in plan.proteins)
    assert len(frame_chunk_reads) == n_chunks == len(set(frame_chunk_reads))
    with h5py.File(tmp_path / "t.h5") as f:
        assert sorted(f) == ["toy1", "toy2", "toy3"]  # groups only, no _metadata
        assert f.attrs["format"] == "torchmd-net" and f.attrs["split"] == "all"
        assert f.attrs["length_unit"] == "Angstrom"
        assert f.attrs["force_unit"] == "kcal/mol/Angstrom"
        assert [v.decode() for v in f.attrs["vocabulary"]] == list(VOCABULARY)
        assert not f.attrs["prior_delta"] and "ref_forces" not in f["toy1"]
        for pid in plan.proteins:
            ds, frames = _check_frames(store, plan, pid, f[pid], "all", "pos", "forces")
            types = f[pid]["types"][:]
            assert types.shape == (len(frames), ds.sizes["atom"])
            assert (types == ds.species.values).all()
            assert [VOCABULARY[t] for t in types[0]] == ds.resname.values.tolist()
            assert set(f[pid]) == {"pos", "forces", "types", "frame", "temperature",
                                   "replica", "source_frame", "split"}


def test_excluded_frames_are_never_exported(store, tmp_path):
    """toy1's corrupt source frames are absent; every exported frame is its source frame."""
    export(store, "p", tmp_path / "t.h5", "torchmd-net", progress=False)
    truth = store.truth["toy1"]
    with h5py.File(tmp_path / "t.h5") as f:
        g = f["toy1"]
        runs = list(zip(g["temperature"][:].tolist(), g["replica"][:].tolist(),
                        g["source_frame"][:].tolist()))
        assert len(runs) == 3 * 12 - len(CORRUPT) == len(set(runs))
        assert not set(runs) & {(float(t), r, i) for t, r, i in CORRUPT}
        for row, (t, r, i) in enumerate(runs):
            np.testing.assert_array_equal(g["pos"][row], truth["ca"][(int(t), r)][i])
            np.testing.assert_array_equal(g["forces"][row], truth["force"][(int(t), r)][i])
        assert np.isfinite(g["pos"][:]).all() and np.isfinite(g["forces"][:]).all()


def test_mlcg_layout_one_metaset_per_bucket(store, tmp_path):
    plan = store.plan("p")
    k = plan.buckets[1].index
    export(store, plan, tmp_path / "m.h5", "mlcg", split="train", bucket=k, progress=False)
    with h5py.File(tmp_path / "m.h5") as f:
        assert list(f) == [f"bucket_{k}"] and f.attrs["format"] == "mlcg"
        meta = f[f"bucket_{k}"]
        assert meta.attrs["n_max"] == plan.buckets[k].n_max
        assert sorted(meta) == sorted(plan.buckets[k].proteins)
        for pid in meta:
            g = meta[pid]
            ds, frames = _check_frames(store, plan, pid, g, "train", "cg_coords", "cg_forces")
            assert (g["split"][:] == 0).all() and len(frames) > 0
            assert g.attrs["N_frames"] == len(frames)
            assert g.attrs["cg_embeds"].dtype == np.int64
            np.testing.assert_array_equal(g.attrs["cg_embeds"], ds.species.values)
            assert "cg_delta_forces" not in g


def _independent_prior_forces(params, ds, frames):
    """-dE/dR of the priors on each unpadded frame, one at a time (no padding, no batch)."""
    species = jnp.asarray(ds.species.values)
    topo = build_topology(jnp.asarray(ds.resid.values), jnp.asarray(chain_codes(ds.chain.values)),
                          jnp.ones(ds.sizes["atom"]), species)
    grad = jax.jit(jax.grad(prior_energy, argnums=1))
    return np.stack([-np.asarray(grad(params, jnp.asarray(ds.R.values[f]), topo))
                     for f in frames])


@pytest.mark.slow
def test_prior_delta_is_reference_minus_prior_forces(store, tmp_path, priors_doc):
    plan = store.plan("p")
    path = tmp_path / "priors.json"
    write_priors(priors_doc, path)
    params = priors_from_doc(priors_doc)
    export(store, plan, tmp_path / "t.h5", "torchmd-net", split="val", priors=str(path),
           progress=False)
    export(store, plan, tmp_path / "m.h5", "mlcg", split="val", priors=priors_doc,
           progress=False)
    with h5py.File(tmp_path / "t.h5") as t, h5py.File(tmp_path / "m.h5") as m:
        assert t.attrs["prior_delta"] and "priors" in t.attrs
        for pid in plan.proteins:
            g = t[pid]
            ds, frames = _check_frames(store, plan, pid, g, "val", "pos", "ref_forces")
            expected = ds.F.values[frames] - _independent_prior_forces(params, ds, frames)
            scale = np.abs(ds.F.values).max()
            np.testing.assert_allclose(g["forces"][:], expected, rtol=1e-5, atol=1e-5 * scale)
            assert np.abs(g["forces"][:] - g["ref_forces"][:]).max() > 0.1  # priors matter
            assert g["forces"].attrs["content"] == "reference minus prior forces"
            mol = m[f"bucket_{g.attrs['bucket']}"][pid]
            np.testing.assert_array_equal(mol["cg_delta_forces"][:], g["forces"][:])
            np.testing.assert_array_equal(mol["cg_forces"][:], g["ref_forces"][:])


@pytest.mark.slow
def test_padded_beads_do_not_enter_the_prior_forces(store, priors_doc):
    """The same frames padded to another N_max (and blocked otherwise) give the same forces."""
    plan = store.plan("p")
    forces = PriorForces(priors_from_doc(priors_doc))
    part = next(p for p in parts(store, plan, "all", [1]) if p.protein == "toy3")
    R = store.protein("toy3", chunks=None).R.values[:7]
    wider = dataclasses.replace(part, n_max=part.n_max + 5,
                                padded=padded_topology(part.readers, part.n, part.n_max + 5))
    np.testing.assert_allclose(forces(wider, R), forces(part, R), rtol=1e-6, atol=1e-5)


def test_remote_output_is_uploaded_whole(store, tmp_path):
    url = "memory://protstore-export-test/out/t.h5"
    export(store, "p", url, "mlcg", split="test", progress=False)
    export(store, "p", tmp_path / "local.h5", "mlcg", split="test", progress=False)
    fs = fsspec.filesystem("memory")
    assert fs.ls("protstore-export-test/out", detail=False) == ["/protstore-export-test/out/t.h5"]
    with fsspec.open(url, "rb") as fh, h5py.File(fh) as remote, \
            h5py.File(tmp_path / "local.h5") as local:
        names = []
        local.visit(names.append)
        assert names and remote.attrs["split"] == "test"
        for name in names:
            if isinstance(local[name], h5py.Dataset):
                np.testing.assert_array_equal(remote[name][:], local[name][:])
    with pytest.raises(ProtstoreError, match="exists"):
        export(store, "p", url, "mlcg", split="test", progress=False)
    export(store, "p", url, "torchmd-net", split="test", overwrite=True, progress=False)
    with fsspec.open(url, "rb") as fh, h5py.File(fh) as remote:
        assert remote.attrs["format"] == "torchmd-net"
    fs.rm("protstore-export-test", recursive=True)


def test_refusals_leave_nothing_behind(store, tmp_path):
    out = tmp_path / "x.h5"
    with pytest.raises(ProtstoreError, match="format must be one of"):
        export(store, "p", out, "npz", progress=False)
    with pytest.raises(ProtstoreError, match="buckets 0..1, not 7"):
        export(store, "p", out, "mlcg", bucket=7, progress=False)
    with pytest.raises(ProtstoreError, match="split must be one of"):
        export(store, "p", out, "mlcg", split="validation", progress=False)
    with pytest.raises(ProtstoreError, match="cannot read priors"):
        export(store, "p", out, "mlcg", priors=str(tmp_path / "none.json"), progress=False)
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"old")
    with pytest.raises(ProtstoreError, match="exists"):
        export(store, "p", out, "mlcg", progress=False)
    assert out.read_bytes() == b"old"


def test_cli_export(store, tmp_path, capsys):
    out = tmp_path / "t.h5"
    assert main(["export", store.url, "--plan", "p", "--format", "torchmd-net", "--out",
                 str(out), "--split", "train", "--bucket", "0", "--no-progress"]) == 0
    line = capsys.readouterr().out.strip()
    n = len(_frames(store, store.plan("p"), "toy1", "train"))
    assert line == (f"{out}: torchmd-net HDF5, {n} 'train' frames of 1 proteins (buckets 0; "
                    f"reference forces; Å, kcal/mol/Å)")
    with h5py.File(out) as f:
        assert list(f) == ["toy1"] and len(f["toy1"]["pos"]) == n
    assert main(["export", store.url, "--plan", "p", "--format", "mlcg", "--out", str(out),
                 "--prior-delta", str(tmp_path / "missing.json"), "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("protstore: error: ") and "missing.json: cannot read priors" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("preload", [1024, 0], ids=["preloaded", "read-per-sample"])
def test_torchmdnet_reads_the_export_with_its_hdf5_dataset(store, tmp_path, preload):
    datasets = pytest.importorskip("torchmdnet.datasets")
    import torch

    export(store, "p", tmp_path / "t.h5", "torchmd-net", progress=False)
    data = datasets.HDF5(str(tmp_path / "t.h5"), dataset_preload_limit=preload)
    with h5py.File(tmp_path / "t.h5") as f:
        # the class's order: groups in HDF5 name order, frames in order
        expected = [(f[g]["pos"][i], f[g]["types"][i], f[g]["forces"][i])
                    for g in f for i in range(len(f[g]["pos"]))]
    assert len(data) == len(expected) == sum(store.plan("p").frames.values())
    for i, (pos, types, forces) in enumerate(expected):
        sample = data[i]
        assert sample.z.dtype == torch.long
        np.testing.assert_array_equal(sample.pos.numpy(), pos)
        np.testing.assert_array_equal(sample.z.numpy(), types)
        np.testing.assert_array_equal(sample.neg_dy.numpy(), forces)
