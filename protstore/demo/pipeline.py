"""The end-to-end demo job: generate data, ingest it into a local store, report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..batching import plan_from_store, save_plan
from ..ingest import IngestOptions, ingest
from ..report import store_info
from ..store import open_store
from .dataset import DemoConfig, make_demo_dataset


def run_demo(out: str | Path, config: DemoConfig = DemoConfig(), *, progress: bool = True,
             echo: Callable[[str], None] = print) -> dict:
    """Run every step of the demo into ``out``; returns the paths of what it wrote."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    existing = sorted(data_dir.glob("mdcath_dataset_*.h5"))
    if len(existing) == len(config.lengths):
        echo(f"[1/4] demo data: reusing {len(existing)} files in {data_dir}")
        files = existing
    else:
        echo(f"[1/4] demo data: simulating {len(config.lengths)} proteins into {data_dir}")
        files = make_demo_dataset(data_dir, config, progress=progress)
    store_path = out / "store.zarr"
    echo(f"[2/4] ingest into {store_path}")
    store = open_store(store_path, mode="a")
    report = ingest(files, store, IngestOptions(), progress=progress)
    for line in report.lines():
        echo(line)
    echo("[3/4] store summary")
    info = store_info(open_store(store_path))
    (out / "info.txt").write_text(info + "\n")
    echo(info)
    echo("[4/4] bucket plan 'demo' (3 optimal buckets, 1 held-out protein)")
    plan = plan_from_store(store, name="demo", strategy="optimal", n_buckets=3, split="protein",
                           val_fraction=0.2, seed=0)
    save_plan(store, plan, overwrite=True)
    (out / "plan.txt").write_text(plan.table() + "\n")
    echo(plan.table())
    return {"data": data_dir, "store": store_path, "info": out / "info.txt",
            "plan": out / "plan.txt", "ok": report.ok}
