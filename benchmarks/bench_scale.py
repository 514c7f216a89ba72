"""The store at mdCATH's size: what opening, listing, reading one protein, ingesting one more,
planning, bucket views and the loader's first batch cost in a store of 100, 1,000 and 5,398
proteins (32 frames each), and how many requests the same operations make on an S3-compatible
server (moto, on 127.0.0.1). Prints tables (docs/performance.md keeps the latest).

    python benchmarks/bench_scale.py [--sizes 100 1000 5398] [--s3-sizes 100 1000]

The store is grown, not re-made: 16 proteins are ingested from mdCATH-layout files (lengths
drawn like mdCATH's domains, 50 to 500 residues), then copied under new ids (their group
documents patched) and listed in the catalog, which is what thousands of ingests leave behind.
Wall times are medians of 5 (in this process, warm); peak memory and the CLI commands run in
child processes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import protstore  # noqa: E402
from helpers import write_mdcath  # noqa: E402
from protstore.batching import BatchLoader, LoaderConfig, plan_from_store, save_plan  # noqa: E402
from protstore.ingest import ingest  # noqa: E402
from protstore.store.catalog import append_segment  # noqa: E402
from protstore.location import Location  # noqa: E402

FRAMES = 32
RESNAMES = ("ALA", "GLY", "LYS", "GLU", "LEU", "SER", "PRO", "VAL")


def _median(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _templates(work: Path, store: Path, n: int = 16) -> list[str]:
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        length = int(rng.integers(50, 500))
        names = tuple(RESNAMES[j % len(RESNAMES)] for j in rng.integers(0, 8, length))
        path = work / f"t{i:02d}.h5"
        write_mdcath(path, domain=f"t{i:02d}", resnames=names, frames=FRAMES // 2,
                     runs=((320, 0), (348, 0)), seed=i)
        files.append(path)
    ingest(files, protstore.open_store(store, mode="a"), progress=False, log=lambda m: None)
    return [f"t{i:02d}" for i in range(n)]


def _grow(store: Path, templates: list[str], size: int) -> None:
    """Copy template proteins under new ids until the store holds ``size``; list them."""
    have = len(protstore.open_store(store))
    entries = {}
    for k in range(have, size):
        src = templates[k % len(templates)]
        pid = f"d{k:05d}"
        dest = store / "proteins" / pid
        shutil.copytree(store / "proteins" / src, dest)
        meta = json.loads((dest / "zarr.json").read_text())
        doc = meta["attributes"]["protstore_protein"]
        doc["protein_id"] = pid
        (dest / "zarr.json").write_text(json.dumps(meta))
        entries[pid] = doc
    if entries:
        append_segment(Location(store), entries)


PEAK = """
    import resource, sys, time
    import protstore
    from protstore.batching import BatchLoader, LoaderConfig
    store = protstore.open_store(sys.argv[1])
    plan = store.plan("bench")
    big = max(range(len(plan.buckets)), key=lambda k: len(plan.buckets[k].proteins))
    loader = BatchLoader(store, plan, LoaderConfig(batch_size=32, buckets=(big,), split="all"))
    t0 = time.perf_counter()
    first = next(iter(loader.epoch(0)))
    t1 = time.perf_counter() - t0
    for _ in zip(range(200), loader.epoch(0)):
        pass
    print(t1, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def _cli(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "protstore.cli", *args], check=True,
                   capture_output=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    return time.perf_counter() - t0


def local_row(store: Path, work: Path, size: int) -> dict:
    import xarray as xr

    row = {"proteins": size}
    root = (store / "zarr.json").stat().st_size
    catalog = sum(p.stat().st_size for p in (store / "catalog").iterdir())
    row["root zarr.json"] = f"{root / 1e3:.1f} kB"
    row["catalog"] = f"{catalog / 1e6:.2f} MB"
    row["open_store + list"] = _median(lambda: protstore.open_store(store).proteins)
    pid = protstore.open_store(store).proteins[size // 2]
    row["xr.open_zarr(STORE/proteins/<id>)"] = _median(
        lambda: xr.open_zarr(store / "proteins" / pid))
    extra = work / f"extra{size}.h5"
    write_mdcath(extra, domain=f"x{size}", frames=FRAMES // 2, runs=((320, 0), (348, 0)))
    t0 = time.perf_counter()
    ingest([extra], protstore.open_store(store, mode="a"), progress=False, log=lambda m: None)
    row["ingest 1 file (in process)"] = time.perf_counter() - t0
    extra2 = work / f"extra{size}b.h5"
    write_mdcath(extra2, domain=f"y{size}", frames=FRAMES // 2, runs=((320, 0), (348, 0)))
    row["protstore ingest 1 file (CLI wall)"] = _cli("ingest", str(extra2), "--store",
                                                     str(store), "--no-progress")
    row["protstore bucket (CLI wall)"] = _cli("bucket", str(store), "--n-buckets", "3",
                                              "--name", "cli", "--overwrite")
    s = protstore.open_store(store, mode="r+")
    save_plan(s, plan_from_store(s, name="bench", n_buckets=3, split="none"), overwrite=True)
    plan = s.plan("bench")
    big = max(range(len(plan.buckets)), key=lambda k: len(plan.buckets[k].proteins))
    n_big = len(plan.buckets[big].proteins)
    t = _median(lambda: s.bucket(plan, big), repeat=3)
    row["store.bucket, biggest bucket"] = f"{t:.2f} s ({n_big}: {1e3 * t / n_big:.2f} ms each)"
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(PEAK), str(store)], check=True,
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    first, peak = out.stdout.split()
    row["loader first batch (epoch 0)"] = float(first)
    row["loader peak RSS (200 batches)"] = f"{float(peak):.0f} MB"
    return row


class _Requests(logging.Handler):
    """Counts the S3 server's requests by kind, from its access log."""

    def __init__(self):
        super().__init__()
        self.counts: dict[str, int] = {}

    def emit(self, record):
        text = record.getMessage()
        if '"' not in text:
            return
        method, path = text.split('"')[1].split()[:2]
        kind = "LIST" if method == "GET" and "list-type" in path else method
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def take(self) -> str:
        counts, self.counts = self.counts, {}
        return " ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "0"


def s3_rows(store: Path, sizes: list[int], latency_ms: float) -> list[dict]:
    """Request counts on the S3 server of each size's store (uploaded), and loader throughput
    from it next to the local disk."""
    import fsspec
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="x",
                      AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1")
    counter = _Requests()
    log = logging.getLogger("werkzeug")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(counter)
    fs = fsspec.filesystem("s3")
    fs.mkdir("bench")
    rows = []
    try:
        for size in sizes:
            local = store.parent / f"s3copy{size}.zarr"
            shutil.rmtree(local, ignore_errors=True)
            shutil.copytree(store, local, ignore=shutil.ignore_patterns(".lock", ".staging"))
            keep = set(sorted(protstore.open_store(local).proteins)[:size])
            for p in (local / "proteins").iterdir():
                if p.is_dir() and p.name not in keep:
                    shutil.rmtree(p)
            s = protstore.open_store(local, mode="r+")
            s.rebuild_catalog()
            from protstore.store.catalog import compact
            compact(Location(local))
            fs.put(str(local), f"bench/s{size}.zarr", recursive=True)
            url = f"s3://bench/s{size}.zarr"
            counter.take()
            remote = protstore.open_store(url)
            row = {"proteins": size, "open_store + list": counter.take()}
            pid = remote.proteins[size // 2]
            remote.protein(pid).load()
            row["store.protein(id).load()"] = counter.take()
            s = protstore.open_store(url, mode="r+")
            save_plan(s, plan_from_store(s, name="b", n_buckets=3, split="none"), overwrite=True)
            counter.take()
            plan = s.plan("b")
            small = min(range(3), key=lambda k: len(plan.buckets[k].proteins))
            loader = BatchLoader(s, plan, LoaderConfig(batch_size=32, buckets=(small,),
                                                       split="all"))
            n = sum(1 for _ in loader.epoch(0))
            row["loader epoch of the smallest bucket"] = f"{counter.take()} ({n} batches)"
            rows.append(row)
        # throughput: the loader from the local disk and from the server (+ added latency)
        tp = []
        local_store = protstore.open_store(store.parent / f"s3copy{sizes[0]}.zarr")
        remote_store = protstore.open_store(f"s3://bench/s{sizes[0]}.zarr")
        for name, st, delay in (("local disk", local_store, 0.0),
                                ("S3 server (127.0.0.1)", remote_store, 0.0),
                                (f"S3 server + {latency_ms:g} ms per request", remote_store,
                                 latency_ms / 1e3)):
            _add_latency(fs, delay)
            plan = st.plan("b") if "b" in st.plans() else None
            if plan is None:
                s2 = protstore.open_store(st.url, mode="r+")
                save_plan(s2, plan_from_store(s2, name="b", n_buckets=3, split="none"))
                plan = st.plan("b")
            for threads in (4, 32):
                loader = BatchLoader(st, plan, LoaderConfig(batch_size=32, split="all",
                                                            read_threads=threads))
                t0 = time.perf_counter()
                frames = sum(int(b["sample_mask"].sum()) for b in loader.epoch(0))
                dt = time.perf_counter() - t0
                tp.append({"source": name, "read threads": threads,
                           "frames/s": f"{frames / dt:,.0f}"})
        _add_latency(fs, 0.0)
        rows.append(tp)
    finally:
        server.stop()
    return rows


def _add_latency(fs, seconds: float) -> None:
    """Make every chunk GET of s3fs wait ``seconds`` first (object storage's first-byte time)."""
    import asyncio

    import s3fs

    original = getattr(s3fs.S3FileSystem, "_protstore_cat_file", s3fs.S3FileSystem._cat_file)
    s3fs.S3FileSystem._protstore_cat_file = original
    if not seconds:
        s3fs.S3FileSystem._cat_file = original
        return

    async def slow(self, *args, **kwargs):
        await asyncio.sleep(seconds)
        return await original(self, *args, **kwargs)

    s3fs.S3FileSystem._cat_file = slow


def _table(rows: list[dict]) -> str:
    keys = list(rows[0])
    fmt = [(f"{v:.3f} s" if isinstance(v, float) else str(v)) for r in rows for v in r.values()]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for i in range(len(rows)):
        lines.append("| " + " | ".join(fmt[i * len(keys):(i + 1) * len(keys)]) + " |")
    return "\n".join(lines)


def _transpose(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| operation | " + " | ".join(f"{r['proteins']:,}" for r in rows) + " |",
             "|---|" + "---|" * len(rows)]
    for k in keys[1:]:
        vals = [r[k] for r in rows]
        lines.append(f"| {k} | " + " | ".join(f"{v:.3f} s" if isinstance(v, float) else str(v)
                                               for v in vals) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5398])
    ap.add_argument("--s3-sizes", type=int, nargs="*", default=[100, 1000])
    ap.add_argument("--latency-ms", type=float, default=20.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=REPO.parent if os.access(REPO.parent, os.W_OK)
                                     else None) as tmp:
        work = Path(tmp)
        store = work / "scale.zarr"
        templates = _templates(work, store)
        rows = []
        for size in sorted(args.sizes):
            _grow(store, templates, size)
            rows.append(local_row(store, work, size))
            print(f"{size} proteins done", file=sys.stderr, flush=True)
        print("## Local disk\n")
        print(_transpose(rows))
        if args.s3_sizes:
            s3 = s3_rows(store, sorted(args.s3_sizes), args.latency_ms)
            print("\n## Requests on the S3 server\n")
            print(_transpose(s3[:-1]))
            print("\n## Loader throughput (all buckets, batch 32)\n")
            print(_table(s3[-1]))


if __name__ == "__main__":
    main()
