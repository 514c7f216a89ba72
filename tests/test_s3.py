"""Stores on S3-compatible object storage (a moto server on 127.0.0.1, started by the tests):
the same commands, the same bits as a local store, commits without rename, locks or pids."""

from __future__ import annotations

import time

import numpy as np
import pytest
import xarray as xr

import protstore
from protstore.batching import BatchLoader, LoaderConfig
from protstore.cli import main
from protstore.errors import ClaimError
from protstore.ingest import ingest
from protstore.store import claims
from protstore.location import Location
from protstore.store.verify import verify_store

from helpers import write_mdcath

pytestmark = pytest.mark.slow  # an S3 server and processes


def _quiet(*a, **k):
    return None


@pytest.fixture
def sources(tmp_path):
    paths = []
    for i, (name, n) in enumerate((("aa1", ("MET", "ALA", "GLY", "LYS", "PRO", "ALA")),
                                   ("bb2", ("ALA", "GLY", "LYS")))):
        write_mdcath(tmp_path / f"{name}.h5", domain=name, resnames=n, frames=8, seed=i)
        paths.append(str(tmp_path / f"{name}.h5"))
    return paths


def test_the_commands_on_s3_give_the_bits_of_a_local_store(tmp_path, s3_bucket, sources, capsys):
    url, local = f"{s3_bucket}/s.zarr", str(tmp_path / "local.zarr")
    for store in (url, local):
        assert main(["ingest", *sources, "--store", store, "--no-progress"]) == 0
        assert main(["bucket", store, "--n-buckets", "1", "--split", "frame"]) == 0
        assert main(["info", store]) == 0
        assert main(["validate", store, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "validate: 2 proteins checked, 0 error(s), 0 warning(s)" in out
    remote, here = protstore.open_store(url), protstore.open_store(local)
    assert remote.proteins == here.proteins == ["aa1", "bb2"]
    for pid in here.proteins:
        assert remote.protein(pid).load().identical(here.protein(pid).load())
        # plain xarray, no protstore: the same group, the same values; the protein's own
        # zarr.json lists its arrays (the root lists nothing, so group= warns and reads on)
        plain = xr.open_zarr(f"{url}/proteins/{pid}").load()
        assert plain.identical(xr.open_zarr(f"{local}/proteins/{pid}").load())
        with pytest.warns(RuntimeWarning, match="consolidated"):
            assert xr.open_zarr(url, group=f"proteins/{pid}").load().identical(plain)
    batches = [[b for b in BatchLoader(s, s.plan("default"), LoaderConfig(batch_size=4, seed=3))
                .epoch(0)] for s in (remote, here)]
    assert len(batches[0]) == len(batches[1]) > 0
    for a, b in zip(*batches):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_reingest_overwrite_and_a_dead_writers_leftovers_on_s3(tmp_path, s3_bucket, sources):
    url = f"{s3_bucket}/s.zarr"
    store = protstore.open_store(url, mode="a")
    report = ingest(sources, store, progress=False, log=_quiet)
    assert report.written == ["aa1", "bb2"]
    assert ingest(sources, store, progress=False, log=_quiet).skipped == ["aa1", "bb2"]
    v1 = protstore.open_store(url).version
    before = protstore.open_store(url).protein("aa1", chunks=None).R.values
    write_mdcath(tmp_path / "aa1_new.h5", domain="aa1", frames=3, seed=9)
    report = ingest([tmp_path / "aa1_new.h5"], store,
                    protstore.ingest.IngestOptions(overwrite=True), progress=False, log=_quiet)
    assert report.replaced == ["aa1"]
    fresh = protstore.open_store(url)
    assert fresh.protein_doc("aa1")["n_frames"] == 9 and fresh.protein("aa1").sizes["frame"] == 9
    old = protstore.open_store(url, version=v1)  # the old version's data, kept aside
    assert old.group_path("aa1").startswith("generations/aa1@")
    assert old.protein("aa1", chunks=None).R.values.tobytes() == before.tobytes()
    # a writer that died mid-write: its claim expires, its staging prefix is left behind
    writer = store.writer("cc3", max_frames=4, resname=["ALA"] * 3, species=[1, 1, 1],
                          resid=[1, 2, 3], chain=["A"] * 3)
    writer.claim.lease_s = 0.0
    writer.claim.renew(force=True)
    time.sleep(0.01)
    assert "cc3" not in protstore.open_store(url)  # never visible before its commit
    assert [f.level for f in verify_store(protstore.open_store(url))] == ["warning"]
    lines = protstore.open_store(url, mode="r+").recover_staging()
    assert len(lines) == 1 and "removed unfinished staging group" in lines[0]
    assert verify_store(protstore.open_store(url)) == []
    # gc on S3: the old generation goes, the kept version reads as before, v1 is no more
    import fsspec

    from protstore.store.versions import collect_garbage
    fs = fsspec.filesystem("s3")
    old_gen = f"{url}/{old.group_path('aa1')}"
    assert fs.exists(f"{old_gen}/zarr.json")
    store = protstore.open_store(url, mode="r+")
    assert collect_garbage(store, keep=1)[0].startswith("gc: would remove")  # a dry run
    assert fs.exists(f"{old_gen}/zarr.json")
    assert main(["gc", url, "--keep", "1", "--yes"]) == 0
    fs.invalidate_cache()
    assert not fs.exists(f"{old_gen}/zarr.json") and fs.find(old_gen) == []
    with pytest.raises(protstore.errors.StoreError, match="no store version"):
        protstore.open_store(url, version=v1)
    assert protstore.open_store(url).protein("aa1", chunks=None).sizes["frame"] == 9
    assert verify_store(protstore.open_store(url)) == []


def test_a_live_claim_keeps_other_writers_out_and_an_expired_one_is_taken_over(s3_bucket):
    loc = Location(f"{s3_bucket}/s.zarr")
    first = claims.claim(loc, "p1", lease_s=60)
    with pytest.raises(ClaimError, match="being written by another writer"):
        claims.claim(loc, "p1")
    first.lease_s = 0.0
    first.renew(force=True)  # the holder stalls past its lease
    second = claims.claim(loc, "p1", lease_s=60)
    assert second.generation == first.generation + 1
    with pytest.raises(ClaimError, match="expired and another writer took over"):
        first.check_held()  # the stalled writer commits nothing
    second.check_held()
    second._stop.set()
    second._heartbeat.join()
    second._renewed -= 50  # its renewals stopped landing 50 s ago: it may be taken over
    with pytest.raises(ClaimError, match="last renewed 50 s ago"):
        second.check_held()
    second.release()
    assert loc.listdir(".claims/p1") == []


def test_locations_protstore_cannot_use_are_one_line_errors(s3_bucket, capsys, sources):
    assert main(["info", "nosuchproto://x/y"]) == 1
    assert main(["ingest", *sources, "--store", "s3://no-such-bucket-here/s.zarr",
                 "--no-progress"]) == 1
    assert main(["info", f"{s3_bucket}/s.zarr", "--storage-options", "[1]"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("protstore: error: ") for line in err)
    assert "nosuchproto://x/y" in err[0] and "no-such-bucket-here" in err[1]
    assert "--storage-options" in err[2]


@pytest.mark.slow
def test_a_run_on_s3_trains_resumes_averages_and_evaluates_as_a_local_one(
        s3_bucket, train_store, tmp_path, capsys):
    import fsspec
    import jax

    from protstore.checkpoints import list_checkpoints, read_checkpoint
    from protstore.train import TrainConfig, train

    store, run = str(train_store.root), f"{s3_bucket}/run"
    # few checkpoints: moto is slow
    config = TrainConfig(epochs=1, learning_rate=3e-3, loader=LoaderConfig(batch_size=16))
    for out in (run, tmp_path / "run"):
        train(train_store, train_store.plan("p"), out, config, progress=False, echo=_quiet)
    same = jax.tree.map(np.array_equal, read_checkpoint(f"{run}/final").params,
                        read_checkpoint(tmp_path / "run" / "final").params)
    assert all(jax.tree.leaves(same))
    assert [a["step"] for _, a in list_checkpoints(run)] == \
        [a["step"] for _, a in list_checkpoints(tmp_path / "run")]
    assert main(["train", store, "--plan", "p", "--resume", run, "--no-progress"]) == 0
    assert "nothing is missing" in capsys.readouterr().out
    assert main(["ema", run, "--out", f"{s3_bucket}/ema", "--decay", "0.9"]) == 0
    assert read_checkpoint(f"{s3_bucket}/ema").attrs["kind"] == "ema"
    assert main(["evaluate", store, "--params", f"{run}/final", "--plan", "p", "--out",
                 f"{s3_bucket}/eval", "--workers", "0", "--n-frames", "4",
                 "--no-progress"]) == 0
    fs = fsspec.filesystem("s3")
    names = {p.rsplit("/", 1)[-1] for p in fs.ls(f"{s3_bucket}/eval", detail=False)}
    assert {"final_per_residue_rmse.png", "final_per_residue_rmse.txt",
            "final_per_residue_metrics.json", "final_per_residue_errors.zarr"} <= names
    errors = xr.open_zarr(f"{s3_bucket}/eval/final_per_residue_errors.zarr")
    assert errors.sizes["sample"] > 0
    assert not (tmp_path / "s3:").exists()


def test_a_heartbeat_keeps_a_short_lease_and_a_dead_writer_is_broken_or_waited_out(s3_bucket):
    loc = Location(f"{s3_bucket}/s.zarr")
    first = claims.claim(loc, "p2", lease_s=0.6)
    time.sleep(1.0)  # past the lease: only the heartbeat keeps it live
    with pytest.raises(ClaimError, match="--break-claim"):
        claims.claim(loc, "p2")
    first._stop.set()  # the writer dies: no more beats
    t0 = time.monotonic()
    waited = claims.claim(loc, "p2", lease_s=60, wait_s=5.0)  # a retry waits out the lease
    assert waited.generation == first.generation + 1 and time.monotonic() - t0 < 5.0
    broken = claims.claim(loc, "p2", lease_s=60, take_over=True)  # the user knows better
    assert broken.generation == waited.generation + 1
    with pytest.raises(ClaimError, match="another writer took over"):
        waited.check_held()
    broken.release()
    waited.release()
    first.release()
    assert loc.listdir(".claims/p2") == []


def test_an_overwrite_interrupted_on_s3_keeps_the_old_copy(tmp_path, s3_bucket, sources,
                                                           monkeypatch):
    url = f"{s3_bucket}/s.zarr"
    store = protstore.open_store(url, mode="a")
    ingest(sources[:1], store, progress=False, log=_quiet)
    before = protstore.open_store(url).protein("aa1").R.values
    write_mdcath(tmp_path / "aa1_new.h5", domain="aa1", frames=3, seed=9)
    publish = Location.publish

    def dies_publishing_the_new_copy(self, dest, each=None):
        if "/.staging/write@" in self.path:
            self.copy("R/zarr.json", dest / "R/zarr.json")  # a torn group (its own zarr.json
            raise KeyboardInterrupt  # comes last), then the kill
        return publish(self, dest, each)

    monkeypatch.setattr(Location, "publish", dies_publishing_the_new_copy)
    with pytest.raises(KeyboardInterrupt):
        ingest([tmp_path / "aa1_new.h5"], store,
               protstore.ingest.IngestOptions(overwrite=True), progress=False, log=_quiet)
    monkeypatch.setattr(Location, "publish", publish)
    for name in protstore.open_store(url).location.listdir(".claims/aa1"):  # the dead writer's
        Location(f"{url}/.claims/aa1").remove(name)
    lines = protstore.open_store(url, mode="r+").recover_staging()
    assert any("restored protein 'aa1' from an interrupted replace" in line for line in lines)
    fresh = protstore.open_store(url)
    assert fresh.protein_doc("aa1")["n_frames"] == before.shape[0] != 9
    np.testing.assert_array_equal(fresh.protein("aa1").R.values, before)
    assert verify_store(fresh) == []


def test_a_broken_claims_heartbeat_never_brings_it_back(s3_bucket):
    """A writer taken over (--break-claim) whose taker commits and releases: its heartbeat stops
    instead of re-creating its claim, and a later claim with a reused generation is not its."""
    loc = Location(f"{s3_bucket}/s.zarr")
    old = claims.claim(loc, "p3", lease_s=0.3)
    new = claims.claim(loc, "p3", lease_s=60, take_over=True)
    new.release()  # removes both generations
    time.sleep(0.5)  # beats of the old writer would have come by now
    assert loc.listdir(".claims/p3") == []
    later = claims.claim(loc, "p3", lease_s=60)  # generation 0 again, another write's
    assert later.generation == old.generation
    with pytest.raises(ClaimError, match="another writer took over"):
        old.check_held()
    later.release()
    old.release()
