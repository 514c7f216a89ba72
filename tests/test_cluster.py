"""Ingest on a dask.distributed cluster (a LocalCluster of 2 processes): the same store as a
serial ingest, bit for bit, also when a worker is killed midway."""

from __future__ import annotations

import os
import signal

import pytest

import protstore
from protstore.cli import main
from protstore.ingest import ingest
from protstore.store.verify import verify_store

from helpers import write_mdcath

pytestmark = pytest.mark.slow  # a dask cluster of processes


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=40) as cl, Client(cl) as client:
        yield cl, client


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster-src")
    paths = []
    for i in range(6):
        names = ("MET", "ALA", "GLY", "LYS", "PRO", "SER")[: 3 + i % 4]
        write_mdcath(tmp / f"d{i}.h5", domain=f"dom{i}", resnames=names, frames=60, seed=i,
                     runs=((320, 0), (348, 0)))
        paths.append(str(tmp / f"d{i}.h5"))
    return paths


def _same_stores(a, b) -> None:
    sa, sb = protstore.open_store(a), protstore.open_store(b)
    assert sa.proteins == sb.proteins
    for pid in sa.proteins:
        assert sa.protein_doc(pid) == sb.protein_doc(pid)
        assert sa.protein(pid).load().identical(sb.protein(pid).load())
        for name in ("R", "F"):  # the chunk files themselves, byte for byte
            da, db = a / "proteins" / pid / name, b / "proteins" / pid / name
            files = sorted(p.relative_to(da) for p in da.rglob("*") if p.is_file())
            assert files == sorted(p.relative_to(db) for p in db.rglob("*") if p.is_file())
            assert all((da / f).read_bytes() == (db / f).read_bytes() for f in files)


def test_a_cluster_ingest_equals_a_serial_one(tmp_path, cluster, files, capsys):
    _, client = cluster
    serial = tmp_path / "serial.zarr"
    ingest(files, protstore.open_store(serial, mode="a"), progress=False, log=lambda m: None)
    store = tmp_path / "cluster.zarr"
    assert main(["ingest", *files, "--store", str(store), "--scheduler",
                 client.scheduler.address, "--no-progress"]) == 0
    assert "ingest: 6 written" in capsys.readouterr().out
    _same_stores(store, serial)
    assert verify_store(protstore.open_store(store)) == []
    # a re-run is a no-op
    again = ingest(files, protstore.open_store(store, mode="a"), progress=False,
                   log=lambda m: None, client=client)
    assert again.skipped == [f"dom{i}" for i in range(6)] and again.ok


def test_a_worker_killed_midway_leaves_a_valid_store_that_a_rerun_completes(
        tmp_path, cluster, files):
    _, client = cluster
    serial = tmp_path / "serial.zarr"
    ingest(files, protstore.open_store(serial, mode="a"), progress=False, log=lambda m: None)
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    futures = client.map(protstore.ingest.cluster.ingest_file_task, files, url=store.url,
                         storage_options=None, options=protstore.ingest.IngestOptions(),
                         pure=False)
    victim = next(iter(client.run(os.getpid).values()))
    os.kill(victim, signal.SIGKILL)  # a worker dies, perhaps in the middle of a protein
    for future in futures:
        try:
            future.result()
        except Exception:  # noqa: BLE001 - a task may fail with its worker
            pass
    assert [f for f in verify_store(protstore.open_store(tmp_path / "s.zarr"))
            if f.level == "error"] == []
    report = ingest(files, protstore.open_store(tmp_path / "s.zarr", mode="a"),
                    progress=False, log=lambda m: None, client=client)
    assert report.ok and sorted(report.written + report.skipped) == [f"dom{i}" for i in range(6)]
    _same_stores(tmp_path / "s.zarr", serial)
    assert verify_store(protstore.open_store(tmp_path / "s.zarr")) == []


def test_a_cluster_without_workers_stops_with_one_line_and_a_rerun_resumes(tmp_path, files):
    from distributed import Client, LocalCluster

    from protstore.errors import ClusterError
    from protstore.ingest.cluster import ingest_on_cluster

    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None,
                      worker_dashboard_address=None, silence_logs=40) as cl, Client(cl) as client:
        with pytest.raises(ClusterError, match=r"no dask worker alive for 1.5 s; 0 of 6 files "
                                               r"done .* run the same command again"):
            ingest_on_cluster(files, store, protstore.ingest.IngestOptions(), client,
                              progress=False, no_worker_s=1.5)
        cl.scale(1)  # workers again: the same call completes
        client.wait_for_workers(1, timeout=30)
        report = ingest_on_cluster(files, store, protstore.ingest.IngestOptions(), client,
                                   progress=False, no_worker_s=1.5)
    assert report.ok and sorted(report.written) == [f"dom{i}" for i in range(6)]
    assert verify_store(protstore.open_store(tmp_path / "s.zarr")) == []
