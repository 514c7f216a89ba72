"""Shared fixtures: small data sets written by the tests themselves."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

# One persistent XLA compilation cache for the session, this process and the ones it starts
# (CLI subprocesses, training processes): a program compiled once is not compiled again.
_JAX_CACHE = None if "JAX_COMPILATION_CACHE_DIR" in os.environ else tempfile.mkdtemp(
    prefix="protstore-test-jax-")
if _JAX_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _JAX_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")

import pytest  # noqa: E402

from protstore.demo import DemoConfig, make_demo_dataset  # noqa: E402

# fixtures that train: every test using one is in the slow tier (`make test-fast` leaves it out)
TRAINING_FIXTURES = {"trained_run"}


def pytest_unconfigure(config):
    if _JAX_CACHE:
        shutil.rmtree(_JAX_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)

@pytest.fixture
def frame_chunk_reads(monkeypatch) -> list:
    """(array path, chunk index) of every R or F chunk read while the test runs."""
    from protstore.store.chunks import ChunkReader

    reads = []
    original = ChunkReader.read

    def counting_read(self, c):
        if self.meta.basename in ("R", "F"):
            reads.append((self.meta.path, c))
        return original(self, c)

    monkeypatch.setattr(ChunkReader, "read", counting_read)
    return reads


def _built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(path)`` once per test session, shared read-only by the pytest-xdist workers
    (which would otherwise each pay for the same simulation)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's directory, above every worker's own
    path, done = root / name, root / f"{name}.done"
    with FileLock(f"{path}.lock"):
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)
            build(path)
            done.touch()
    return path


def _own_copy(tmp_path_factory, shared: Path, name: str) -> Path:
    """A copy of a shared store that this worker's tests may change (they add plans)."""
    path = tmp_path_factory.mktemp(name) / shared.name
    shutil.copytree(shared, path, symlinks=True)
    return path


def _write_demo_files(out: Path) -> None:
    config = DemoConfig(lengths=(12, 21, 33), two_chain=(1,), temperatures=(320, 348),
                        replicas=1, frames=10, stride=10, equilibration=100,
                        predecessor_length=0, seed=1)
    make_demo_dataset(out, config, progress=False)


def _write_train_store(out: Path) -> None:
    import protstore
    from protstore.batching import plan_from_store, save_plan
    from protstore.ingest import ingest

    config = DemoConfig(lengths=(16, 30, 45), two_chain=(1,), temperatures=(320, 348),
                        replicas=1, frames=40, corrupt=False, predecessor_length=0, seed=3)
    files = make_demo_dataset(out / "data", config, progress=False)
    store = protstore.open_store(out / "store.zarr", mode="a")
    ingest(files, store, progress=False, log=lambda m: None)
    plan = plan_from_store(store, name="p", strategy="optimal", n_buckets=2, split="frame",
                           val_fraction=0.25, seed=0)
    save_plan(store, plan)


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory) -> list[Path]:
    """A tiny demo data set (3 proteins, one two-chain, one with corrupt frames): read-only."""
    out = _built_once(tmp_path_factory, "demo-data", _write_demo_files)
    return sorted(out.glob("mdcath_dataset_*.h5"))


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory, demo_files):
    """The tiny demo data set ingested into a store (tests may add plans to it)."""
    import protstore
    from protstore.ingest import ingest

    def build(path):
        ingest(demo_files, protstore.open_store(path, mode="a"), progress=False,
               log=lambda m: None)

    shared = _built_once(tmp_path_factory, "demo.zarr", build)
    return protstore.open_store(_own_copy(tmp_path_factory, shared, "store"), mode="a")


@pytest.fixture(scope="session")
def train_store(tmp_path_factory):
    """A small demo store for training: 3 proteins (one two-chain), 80 frames each, with a
    2-bucket plan 'p' holding out 25% of every protein's frames."""
    import protstore

    shared = _built_once(tmp_path_factory, "train-data", _write_train_store) / "store.zarr"
    return protstore.open_store(_own_copy(tmp_path_factory, shared, "train-store"))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, train_store):
    """A short interleaved run on ``train_store`` (3 epochs, extra checkpoints every 5 steps),
    trained once per test session and copied into each pytest-xdist worker (tests may add to
    its directory)."""
    import dataclasses

    from protstore.train import TrainResult

    shared = _built_once(tmp_path_factory, "trained-run",
                         lambda out: _train_run(out, tmp_path_factory))
    run = tmp_path_factory.mktemp("runs") / "run"
    shutil.copytree(shared / "run", run)
    fields = json.loads((shared / "result.json").read_text())
    fields["final_val_rmse_per_bucket"] = {int(k): v for k, v in
                                           fields["final_val_rmse_per_bucket"].items()}
    return dataclasses.replace(TrainResult(**fields), run_dir=run)


def _train_run(out: Path, tmp_path_factory) -> None:
    import dataclasses

    import protstore
    from protstore.batching import LoaderConfig
    from protstore.train import TrainConfig, train

    store = protstore.open_store(_built_once(tmp_path_factory, "train-data", _write_train_store)
                                 / "store.zarr")
    out.mkdir(parents=True)
    config = TrainConfig(epochs=3, checkpoint_every_steps=5, learning_rate=3e-3,
                         loader=LoaderConfig(batch_size=8))
    result = train(store, store.plan("p"), out / "run", config, progress=False,
                   echo=lambda m: None)
    (out / "result.json").write_text(json.dumps(
        {**dataclasses.asdict(result), "run_dir": str(result.run_dir)}))


@pytest.fixture(scope="session")
def s3_endpoint():
    """An S3-compatible server (moto) on 127.0.0.1, started here; the standard environment
    (AWS_ENDPOINT_URL, credentials, region) points fsspec/s3fs, and child processes, at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    before = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield env["AWS_ENDPOINT_URL"]
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint) -> str:
    """A fresh bucket on the test server: ``s3://<name>``."""
    import fsspec

    name = f"t{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3").mkdir(name)
    return f"s3://{name}"
