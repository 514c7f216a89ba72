"""The end-to-end demo job: generate data, ingest, plan, fit priors, train, EMA, evaluate."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..batching import plan_from_store, save_plan
from ..checkpoints import read_checkpoint
from ..errors import ProtstoreError
from ..ema import compute_ema
from ..evaluate import evaluate, pooled_by_sample
from ..model.fit import fit_priors_to_file
from ..train import TrainConfig, train
from ..ingest import IngestOptions, ingest
from ..report import store_info
from ..store import open_store
from .dataset import DemoConfig, make_demo_dataset

STEPS = 8
#: A short run that trains meaningfully on a 2-core CPU in a few minutes.
DEMO_TRAINING = TrainConfig(epochs=4, batch_size=16, learning_rate=3e-3, checkpoint_every_steps=20)
DEMO_EMA_DECAY = 0.99
#: the protein split's seed: the predecessor's NPZ protein lands in training, so the demo shows
#: the refusal of frames of unknown temperature, and its fix, once
DEMO_SPLIT_SEED = 0


def run_demo(out: str | Path, config: DemoConfig = DemoConfig(), *, progress: bool = True,
             echo: Callable[[str], None] = print,
             train_config: TrainConfig = DEMO_TRAINING) -> dict:
    """Run every step of the demo into ``out``; returns the paths of what it wrote."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    existing = sorted([*data_dir.glob("mdcath_dataset_*.h5"), *data_dir.glob("predecessor_*.npz")])
    if len(existing) == len(config.lengths) + bool(config.predecessor_length):
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
    echo(f"[4/{STEPS}] bucket plan 'demo' (3 optimal buckets; whole proteins held out, one "
         "per bucket, to measure generalisation to new proteins)")
    plan = plan_from_store(store, name="demo", strategy="optimal", n_buckets=3, split="protein",
                           val_fraction=0.2, seed=DEMO_SPLIT_SEED)
    save_plan(store, plan, overwrite=True)
    (out / "plan.txt").write_text(plan.table() + "\n")
    echo(plan.table())
    store = open_store(store_path)

    echo(f"[5/{STEPS}] fit priors by Boltzmann inversion -> {out / 'priors.json'}")
    try:
        doc = fit_priors_to_file(store, plan, out / "priors.json")
    except ProtstoreError as exc:  # the predecessor's NPZ protein has no temperature
        given = float(config.temperatures[0])
        echo(f"refused, as it should be: {exc}")
        echo(f"the predecessor's file was simulated at {given:g} K: fitting again with "
             f"--temperature {given:g} for exactly its frames")
        doc = fit_priors_to_file(store, plan, out / "priors.json", unknown_temperature=given)
    fit = doc["fit"]
    echo(f"bond k = {doc['params']['bond']['k']:.1f} kcal/mol/Å², r0 = "
         f"{doc['params']['bond']['r0']:.3f} Å ({fit['bond_cis']['n_cis']} cis bonds left out "
         f"of the trans fit); temperatures {', '.join(fit['temperatures_K'])} K")

    run_dir = out / "run"
    if (run_dir / "final").exists():
        echo(f"[6/{STEPS}] train: reusing the finished run in {run_dir}")
        result = None
    else:
        resume = (run_dir / "config.json").exists()
        echo(f"[6/{STEPS}] train ({'resuming' if resume else 'interleaved schedule'}) -> {run_dir}")
        result = train(store, plan, run_dir, train_config, priors=doc,
                       resume=resume, progress=progress, echo=echo)
    final = read_checkpoint(run_dir / "final")
    echo(f"validation force RMSE per component of the final params: "
         f"{final.attrs['val_rmse']:.4f} kcal/mol/Å (per bucket: "
         + ", ".join(f"{k}: {v:.4f}" for k, v in final.attrs["val_rmse_per_bucket"].items())
         + ")")

    ema_path = out / "ema"
    echo(f"[7/{STEPS}] EMA of the run's checkpoints (decay {DEMO_EMA_DECAY} per step) -> {ema_path}")
    if ema_path.exists():
        shutil.rmtree(ema_path)
    compute_ema(run_dir, ema_path, decay=DEMO_EMA_DECAY, echo=echo)

    eval_dir = out / "eval"
    echo(f"[8/{STEPS}] evaluate on the held-out proteins -> {eval_dir}")
    per_residue = evaluate(store, run_dir / "final", eval_dir, mode="per-residue", plan=plan,
                           progress=progress, echo=echo)
    ema_eval = evaluate(store, ema_path, eval_dir, mode="full", plan=plan, progress=progress,
                        echo=echo)
    prior_eval = evaluate(store, run_dir / "final", eval_dir, mode="prior-only", plan=plan,
                          model_id="final", progress=progress, echo=echo)
    datasets = {"zero-force baseline": None, "prior-only": prior_eval["result"].dataset,
                "final params": per_residue["result"].dataset,
                "EMA params": ema_eval["result"].dataset}
    per_bucket = {k: rmse_by_bucket(per_residue["result"].dataset if ds is None else ds,
                                    zero=ds is None) for k, ds in datasets.items()}
    summary = {k: v["all"] for k, v in per_bucket.items()}
    buckets = [b for b in per_bucket["final params"] if b != "all"]
    lines = ["validation force RMSE per component (kcal/mol/Å), held-out proteins:",
             f"  {'model':<20s} {'all':>7s} " + " ".join(f"{'bucket ' + b:>9s}" for b in buckets)]
    lines += [f"  {k:<20s} {v['all']:7.4f} " + " ".join(f"{v[b]:9.4f}" for b in buckets)
              for k, v in per_bucket.items()]
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    plot_summary(per_bucket, out / "summary.png")
    for line in lines:
        echo(line)
    return {"data": data_dir, "store": store_path, "info": out / "info.txt",
            "plan": out / "plan.txt", "run": run_dir, "train": result, "ema": ema_path,
            "eval": eval_dir, "summary": summary, "ok": report.ok}


def rmse_by_bucket(ds, *, zero: bool = False) -> dict[str, float]:
    """Force RMSE per component over real beads, overall and per bucket, of an error Dataset
    (``zero``: of predicting zero force, i.e. the reference forces' RMS)."""
    sq = (ds["F_ref"].astype("float64") ** 2).sum("xyz") if zero else None
    t = pooled_by_sample(ds, "bucket", sq)
    n = t["n_values"]
    out = {"all": float(np.sqrt((t["rmse_pooled"] ** 2 * n).sum() / n.sum() / 3))}
    out.update({str(b): float(r / np.sqrt(3)) for b, r in t["rmse_pooled"].to_series().items()})
    return out


def plot_summary(per_bucket: dict[str, dict[str, float]], path: Path) -> None:
    """Grouped bars: validation RMSE per bucket for each model (zero, prior, final, EMA)."""
    from ..plotting import new_figure, save_figure

    groups = list(next(iter(per_bucket.values())))
    fig = new_figure((8, 4))
    ax = fig.subplots()
    width = 0.8 / len(per_bucket)
    for i, (name, values) in enumerate(per_bucket.items()):
        x = np.arange(len(groups)) + i * width
        ax.bar(x, [values[g] for g in groups], width, label=name)
        for xi, g in zip(x, groups):
            ax.text(xi, values[g], f"{values[g]:.3f}", ha="center", va="bottom", fontsize=6,
                    rotation=90)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2,
                  ["all buckets" if g == "all" else f"bucket {g}" for g in groups])
    ax.set_yscale("log")
    ax.set_ylabel("validation force RMSE per component (kcal/mol/Å)")
    ax.set_title("Demo: zero force vs priors vs trained (final and EMA) params")
    ax.legend(fontsize=8)
    save_figure(fig, path)
