"""Learned force field against its priors on the real-MD data of ``real_md.py``.

Run ``real_md.py --stage prepare`` and ``--stage simulate`` first (same ``--out``), then

    python benchmarks/real_md_models.py --out real-md [--train-counts 1 2 3 5] [--epochs 12]

1. Learning curve (issue #25): one protein split with a test part (``--test-fraction``) and a
   validation part, fixed for every point; for each number of training proteins (nested
   subsets of the rest) a plan of those, the same validation and test proteins, then train
   (priors fitted on that plan's training split, validation at step 0 = priors only, best/
   chosen on validation including step 0). Printed: the test-protein force RMSE per component
   (kcal/mol/Å) of zero force, priors only, best/ and final/, and ``curve.png``.
2. Simulation against the reference (issue #27 point 4): for each test protein, ``protstore
   simulate`` with ``--mode prior-only`` and with best/ of the largest training set, then
   ``protstore compare`` of both; printed: the JS divergence of every observable.

Every protstore command line that an equivalent CLI run would use is printed before it runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from real_md import ingest_store

CLI = "protstore"


def say(*words) -> None:
    print("$ " + " ".join(shlex.quote(str(w)) for w in (CLI, *words)), flush=True)


def run_cli(*words) -> None:
    """Run a protstore command in this process, printing its command line; errors stop here."""
    from protstore.cli import main

    say(*words)
    code = main([str(w) for w in words])
    if code:
        raise SystemExit(f"protstore {words[0]} failed with exit code {code}")


def held_out_split(store, args):
    """The base plan (all proteins, one bucket): its validation and test proteins are those of
    every curve point."""
    from protstore.batching import plan_from_store, save_plan

    plan = plan_from_store(store, name="heldout", n_buckets=1, split="protein",
                           val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                           seed=args.seed)
    save_plan(store, plan, overwrite=True)
    return plan


def subset_plan(store, base, train: list[str], name: str):
    """A plan of ``train`` + base's validation and test proteins, holding those same ones out."""
    from protstore.batching import save_plan
    from protstore.batching.plan import make_plan

    keep = [*train, *base.split.val_proteins, *base.split.test_proteins]
    plan = make_plan({p: base.lengths[p] for p in keep}, {p: base.frames[p] for p in keep},
                     name=name, n_buckets=1, split="protein",
                     val_fraction=base.split.val_fraction,
                     test_fraction=base.split.test_fraction, seed=base.split.seed)
    split = replace(plan.split, val_proteins=list(base.split.val_proteins),
                    test_proteins=list(base.split.test_proteins))
    plan = replace(plan, split=split)
    save_plan(store, plan, overwrite=True)
    return plan


def rmse(ds, *, zero: bool = False) -> tuple[float, dict[str, float]]:
    """Force RMSE per component over the real beads of an error Dataset, overall and per
    protein (``zero``: of a zero force)."""
    from protstore.evaluate import pooled_by_sample

    sq = (ds["F_ref"].astype("float64") ** 2).sum("xyz") if zero else None
    t = pooled_by_sample(ds, "protein", sq)
    n = t["n_values"]
    total = float(np.sqrt((t["rmse_pooled"] ** 2 * n).sum() / n.sum() / 3))
    return total, {str(p): float(r / np.sqrt(3)) for p, r in t["rmse_pooled"].to_series().items()}


def curve(store, base, args, out: Path) -> list[dict]:
    from protstore import open_store
    from protstore.checkpoints import read_attrs
    from protstore.evaluate import EvalConfig, evaluate
    from protstore.batching import LoaderConfig
    from protstore.train import TrainConfig, train

    rng = np.random.default_rng(args.seed)
    pool = [p for p in base.proteins if p not in base.split.val_proteins
            and p not in base.split.test_proteins]
    order = rng.permutation(sorted(pool)).tolist()
    counts = sorted({min(n, len(order)) for n in args.train_counts})
    rows = []
    for n in counts:
        name = f"train{n}"
        subset_plan(store, base, order[:n], name)
        store_r = open_store(store.url)
        plan = store_r.plan(name)
        run = out / "runs" / name
        config = TrainConfig(epochs=args.epochs, learning_rate=args.lr,
                             weight_decay=args.weight_decay,
                             early_stopping_patience=args.early_stopping, seed=args.seed,
                             loader=LoaderConfig(batch_size=args.batch_size))
        t0 = time.perf_counter()
        if not (run / "final").exists():
            say("train", store.url, "--plan", name, "--out", run, "--epochs", args.epochs,
                "--batch-size", args.batch_size, "--lr", args.lr, "--weight-decay",
                args.weight_decay, "--early-stopping", args.early_stopping, "--seed", args.seed,
                "--no-progress")
            train(store_r, plan, run, config, progress=False)
        best_step = read_attrs(run / "best")["step"]
        t_train = time.perf_counter() - t0
        ev = out / "eval" / name
        figures = {}
        for label, params, mode in (("priors only", "best", "prior-only"),
                                    ("best/", "best", "full"), ("final/", "final", "full")):
            model_id = f"{params}_{mode}"
            say("evaluate", store.url, "--params", run / params, "--plan", name, "--mode", mode,
                "--out", ev, "--model-id", model_id, "--no-progress")
            ds = evaluate(store_r, run / params, ev, EvalConfig(mode=mode, model_id=model_id),
                          plan=plan, progress=False, echo=lambda m: None)["result"].dataset
            if not figures:
                figures["zero force"] = rmse(ds, zero=True)
            figures[label] = rmse(ds)
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        val = [m.get("val_rmse") for m in metrics]
        rows.append({"n_train": n, "train": order[:n], "figures": figures, "best_step": best_step,
                     "epochs_run": max(m.get("epoch", 0) for m in metrics),
                     "val_step0": val[0], "val_best": min(v for v in val if v is not None),
                     "train_s": t_train})
        print(curve_table(rows[-1:], base), flush=True)
    return rows


def curve_table(rows: list[dict], base) -> str:
    lines = [f"test proteins: {', '.join(base.split.test_proteins)}; validation (chooses "
             f"best/): {', '.join(base.split.val_proteins)}",
             "| training proteins | zero force | priors only (step 0) | best/ | final/ | "
             "best/ step | epochs | val RMSE step 0 → best | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = {k: v[0] for k, v in r["figures"].items()}
        lines.append(f"| {r['n_train']} ({', '.join(r['train'])}) | {f['zero force']:.3f} | "
                     f"{f['priors only']:.3f} | {f['best/']:.3f} | {f['final/']:.3f} | "
                     f"{r['best_step']} | {r['epochs_run']} | {r['val_step0']:.3f} → "
                     f"{r['val_best']:.3f} | {r['train_s']:.0f} |")
    return "\n".join(lines)


def per_protein_table(rows: list[dict]) -> str:
    proteins = sorted(rows[0]["figures"]["zero force"][1])
    lines = ["| training proteins | protein | zero force | priors only | best/ | final/ |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        for p in proteins:
            f = {k: v[1][p] for k, v in r["figures"].items()}
            lines.append(f"| {r['n_train']} | {p} | {f['zero force']:.3f} | "
                         f"{f['priors only']:.3f} | {f['best/']:.3f} | {f['final/']:.3f} |")
    return "\n".join(lines)


def plot_curve(rows: list[dict], path: Path) -> None:
    from protstore.plotting import new_figure, save_figure

    fig = new_figure((5.0, 3.4))
    ax = fig.subplots()
    x = [r["n_train"] for r in rows]
    for label, style in (("zero force", "k:"), ("priors only", "s-"), ("best/", "o-"),
                         ("final/", "^--")):
        ax.plot(x, [r["figures"][label][0] for r in rows], style, label=label)
    ax.set_xlabel("training proteins")
    ax.set_ylabel("test force RMSE per component (kcal/mol/Å)")
    ax.set_xticks(x)
    ax.legend(fontsize=8)
    ax.set_title("real MD: held-out (test) proteins", fontsize=9)
    save_figure(fig, path, dpi=80)


def simulations(store, base, run: Path, args, out: Path) -> list[tuple[str, dict, str]]:
    """prior-only and best/ trajectories of each test protein, and their comparison."""
    results = []
    for pid in base.split.test_proteins[:args.sim_proteins]:
        trajs = {}
        for label, mode in (("prior", "prior-only"), ("trained", "full")):
            traj = out / "sims" / f"{pid}_{label}.zarr"
            words = ["simulate", store.url, "--params", run / "best", "--protein", pid,
                     "--out", traj, "--temperature", args.sim_temperature, "--replicas",
                     args.replicas, "--steps", args.sim_steps, "--save-every", args.save_every,
                     "--dt-fs", args.dt_fs, "--mode", mode, "--start", "random",
                     "--on-unstable", "drop", "--seed", args.seed, "--no-progress"]
            t0 = time.perf_counter()
            if not traj.exists():
                try:
                    run_cli(*words)
                except SystemExit as exc:  # every replica dropped: its frames before count
                    print(f"{pid} {label}: {exc}; comparing the frames saved before", flush=True)
            print(f"{pid} {label}: {time.perf_counter() - t0:.0f} s", flush=True)
            trajs[label] = traj
        cmp = out / "compare" / pid
        if not (cmp / "compare.json").exists():
            run_cli("compare", store.url, trajs["prior"], trajs["trained"], "--out", cmp,
                    "--labels", "prior,trained", "--allow-incomplete", "--overwrite",
                    "--no-progress")
        results.append((pid, json.loads((cmp / "compare.json").read_text()),
                        (cmp / "compare.txt").read_text()))
    return results


def js_table(results) -> str:
    lines = []
    for pid, doc, _ in results:
        traj = {t["label"]: t for t in doc["trajectories"]}
        prior, trained = traj["prior"], traj["trained"]
        lines += [f"\n{pid} at {doc['temperature']:g} K: JS divergence (bits) against its MD "
                  f"frames; {prior['n_frames']} / {trained['n_frames']} frames, dropped "
                  f"replicas {prior['n_dropped']} / {trained['n_dropped']} (prior / trained)",
                  "| observable | JS prior-only | JS trained (best/) | MD mean | prior mean | "
                  "trained mean |", "|---|---|---|---|---|---|"]
        for obs, p in prior["observables"].items():
            t = trained["observables"][obs]
            lines.append(f"| {obs} | {_num(p.get('js'))} | {_num(t.get('js'))} | "
                         f"{_num(p.get('ref_mean'))} | {_num(p.get('sim_mean'))} | "
                         f"{_num(t.get('sim_mean'))} |")
    return "\n".join(lines)


def _num(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="real-md", help="real_md.py's --out")
    parser.add_argument("--stage", choices=["all", "curve", "simulate"], default="all")
    parser.add_argument("--train-counts", type=int, nargs="+", default=[1, 2, 3, 5])
    parser.add_argument("--val-fraction", type=float, default=0.125)
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--early-stopping", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sim-proteins", type=int, default=2, help="test proteins simulated")
    parser.add_argument("--sim-temperature", type=float, default=300.0)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--sim-steps", type=int, default=10_000)
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--dt-fs", type=float, default=2.0)
    args = parser.parse_args()
    out = Path(args.out)
    models = out / "models"
    store = ingest_store(out, sorted((out / "data").glob("mdcath_dataset_*.h5")))
    base = held_out_split(store, args)
    print(base.table())
    t0 = time.perf_counter()
    rows = curve(store, base, args, models)
    print(f"\nlearning curve ({time.perf_counter() - t0:.0f} s), test-protein force RMSE per "
          "component (kcal/mol/Å):")
    print(curve_table(rows, base))
    print("\nper test protein:")
    print(per_protein_table(rows))
    plot_curve(rows, models / "curve.png")
    (models / "curve.json").write_text(json.dumps(rows, indent=1))
    if args.stage == "curve":
        return
    t0 = time.perf_counter()
    largest = models / "runs" / f"train{rows[-1]['n_train']}"
    results = simulations(store, base, largest, args, models)
    print(f"\nsimulations and comparisons ({time.perf_counter() - t0:.0f} s), params "
          f"{largest / 'best'} (best/ step {rows[-1]['best_step']})")
    print(js_table(results))
    for pid, _, text in results:
        print(f"\n{pid} compare.txt:\n{text}")


if __name__ == "__main__":
    main()
