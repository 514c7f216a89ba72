"""The demo store the training/evaluation benchmarks run on (made once, reused)."""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import jax

from protstore.batching import plan_from_store, save_plan
from protstore.demo import DemoConfig, make_demo_dataset
from protstore.ingest import ingest
from protstore.store import open_store


def demo_store(path: str | Path, plan: str = "demo"):
    """Open ``path`` (``make demo``'s store), or generate the demo data set there first."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        files = make_demo_dataset(path.parent / "bench-data", DemoConfig(), progress=True)
        ingest(files, open_store(path, mode="a"), progress=True)
    store = open_store(path, mode="a")
    if plan not in store.plans():
        save_plan(store, plan_from_store(store, name=plan, strategy="optimal", n_buckets=3,
                                         split="frame", val_fraction=0.2, seed=0))
    return open_store(path)


def demo_args(doc: str, **options) -> tuple[argparse.Namespace, object, object]:
    """Parse ``--store``/``--plan`` plus ``options`` (name -> default); print the machine line;
    return (args, store, plan) of the demo store."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--store", default="demo-output/store.zarr")
    ap.add_argument("--plan", default="demo")
    for name, default in options.items():
        ap.add_argument(f"--{name}", type=type(default), default=default)
    args = ap.parse_args()
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
          f"jax {jax.__version__} on {jax.devices()[0].platform}")
    store = demo_store(args.store, args.plan)
    return args, store, store.plan(args.plan)
