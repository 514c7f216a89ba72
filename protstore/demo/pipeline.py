"""The end-to-end demo job: generate data, ingest it into a local store, report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
        echo(f"[1/3] demo data: reusing {len(existing)} files in {data_dir}")
        files = existing
    else:
        echo(f"[1/3] demo data: simulating {len(config.lengths)} proteins into {data_dir}")
        files = make_demo_dataset(data_dir, config, progress=progress)
    store_path = out / "store.zarr"
    echo(f"[2/3] ingest into {store_path}")
    store = open_store(store_path, mode="a")
    report = ingest(files, store, IngestOptions(), progress=progress)
    for line in report.lines():
        echo(line)
    echo("[3/3] store summary")
    info = store_info(open_store(store_path))
    (out / "info.txt").write_text(info + "\n")
    echo(info)
    return {"data": data_dir, "store": store_path, "info": out / "info.txt",
            "ok": report.ok}
