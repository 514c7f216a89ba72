import numpy as np
import pytest
import xarray as xr

import protstore
from protstore.errors import InputError
from protstore.ingest import IngestOptions, ingest
from protstore.ingest.source import file_checksum

from helpers import write_mdcath


def _ingest(tmp_path, files, **opts):
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    report = ingest(files, store, IngestOptions(**opts), progress=False, log=lambda m: None)
    return protstore.open_store(tmp_path / "s.zarr"), report


@pytest.fixture(params=[None, 1, 4, 0.5],
                ids=["one-piece", "1-frame-pieces", "4-frame-pieces", "pieces-under-a-frame"])
def piece_frames(request, monkeypatch):
    """Frames read, hashed, checked and mapped at a time (toy frames: 5 residues x 4 atoms)."""
    if request.param is not None:
        monkeypatch.setattr("protstore.ingest.mdcath.PIECE_BYTES",
                            int(request.param * 20 * 3 * 4))
    return request.param


def test_ca_positions_and_summed_forces_bit_exact(tmp_path, piece_frames):
    truth = write_mdcath(tmp_path / "toy.h5")
    # blocks of 5 frames: pieces of 4 frames end inside a block and a block inside a run
    store, report = _ingest(tmp_path, [tmp_path / "toy.h5"], block_bytes=5 * 20 * 3 * 8)
    assert report.written == ["toy1"] and report.ok
    ds = store.protein("toy1").load()
    for (temp, rep), ca in truth["ca"].items():
        sel = (ds.temperature == temp) & (ds.replica == rep)
        R = ds.R.values[sel.values]
        F = ds.F.values[sel.values]
        assert R.dtype == np.float32 and R.tobytes() == ca.tobytes()  # bit-exact round trip
        assert F.tobytes() == truth["force"][(temp, rep)].tobytes()
        np.testing.assert_array_equal(ds.source_frame.values[sel.values], np.arange(6))
    assert list(ds.resname.values) == ["MET", "HIS", "ALA", "GLY", "LYS"]
    assert list(ds.species.values) == [12, 8, 0, 7, 11]
    assert ds.R.dims == ("frame", "atom", "xyz") and ds.R.attrs["units"] == "angstrom"
    doc = ds.prot.doc
    assert doc["n_frames"] == 18 and doc["temperatures"] == [320.0, 348.0]
    assert doc["sources"][0]["checksum"] == file_checksum(tmp_path / "toy.h5")
    assert ds.attrs["n_frames"] == 18 and ds.attrs["protein_id"] == "toy1"
    # netCDF-safe: the whole protein round-trips through a netCDF file
    ds.to_netcdf(tmp_path / "toy.nc")
    back = xr.open_dataset(tmp_path / "toy.nc").load()
    assert back.R.values.tobytes() == ds.R.values.tobytes()
    assert list(back.resname.values) == list(ds.resname.values)
    assert back.prot.doc == doc
    # and a plain xr.open_zarr of the group gives the same document
    assert xr.open_zarr(tmp_path / "s.zarr" / "proteins" / "toy1").prot.doc == doc


def test_store_opens_with_plain_xarray_and_is_lazy(tmp_path):
    write_mdcath(tmp_path / "toy.h5")
    store, _ = _ingest(tmp_path, [tmp_path / "toy.h5"])
    ds = xr.open_zarr(tmp_path / "s.zarr" / "proteins" / "toy1")
    assert ds.R.shape == (18, 5, 3)
    assert "resname" in ds.coords and "temperature" in ds.coords
    lazy = store.protein("toy1")
    assert lazy.R.chunks is not None  # dask-backed: nothing read yet


def test_temperature_and_replica_selection(tmp_path):
    write_mdcath(tmp_path / "toy.h5")
    store, _ = _ingest(tmp_path, [tmp_path / "toy.h5"], temperatures=(320,), replicas=(1,))
    ds = store.protein("toy1")
    assert set(ds.temperature.values) == {320.0} and set(ds.replica.values) == {1}
    assert ds.sizes["frame"] == 6


def test_every_group_that_is_not_read_is_reported_with_the_reason(tmp_path):
    import h5py

    write_mdcath(tmp_path / "toy.h5")
    with h5py.File(tmp_path / "toy.h5", "a") as fh:
        fh["toy1"].create_group("320K")  # a temperature with a unit in its name
        fh["toy1/320"].create_group("best")
    lines = []
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    ingest([tmp_path / "toy.h5"], store, IngestOptions(temperatures=(320,)), progress=False,
           log=lines.append)
    (line,) = [m for m in lines if "not read" in m]
    assert line.startswith("toy1: not read from ") and "toy.h5" in line
    assert "320K: group name is not a temperature (an integer)" in line
    assert "320/best: group name is not a replica (an integer)" in line
    assert "348: temperature not selected" in line
    # nothing selected at all: the error says what was there
    report = ingest([tmp_path / "toy.h5"], protstore.open_store(tmp_path / "t.zarr", mode="a"),
                    IngestOptions(temperatures=(400,)), progress=False, log=lambda m: None)
    (why,) = report.failed.values()
    assert "no temperature/replica runs selected" in why
    assert "not read: 320K: group name is not a temperature" in why
    assert "320: temperature not selected; 348: temperature not selected" in why


def test_bad_frames_are_excluded_and_recorded(tmp_path, piece_frames):
    corrupt = {(320, 0, 1): "nan", (320, 1, 5): "overflow", (348, 0, 0): "zero",
               (348, 0, 3): "stretch"}
    write_mdcath(tmp_path / "toy.h5", corrupt=corrupt)
    logs = []
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    report = ingest([tmp_path / "toy.h5"], store, progress=False, log=logs.append)
    assert report.excluded == {"toy1": 4}
    doc = protstore.open_store(tmp_path / "s.zarr").protein_doc("toy1")
    got = {(e["temperature"], e["replica"], e["source_frame"]): e["reason"]
           for e in doc["excluded_frames"]}
    assert got.keys() == {(320.0, 0, 1), (320.0, 1, 5), (348.0, 0, 0), (348.0, 0, 3)}
    assert "non-finite forces" in got[(320.0, 0, 1)]
    assert "exceeds" in got[(320.0, 1, 5)]
    assert "all-zero" in got[(348.0, 0, 0)]
    assert "CA-CA distance" in got[(348.0, 0, 3)]
    assert doc["n_frames"] == 14
    assert any("excluded 4 frame" in line for line in logs)
    ds = protstore.open_store(tmp_path / "s.zarr").protein("toy1")
    kept = set(zip(ds.temperature.values.tolist(), ds.replica.values.tolist(),
                   ds.source_frame.values.tolist()))
    assert not kept & got.keys() and len(kept) == 14  # nothing dropped silently


def test_strict_fails_the_protein_and_keeps_the_others(tmp_path):
    write_mdcath(tmp_path / "bad.h5", domain="bad1", corrupt={(320, 0, 2): "nan"})
    write_mdcath(tmp_path / "good.h5", domain="good1")
    store, report = _ingest(tmp_path, [tmp_path / "bad.h5", tmp_path / "good.h5"], strict=True)
    assert not report.ok and report.written == ["good1"]
    (msg,) = report.failed.values()
    assert "bad1" in msg and "frame 2" in msg and "--strict" in msg
    assert store.proteins == ["good1"]
    assert not list((tmp_path / "s.zarr" / ".staging").iterdir())


def test_frame_count_mismatch(tmp_path):
    write_mdcath(tmp_path / "toy.h5", forces_frames=4)
    _, report = _ingest(tmp_path, [tmp_path / "toy.h5"])
    (msg,) = report.failed.values()
    assert "R/F frame-count mismatch" in msg and "toy.h5" in msg


def test_wrong_force_units_are_caught(tmp_path):
    # forces really in kJ/mol/nm but labelled kcal/mol/Å: 41.84x too large
    write_mdcath(tmp_path / "toy.h5", force_scale=10.0 * 41.84 * 3)
    _, report = _ingest(tmp_path, [tmp_path / "toy.h5"])
    (msg,) = report.failed.values()
    assert "other units" in msg and "toy1" in msg


def test_declared_units_are_converted(tmp_path):
    truth = write_mdcath(tmp_path / "toy.h5", force_unit="kJ/mol/nm", force_scale=400.0,
                         runs=((320, 0),))
    store, report = _ingest(tmp_path, [tmp_path / "toy.h5"])
    assert report.ok
    F = store.protein("toy1").F.values
    np.testing.assert_allclose(F, truth["force"][(320, 0)] / 41.84, rtol=1e-5)


def test_unknown_residue(tmp_path):
    write_mdcath(tmp_path / "toy.h5", resnames=("MET", "XYZ", "ALA"))
    _, report = _ingest(tmp_path, [tmp_path / "toy.h5"])
    (msg,) = report.failed.values()
    assert "XYZ" in msg and "toy1" in msg
    store, report = _ingest(tmp_path, [tmp_path / "toy.h5"], allow_unknown=True)
    assert list(store.protein("toy1").species.values) == [12, 20, 0]


def test_chain_breaks_are_kept(tmp_path):
    write_mdcath(tmp_path / "toy.h5", resnames=("MET", "ALA", "GLY", "LYS"),
                 chains=["A", "A", "B", "B"], resids=[1, 2, 1, 2])
    store, report = _ingest(tmp_path, [tmp_path / "toy.h5"])
    ds = store.protein("toy1")
    assert list(ds.chain.values) == ["A", "A", "B", "B"]
    assert list(ds.resid.values) == [1, 2, 1, 2]
    assert store.protein_doc("toy1")["n_chains"] == 2


def test_reingest_is_idempotent_and_overwrite_replaces(tmp_path):
    write_mdcath(tmp_path / "toy.h5")
    _, r1 = _ingest(tmp_path, [tmp_path / "toy.h5"])
    _, r2 = _ingest(tmp_path, [tmp_path / "toy.h5"])
    assert r1.written == ["toy1"] and r2.skipped == ["toy1"]
    write_mdcath(tmp_path / "toy.h5", seed=5, runs=((320, 0),))  # same id, new content
    _, r3 = _ingest(tmp_path, [tmp_path / "toy.h5"])
    (msg,) = r3.failed.values()
    assert "already in" in msg and "--overwrite" in msg
    store, r4 = _ingest(tmp_path, [tmp_path / "toy.h5"], overwrite=True)
    assert r4.replaced == ["toy1"] and store.protein("toy1").sizes["frame"] == 6


def test_reingest_recognises_sha256_checksums_of_older_stores(tmp_path):
    import zarr
    write_mdcath(tmp_path / "toy.h5")
    _ingest(tmp_path, [tmp_path / "toy.h5"])
    group = zarr.open_group(tmp_path / "s.zarr", path="proteins/toy1", mode="r+")
    doc = group.attrs["protstore_protein"]
    doc["sources"][0]["checksum"] = file_checksum(tmp_path / "toy.h5", "sha256")
    group.attrs["protstore_protein"] = doc  # as protstore 0.1 recorded it
    _, again = _ingest(tmp_path, [tmp_path / "toy.h5"])
    assert again.skipped == ["toy1"]
    write_mdcath(tmp_path / "toy.h5", seed=5)  # other content: still refused
    _, other = _ingest(tmp_path, [tmp_path / "toy.h5"])
    assert "already in" in next(iter(other.failed.values()))


def test_missing_file_and_non_hdf5(tmp_path):
    (tmp_path / "junk.h5").write_text("not hdf5")
    _, report = _ingest(tmp_path, [tmp_path / "missing.h5", tmp_path / "junk.h5"])
    msgs = list(report.failed.values())
    assert "no such file" in msgs[0] and "not a readable HDF5" in msgs[1]


def test_demo_dataset_ingests_and_validates(tmp_path, demo_files):
    store, report = _ingest(tmp_path, demo_files)
    assert report.ok and len(report.written) == 3
    assert report.excluded == {store.proteins[0]: 2}  # the demo's corrupt tail
    from protstore.store.verify import verify_store
    assert verify_store(store) == []
    two_chain = store.protein(store.proteins[1])
    assert len(set(two_chain.chain.values.tolist())) == 2
    with pytest.raises(protstore.ProtstoreError, match="no protein"):
        store.protein("nope")
    assert isinstance(InputError("x"), protstore.ProtstoreError)


def test_a_block_of_only_bad_frames(tmp_path):
    corrupt = {(320, 0, k): "zero" for k in range(6)}
    write_mdcath(tmp_path / "toy.h5", corrupt=corrupt, runs=((320, 0), (320, 1)))
    store, report = _ingest(tmp_path, [tmp_path / "toy.h5"])
    assert report.excluded == {"toy1": 6} and store.protein("toy1").sizes["frame"] == 6
    write_mdcath(tmp_path / "all.h5", domain="all1", corrupt=corrupt, runs=((320, 0),))
    _, report = _ingest(tmp_path, [tmp_path / "all.h5"])
    (msg,) = report.failed.values()
    assert "all 6 frames failed validation (most common: all-zero coordinates)" in msg


def test_frame_reader_reads_plain_datasets_from_the_file_and_others_through_h5py(tmp_path):
    import h5py

    from protstore.ingest.mdcath import DatasetPlace, FrameReader

    data = np.random.default_rng(0).normal(size=(9, 4, 3)).astype(np.float32)
    with h5py.File(tmp_path / "f.h5", "w") as fh:
        fh["plain"] = data
        fh["big_endian"] = data.astype(">f4")
        fh.create_dataset("chunked", data=data, chunks=(2, 4, 3))
        fh.create_dataset("gzip", data=data, compression="gzip")
        fh.create_dataset("unwritten", shape=data.shape, dtype="f4")
    with h5py.File(tmp_path / "f.h5") as fh, open(tmp_path / "f.h5", "rb") as raw:
        readers = {name: FrameReader(DatasetPlace.of(fh[name]), raw.fileno(), name, h5file=fh)
                   for name in fh}
        assert {n for n, r in readers.items() if r.offset is not None} == {"plain", "big_endian"}
        for name in ("plain", "big_endian", "chunked", "gzip"):
            np.testing.assert_array_equal(readers[name].read(2, 7), data[2:7])
        assert (readers["unwritten"].read(0, 9) == 0).all()
        size = (tmp_path / "f.h5").stat().st_size
    with open(tmp_path / "f.h5", "r+b") as fh:  # the file loses its end after being opened
        fh.truncate(readers["plain"].offset + 3 * readers["plain"].frame_bytes)
    with open(tmp_path / "f.h5", "rb") as raw:
        reader = readers["plain"]
        reader.fd = raw.fileno()
        np.testing.assert_array_equal(reader.read(0, 3), data[:3])
        with pytest.raises(InputError, match=r"plain: the file ends inside frames 2-5"):
            reader.read(2, 6)
    assert size > (tmp_path / "f.h5").stat().st_size


def test_residue_force_sums_are_the_float64_sums():
    from protstore.ingest import cgmap

    rng = np.random.default_rng(1)
    starts = np.array([0, 3, 4, 11, 12, 20])  # residues of 3, 1, 7, 1, 8 and 2 atoms
    forces = rng.normal(scale=30, size=(300, 22, 3)).astype(np.float32)
    forces[:, 12:20] *= np.logspace(-6, 3, 8, dtype=np.float32)[:, None]  # float32 sums differ
    expect = np.add.reduceat(forces.astype(np.float64), starts, axis=1).astype(np.float32)
    naive = np.add.reduceat(forces, starts, axis=1)
    assert naive.tobytes() != expect.tobytes()
    got = cgmap.residue_force_sums(forces, starts)
    assert got.dtype == np.float32 and got.tobytes() == expect.tobytes()
    big_endian = cgmap.residue_force_sums(forces.astype(">f4"), starts.astype(np.int32))
    assert big_endian.tobytes() == expect.tobytes()
    half = (forces / 1024).astype(np.float16)
    expect_half = np.add.reduceat(half.astype(np.float64), starts, axis=1).astype(np.float32)
    assert cgmap.residue_force_sums(half, starts).tobytes() == expect_half.tobytes()
    out = np.zeros((310, 6, 3), np.float32)
    cgmap.residue_force_sums(forces[::2], starts, out=out[5:155])  # strided in, view out
    assert out[5:155].tobytes() == expect[::2].tobytes() and not out[:5].any()


def test_stream_checksum_is_the_file_checksum_when_reads_come_in_order(tmp_path):
    import hashlib

    import xxhash

    from protstore.ingest.source import StreamChecksum

    data = np.random.default_rng(0).bytes(3 << 20)
    (tmp_path / "f").write_bytes(data)
    with open(tmp_path / "f", "rb") as fh:
        in_order = StreamChecksum(fh.fileno())
        for lo, hi in [(100, 5000), (5000, 9000), (1 << 20, 2 << 20)]:  # gaps are read by it
            in_order.update(lo, memoryview(data)[lo:hi])
        assert in_order.finish() == file_checksum(tmp_path / "f") == \
            f"xxh3_128:{xxhash.xxh3_128(data).hexdigest()}"
        backwards = StreamChecksum(fh.fileno())
        backwards.update(5000, memoryview(data)[5000:9000])
        backwards.update(100, memoryview(data)[100:5000])
        assert backwards.finish() is None
    sha = file_checksum(tmp_path / "f", "sha256")
    assert sha == f"sha256:{hashlib.sha256(data).hexdigest()}"


def test_checksum_of_a_file_not_read_in_order_is_computed_on_its_own(tmp_path):
    import h5py

    truth = write_mdcath(tmp_path / "toy.h5")
    with h5py.File(tmp_path / "toy.h5", "r+") as fh:  # chunked forces: read through h5py
        for run in ("320/0", "320/1", "348/0"):
            forces = fh[f"toy1/{run}/forces"][()]
            del fh[f"toy1/{run}/forces"]
            fh[f"toy1/{run}"].create_dataset("forces", data=forces, chunks=(2, 20, 3))
    store, report = _ingest(tmp_path, [tmp_path / "toy.h5"])
    assert report.written == ["toy1"]
    doc = store.protein_doc("toy1")
    assert doc["sources"][0]["checksum"] == file_checksum(tmp_path / "toy.h5")
    ds = store.protein("toy1").load()  # coordinates read in pieces, forces through h5py
    for (temp, rep), ca in truth["ca"].items():
        sel = ((ds.temperature == temp) & (ds.replica == rep)).values
        assert ds.R.values[sel].tobytes() == ca.tobytes()
        assert ds.F.values[sel].tobytes() == truth["force"][(temp, rep)].tobytes()


def test_bead_checks_flag_huge_forces_and_stretched_bonds_only():
    from protstore.ingest.validate import FrameChecks, bead_problems, bonded_to_next

    R = np.zeros((3, 4, 3), np.float32)
    R[:, :, 0] = 3.8 * np.arange(4)
    R[2, 3, 0] += 3.0  # 6.8 Å to the bead before
    F = np.ones((3, 4, 3), np.float32)
    F[1, 2, 1] = -2e4  # beyond max_abs_force (1e4 kcal/mol/Å)
    resid = np.array([1, 2, 3, 4])
    got = bead_problems(R, F, bonded_to_next(np.zeros(4), resid), FrameChecks(), resid)
    assert got[0] is None
    assert got[1] == "|force| 2e+04 kcal/mol/Å exceeds 10000"
    assert got[2].startswith("CA-CA distance 6.80 Å between residues 3 and 4")
