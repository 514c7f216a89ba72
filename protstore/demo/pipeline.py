"""The end-to-end demo job: generate data, ingest it into a local store, report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import json

from ..batching import plan_from_store, save_plan
from ..checkpoints import read_checkpoint
from ..model.fit import collect_samples, fit_priors, plot_fit, priors_from_doc, priors_to_doc
from ..train import TrainConfig, train
from ..ingest import IngestOptions, ingest
from ..report import store_info
from ..store import open_store
from .dataset import DemoConfig, make_demo_dataset

STEPS = 6
#: A short run that trains meaningfully on a 2-core CPU in about two minutes.
DEMO_TRAINING = TrainConfig(epochs=4, batch_size=16, learning_rate=3e-3)


def run_demo(out: str | Path, config: DemoConfig = DemoConfig(), *, progress: bool = True,
             echo: Callable[[str], None] = print,
             train_config: TrainConfig = DEMO_TRAINING) -> dict:
    """Run every step of the demo into ``out``; returns the paths of what it wrote."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    existing = sorted(data_dir.glob("mdcath_dataset_*.h5"))
    if len(existing) == len(config.lengths):
        echo(f"[1/{STEPS}] demo data: reusing {len(existing)} files in {data_dir}")
        files = existing
    else:
        echo(f"[1/{STEPS}] demo data: simulating {len(config.lengths)} proteins into {data_dir}")
        files = make_demo_dataset(data_dir, config, progress=progress)
    store_path = out / "store.zarr"
    echo(f"[2/{STEPS}] ingest into {store_path}")
    store = open_store(store_path, mode="a")
    report = ingest(files, store, IngestOptions(), progress=progress)
    for line in report.lines():
        echo(line)
    echo(f"[3/{STEPS}] store summary")
    info = store_info(open_store(store_path))
    (out / "info.txt").write_text(info + "\n")
    echo(info)
    echo(f"[4/{STEPS}] bucket plan 'demo' (3 optimal buckets, 20% of every protein's frames "
         "held out)")
    plan = plan_from_store(store, name="demo", strategy="optimal", n_buckets=3, split="frame",
                           val_fraction=0.2, seed=0)
    save_plan(store, plan, overwrite=True)
    (out / "plan.txt").write_text(plan.table() + "\n")
    echo(plan.table())
    store = open_store(store_path)

    echo(f"[5/{STEPS}] fit priors by Boltzmann inversion -> {out / 'priors.json'}")
    fitted, curves, fit_info = fit_priors(collect_samples(store, plan))
    doc = priors_to_doc(fitted, fit_info, store=store.url, plan=plan.name,
                        created_by="protstore demo")
    (out / "priors.json").write_text(json.dumps(doc, indent=1) + "\n")
    plot_fit(fitted, curves, fit_info, out / "priors.png")

    run_dir = out / "run"
    if (run_dir / "final").exists():
        echo(f"[6/{STEPS}] train: reusing the finished run in {run_dir}")
        result = None
    else:
        resume = (run_dir / "config.json").exists()
        echo(f"[6/{STEPS}] train ({'resuming' if resume else 'interleaved schedule'}) -> {run_dir}")
        result = train(store, plan, run_dir, train_config, priors=priors_from_doc(doc),
                       resume=resume, progress=progress, echo=echo)
    final = read_checkpoint(run_dir / "final")
    echo(f"validation force RMSE per component of the final params: "
         f"{final.attrs['val_rmse']:.4f} kcal/mol/Å (per bucket: "
         + ", ".join(f"{k}: {v:.4f}" for k, v in final.attrs["val_rmse_per_bucket"].items())
         + ")")
    return {"data": data_dir, "store": store_path, "info": out / "info.txt",
            "plan": out / "plan.txt", "run": run_dir, "train": result, "ok": report.ok}
