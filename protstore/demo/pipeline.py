"""The end-to-end demo job: generate data, ingest, plan, fit priors, train, EMA, evaluate,
simulate the held-out proteins and compare their ensembles with the reference."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..batching import plan_from_store, save_plan
from ..checkpoints import read_checkpoint
from ..compare import compare
from ..errors import ProtstoreError
from ..ema import compute_ema
from ..evaluate import EvalConfig, evaluate, pooled_by_sample
from ..train.priors import fit_priors_to_file
from ..batching import LoaderConfig
from ..train import TrainConfig, train
from ..ingest import IngestOptions, ingest
from ..report import store_info
from ..simulate import SimulateConfig, simulate
from ..store import open_store
from .dataset import SOURCE_INDEX, DemoConfig, make_demo_dataset, write_source_index

STEPS = 9
#: A short run that trains meaningfully on a 2-core CPU in a few minutes.
DEMO_TRAINING = TrainConfig(epochs=4, learning_rate=3e-3, checkpoint_every_steps=20,
                            loader=LoaderConfig(batch_size=16))
DEMO_EMA_DECAY = 0.99
#: the protein split's seed: the predecessor's NPZ protein lands in training, so the demo shows
#: the refusal of frames of unknown temperature, and its fix, once
DEMO_SPLIT_SEED = 0
#: CG Langevin dynamics of the held-out proteins: the generating world's friction and time
#: step (its beads weigh 110 amu, close to the residue masses simulate uses), random start
#: frames; 2 replicas x 30 ps, a frame every 0.5 ps like the data (the temperature: the data's
#: first)
DEMO_SIMULATION = SimulateConfig(n_steps=3000, n_replicas=2, dt_fs=10.0, friction=5.0,
                                 save_every=50, start="random")
#: the models simulated: label -> (checkpoint in the run directory, simulate mode)
DEMO_MODELS = {"prior-only": ("best", "prior-only"), "trained": ("best", "full")}


def run_demo(out: str | Path, config: DemoConfig = DemoConfig(), *, progress: bool = True,
             echo: Callable[[str], None] = print,
             train_config: TrainConfig = DEMO_TRAINING,
             simulate_config: SimulateConfig = DEMO_SIMULATION) -> dict:
    """Run every step of the demo into ``out``; returns the paths of what it wrote."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    existing = sorted([*data_dir.glob("mdcath_dataset_*.h5"), *data_dir.glob("predecessor_*.npz")])
    if len(existing) == len(config.lengths) + bool(config.predecessor_length):
        echo(f"[1/{STEPS}] demo data: reusing {len(existing)} files in {data_dir}")
        files = existing
        if not (data_dir / SOURCE_INDEX).exists():  # made before the demo wrote the index
            write_source_index([f for f in files if f.suffix == ".h5"], data_dir / SOURCE_INDEX)
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
    per_residue = evaluate(store, run_dir / "final", eval_dir, EvalConfig(mode="per-residue"),
                           plan=plan, progress=progress, echo=echo)
    ema_eval = evaluate(store, ema_path, eval_dir, EvalConfig(mode="full"), plan=plan,
                        progress=progress, echo=echo)
    prior_eval = evaluate(store, run_dir / "final", eval_dir,
                          EvalConfig(mode="prior-only", model_id="final"), plan=plan,
                          progress=progress, echo=echo)
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
    for line in lines:
        echo(line)

    sim_dir = out / "simulate"
    best_step = read_checkpoint(run_dir / "best").attrs["step"]
    echo(f"[9/{STEPS}] simulate each held-out protein with its priors only and with the "
         f"trained model (best/, step {best_step}) and compare the ensembles with the "
         f"reference -> {sim_dir}")
    comparisons = simulate_and_compare(store, run_dir, plan.split.val_proteins, sim_dir,
                                       simulate_config.replace(
                                           temperature=float(config.temperatures[0])),
                                       progress=progress, echo=echo)
    ensemble_lines = [f"ensembles of CG simulations of the held-out proteins against the "
                      f"reference at {config.temperatures[0]} K: Jensen-Shannon divergence "
                      f"(bits, 0 = identical histograms) per observable; trained = best/ "
                      f"(step {best_step})", *comparison_table(comparisons)]
    for line in ensemble_lines:
        echo(line)
    lines += ["", *ensemble_lines]
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    plot_summary(per_bucket, comparisons, out / "summary.png")
    return {"data": data_dir, "store": store_path, "info": out / "info.txt",
            "plan": out / "plan.txt", "run": run_dir, "train": result, "ema": ema_path,
            "eval": eval_dir, "simulate": sim_dir, "summary": summary,
            "comparisons": comparisons, "ok": report.ok}


def simulate_and_compare(store, run_dir: Path, proteins, out: Path, config: SimulateConfig, *,
                         progress: bool, echo: Callable[[str], None]) -> dict:
    """Simulate every protein with each of :data:`DEMO_MODELS` into ``out/<protein>_<label>.zarr``
    and compare them with the reference (``out/<protein>/``); returns protein -> the
    :class:`~protstore.compare.CompareResult`."""
    results = {}
    for protein in proteins:
        trajectories = []
        for label, (checkpoint, mode) in DEMO_MODELS.items():
            path = out / f"{protein}_{label}.zarr"
            sim = simulate(store, run_dir / checkpoint, protein, path, config.replace(mode=mode),
                           overwrite=True, progress=progress)
            echo(f"{protein} {label}: {sim.steps} steps x {config.n_replicas} replicas in "
                 f"{sim.wall_s:.1f} s (the first block, compilation included: "
                 f"{sim.compile_s:.1f} s)")
            trajectories.append(path)
        results[protein] = compare(store, trajectories, labels=list(DEMO_MODELS),
                                   out=out / protein, overwrite=True)
    return results


def comparison_table(comparisons: dict) -> list[str]:
    """Lines of a table: one row per (protein, model), one column per observable (JS, bits)."""
    observables = [str(o) for o in next(iter(comparisons.values())).table.observable.values]
    rows = [f"  {'protein':<10s} {'model':<11s} " + " ".join(f"{o:>10s}" for o in observables)]
    for protein, res in comparisons.items():
        for label in res.table.trajectory.values:
            js = res.table.js.sel(trajectory=label)
            rows.append(f"  {protein:<10s} {str(label):<11s} "
                        + " ".join(f"{float(js.sel(observable=o)):10.3f}" for o in observables))
    return rows


def rmse_by_bucket(ds, *, zero: bool = False) -> dict[str, float]:
    """Force RMSE per component over real beads, overall and per bucket, of an error Dataset
    (``zero``: of predicting zero force, i.e. the reference forces' RMS)."""
    sq = (ds["F_ref"].astype("float64") ** 2).sum("xyz") if zero else None
    t = pooled_by_sample(ds, "bucket", sq)
    n = t["n_values"]
    out = {"all": float(np.sqrt((t["rmse_pooled"] ** 2 * n).sum() / n.sum() / 3))}
    out.update({str(b): float(r / np.sqrt(3)) for b, r in t["rmse_pooled"].to_series().items()})
    return out


def plot_summary(per_bucket: dict[str, dict[str, float]], comparisons: dict, path: Path) -> None:
    """Left: held-out force RMSE per bucket for each model (zero, prior, final, EMA), grouped
    bars. Right: JS divergence from the reference per observable, for each simulated
    (protein, model)."""
    from ..plotting import new_figure, save_figure

    fig = new_figure((14, 4.5))
    ax, bx = fig.subplots(1, 2, width_ratios=(1, 1.4))
    groups = list(next(iter(per_bucket.values())))
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
    ax.set_ylabel("held-out force RMSE per component (kcal/mol/Å)")
    ax.set_title("Forces: zero vs priors vs trained (final, EMA)")
    ax.legend(fontsize=8)

    observables = [str(o) for o in next(iter(comparisons.values())).table.observable.values]
    series = [(p, str(label), res.table.js.sel(trajectory=label))
              for p, res in comparisons.items() for label in res.table.trajectory.values]
    width = 0.8 / len(series)
    for i, (protein, label, js) in enumerate(series):
        x = np.arange(len(observables)) + i * width
        bx.bar(x, [float(js.sel(observable=o)) for o in observables], width,
               label=f"{protein} {label}", hatch="//" if label == "prior-only" else None)
    bx.set_xticks(np.arange(len(observables)) + 0.4 - width / 2, observables)
    bx.set_ylabel("JS divergence from the reference (bits)")
    bx.set_title("Ensembles: CG simulation vs reference, held-out proteins")
    bx.legend(fontsize=7, ncol=2)
    save_figure(fig, path)
