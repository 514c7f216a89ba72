import numpy as np
import pytest

import protstore
from protstore.errors import InputError, PickleRefusedError
from protstore.ingest import IngestOptions, ingest
from protstore.ingest.npz import open_npz


def _protein(rng, n, t):
    R = np.zeros((t, n, 3))
    R[..., 0] = 3.8 * np.arange(n)
    R = (R + rng.normal(scale=0.05, size=R.shape)).astype(np.float32)
    F = rng.normal(scale=10, size=(t, n, 3))  # float64, as some predecessor files have
    names = rng.choice(["ALA", "GLY", "HSD", "TRP", "LYS"], size=n)
    return R, F, names


def _ingest(tmp_path, files, **opts):
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    report = ingest(files, store, IngestOptions(**opts), progress=False, log=lambda m: None)
    return protstore.open_store(tmp_path / "s.zarr"), report


def test_per_protein_npz_minimal_keys(tmp_path):
    rng = np.random.default_rng(0)
    R, F, names = _protein(rng, 7, 5)
    np.savez(tmp_path / "prot_a.npz", R=R, F=F, resname=names.astype("U3"),
             species=np.zeros((5, 7), int))  # species is ignored: re-derived from resname
    store, report = _ingest(tmp_path, [tmp_path / "prot_a.npz"], temperature=300.0)
    assert report.written == ["prot_a"]
    ds = store.protein("prot_a")
    assert ds.R.values.tobytes() == R.tobytes()
    np.testing.assert_array_equal(ds.F.values, F.astype(np.float32))
    np.testing.assert_array_equal(ds.resid.values, np.arange(1, 8))
    expected = [protstore.vocab.SPECIES_ID[protstore.vocab.canonical_resname(n)] for n in names]
    np.testing.assert_array_equal(ds.species.values, expected)
    assert set(ds.temperature.values) == {300.0}


def test_id_option_names_the_protein(tmp_path):
    rng = np.random.default_rng(1)
    R, F, names = _protein(rng, 5, 3)
    np.savez(tmp_path / "x.npz", R=R, F=F, resname=names.astype("U3"))
    store, _ = _ingest(tmp_path, [tmp_path / "x.npz"], protein_id="my-prot")
    assert store.proteins == ["my-prot"]
    doc = store.protein_doc("my-prot")
    assert doc["temperatures"] == [None]  # unknown temperature is recorded as such


def test_pickled_npz_needs_explicit_flag(tmp_path):
    rng = np.random.default_rng(2)
    R, F, names = _protein(rng, 5, 3)
    np.savez(tmp_path / "p.npz", R=R, F=F, resname=names.astype("U3"),
             aa_to_id=np.array({"ALA": 0}, dtype=object))
    with pytest.raises(PickleRefusedError, match="aa_to_id.*--allow-pickle"):
        open_npz(tmp_path / "p.npz")
    _, report = _ingest(tmp_path, [tmp_path / "p.npz"])
    assert "pickled" in next(iter(report.failed.values()))
    store, report = _ingest(tmp_path, [tmp_path / "p.npz"], allow_pickle=True)
    assert report.written == ["p"]


def test_missing_keys_and_shapes(tmp_path):
    np.savez(tmp_path / "a.npz", R=np.zeros((2, 3, 3), np.float32))
    np.savez(tmp_path / "b.npz", R=np.zeros((2, 3, 3), np.float32),
             F=np.zeros((3, 3, 3), np.float32), resname=np.array(["ALA"] * 3))
    np.savez(tmp_path / "c.npz", R=np.zeros((2, 3), np.float32),
             F=np.zeros((2, 3), np.float32), resname=np.array(["ALA"] * 3))
    _, report = _ingest(tmp_path, [tmp_path / f"{k}.npz" for k in "abc"])
    a, b, c = report.failed.values()
    assert "a.npz" in a and "missing required key(s) F, resname" in a
    assert "R/F frame-count mismatch" in b
    assert "expected (frames, atoms, 3)" in c


def test_combined_padded_file_splits_back_into_the_originals(tmp_path):
    rng = np.random.default_rng(3)
    proteins = [_protein(rng, n, t) for n, t in ((6, 4), (9, 3), (4, 5))]
    n_max = 9
    rows = sum(p[0].shape[0] for p in proteins)
    R = np.zeros((rows, n_max, 3), np.float32)
    F = np.zeros((rows, n_max, 3), np.float32)
    mask = np.zeros((rows, n_max), np.float32)
    resname = np.full((rows, n_max), "PAD", dtype=object)
    resid = np.full((rows, n_max), -1, np.int32)
    n_atoms = np.zeros(rows, np.int32)
    pid = np.zeros(rows, np.int32)
    r = 0
    for k, (Rp, Fp, names) in enumerate(proteins):
        t, n = Rp.shape[:2]
        R[r:r + t, :n], F[r:r + t, :n], mask[r:r + t, :n] = Rp, Fp, 1
        resname[r:r + t, :n] = names
        resid[r:r + t, :n] = np.arange(1, n + 1)
        n_atoms[r:r + t], pid[r:r + t] = n, k
        r += t
    paths = np.array(["/old/p_one.npz", "/old/p_two.npz", "/old/p_three.npz"], dtype=object)
    np.savez(tmp_path / "bucket_N0009.npz", R=R, F=F, mask=mask, resname=resname, resid=resid,
             n_atoms=n_atoms, protein_id=pid, paths=paths, N_max=np.array([n_max]))
    store, report = _ingest(tmp_path, [tmp_path / "bucket_N0009.npz"], allow_pickle=True)
    assert sorted(report.written) == ["p_one", "p_three", "p_two"]
    for name, (Rp, Fp, names) in zip(["p_one", "p_two", "p_three"], proteins):
        ds = store.protein(name)
        assert ds.R.values.tobytes() == Rp.tobytes()
        np.testing.assert_array_equal(ds.F.values, Fp.astype(np.float32))
        assert ds.sizes["atom"] == Rp.shape[1]
        assert store.protein_doc(name)["sources"][0]["format"] == "npz-combined"


def test_combined_mask_disagreeing_with_n_atoms(tmp_path):
    R = np.zeros((2, 4, 3), np.float32)
    R[..., 0] = 3.8 * np.arange(4)
    mask = np.ones((2, 4), np.float32)
    np.savez(tmp_path / "comb.npz", R=R, F=np.ones_like(R), mask=mask,
             resname=np.array(["ALA"] * 4), n_atoms=np.array([3, 3]),
             protein_id=np.array([0, 0]))
    _, report = _ingest(tmp_path, [tmp_path / "comb.npz"])
    (msg,) = report.failed.values()
    assert "mask disagrees with n_atoms=3 at frame 0" in msg and "comb.npz" in msg


def test_a_zip_bomb_is_refused_before_it_is_expanded(tmp_path):
    """64 MiB of zeros compress ~1000x: refused from the zip entry, nothing decompressed."""
    import tracemalloc


    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, R=np.zeros((2000, 2800, 3), np.float32),
                        F=np.zeros((2000, 2800, 3), np.float32), resname=np.array(["ALA"] * 2800))
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    with pytest.raises(InputError, match=r"bomb.npz: member 'R.npy' expands .* zip bomb"):
        open_npz(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20


def test_shapes_are_checked_from_the_headers_before_reading(tmp_path):

    path = tmp_path / "flat.npz"
    np.savez(path, R=np.zeros((4, 9), np.float32), F=np.zeros((4, 3, 3), np.float32),
             resname=np.array(["ALA"] * 3))
    with pytest.raises(InputError, match=r"flat.npz: R has shape \(4, 9\), expected"):
        open_npz(path)
