"""Analysis commands: evaluate, simulate, compare, and the demo."""

from __future__ import annotations


from ..evaluate.config import EVAL_MODES, EVAL_SPLITS, EvalConfig
from .common import _count, _nonnegative_float, _open, _positive_int, add_command


def _evaluate(args) -> int:
    from ..evaluate import evaluate

    config = EvalConfig(mode=args.mode, split=args.split, proteins=args.proteins,
                        n_frames=args.n_frames, seed=args.seed, frame_block=args.frame_block,
                        address=args.scheduler, workers=args.workers, model_id=args.model_id,
                        model=args.model, allow_pickle=args.allow_pickle)
    store = _open(args)
    plan = store.plan(args.plan) if args.plan else None
    evaluate(store, args.params, args.out, config, plan=plan, progress=not args.no_progress)
    return 0


def _compare(args) -> int:
    """``protstore compare``: thin; everything is in :func:`protstore.compare.compare`."""
    from ..compare import compare

    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
    compare(_open(args), args.trajectories, labels=labels, burn_in=args.burn_in,
            allow_incomplete=args.allow_incomplete, n_bins=args.bins, tica=not args.no_tica,
            tica_lag=args.tica_lag, out=args.out, overwrite=args.overwrite, echo=print)
    return 0


def _simulate(args) -> int:
    from ..simulate import SimulateConfig, simulate
    from ..location import parse_storage_options

    config = SimulateConfig(
        n_steps=args.steps, temperature=args.temperature, n_replicas=args.replicas,
        dt_fs=args.dt_fs, friction=args.friction, save_every=args.save_every, seed=args.seed,
        mode=args.mode, start=args.start, on_unstable=args.on_unstable,
        block_frames=args.block_frames)
    store = _open(args)
    result = simulate(store, args.params, args.protein, args.out, config, model=args.model,
                      allow_pickle=args.allow_pickle, resume=args.resume,
                      overwrite=args.overwrite, progress=not args.no_progress,
                      storage_options=parse_storage_options(args.storage_options))
    doc = result.document
    rate = result.steps * doc["n_replicas"] / result.wall_s if result.wall_s else 0.0
    dropped = f"; {len(doc['dropped'])} replica(s) dropped" if doc["dropped"] else ""
    print(f"simulated {doc['protein']} at {doc['temperature']:g} K: {doc['steps_done']} steps "
          f"x {doc['n_replicas']} replicas ({rate:.3g} replica-steps/s with compilation)"
          f"{dropped}; wrote {result.path}")
    return 0


def _demo_data(args) -> int:
    from ..demo import DemoConfig, make_demo_dataset

    config = DemoConfig(lengths=tuple(args.lengths), frames=args.frames, seed=args.seed)
    for path in make_demo_dataset(args.out, config, progress=not args.no_progress):
        print(path)
    return 0


def _demo(args) -> int:
    from ..demo.pipeline import run_demo

    result = run_demo(args.out, progress=not args.no_progress)
    print(f"demo outputs in {args.out}")
    return 0 if result["ok"] else 1


def add_commands(sub) -> None:
    """Register the analysis commands on ``sub`` (the parser's subparsers)."""
    p = add_command(sub, "evaluate", _evaluate,
                    "force errors of a trained model: overall or per residue (dask-parallel)")
    p.add_argument("store")
    p.add_argument("--params", required=True, metavar="CHECKPOINT",
                   help="a checkpoint group (training, final/best, EMA) or, with --allow-pickle, "
                        "a params.pkl")
    p.add_argument("--mode", choices=EVAL_MODES, default=EvalConfig.mode)
    p.add_argument("--plan", help="bucket plan: its split and bucket shapes")
    p.add_argument("--split", choices=EVAL_SPLITS,
                   help="frames to evaluate (default with --plan: test when the plan holds a "
                        "test part out, else val; without: all)")
    p.add_argument("--proteins", nargs="+", metavar="ID")
    p.add_argument("--n-frames", type=_positive_int, metavar="N", help="at most N frames per protein")
    p.add_argument("--seed", type=int, default=EvalConfig.seed)
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="dask.distributed scheduler (tcp://...); default: local threads")
    p.add_argument("--workers", type=_count, help="local threads (0: serial)")
    p.add_argument("--frame-block", type=_positive_int, default=EvalConfig.frame_block,
                   help="frames per task")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--model-id", help="prefix of the output files (default: the params' name)")
    p.add_argument("--model", metavar="PACKAGE.MODULE:FACTORY",
                   help="the model that reads the params: needed for a params.pkl (default "
                        "protstore's network) and for a checkpoint of a plug-in model, whose "
                        "stored factory is never imported unless named here")
    p.add_argument("--allow-pickle", action="store_true",
                   help="read a params.pkl (runs code from the file; only files you trust)")
    p = add_command(sub, "simulate", _simulate,
                    "Langevin dynamics of a parameter set on one protein of a store (a Zarr "
                    "trajectory)")
    p.add_argument("store")
    p.add_argument("--params", required=True, metavar="CHECKPOINT",
                   help="a checkpoint group (training, final/best, EMA) or, with --allow-pickle, "
                        "a params.pkl")
    p.add_argument("--protein", required=True, metavar="ID")
    p.add_argument("--out", required=True, metavar="TRAJ",
                   help="the trajectory (a Zarr group; local path or URL)")
    p.add_argument("--temperature", type=float, metavar="K",
                   help="default: the protein's temperature, when its frames have one")
    p.add_argument("--replicas", type=int, default=1, metavar="R")
    p.add_argument("--steps", type=int, default=10_000, metavar="N",
                   help="integration steps, a multiple of --save-every (default 10000)")
    p.add_argument("--dt-fs", type=float, default=2.0, metavar="FS", help="time step (default 2)")
    p.add_argument("--friction", type=float, default=1.0, metavar="PER_PS",
                   help="Langevin friction, 1/ps (default 1)")
    p.add_argument("--save-every", type=int, default=100, metavar="K",
                   help="steps between saved frames (default 100)")
    p.add_argument("--block-frames", type=int, metavar="F",
                   help="saved frames per written (and checked) block (default: ~1 MiB, <= 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", choices=["full", "prior-only"], default="full")
    p.add_argument("--start", choices=["first", "random"], default="first",
                   help="start every replica from the first frame at the temperature, or each "
                        "from a random one")
    p.add_argument("--on-unstable", choices=["stop", "drop"], default="stop",
                   help="an unstable replica stops the run (default) or is left out")
    p.add_argument("--resume", action="store_true", help="continue the trajectory TRAJ")
    p.add_argument("--overwrite", action="store_true", help="replace the trajectory TRAJ")
    p.add_argument("--model", metavar="PACKAGE.MODULE:FACTORY",
                   help="the model that reads the params (as for evaluate)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="read a params.pkl (runs code from the file; only files you trust)")
    p = add_command(sub, "compare", _compare,
                    "simulated trajectories against the store's frames of the same protein and "
                    "temperature: observables, JS divergences, TICA free-energy surfaces")
    p.add_argument("store")
    p.add_argument("trajectories", nargs="+", metavar="TRAJ",
                   help="trajectory groups written by protstore simulate (paths or URLs)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="compare.json, compare.txt and the PNGs are written here")
    p.add_argument("--labels", metavar="A,B", help="names of the trajectories in the table and "
                   "figures (default: their directory names)")
    p.add_argument("--burn-in", type=_nonnegative_float, default=0.0, metavar="PS",
                   help="leave out the first PS picoseconds of every replica (default 0)")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="compare the saved part of a trajectory that is not complete")
    p.add_argument("--bins", type=_positive_int, default=50,
                   help="histogram bins of each 1-D observable (default 50)")
    p.add_argument("--tica-lag", type=_positive_int, default=1, metavar="FRAMES",
                   help="TICA lag in saved frames of the reference (default 1)")
    p.add_argument("--no-tica", action="store_true", help="no TICA components or FES")
    p.add_argument("--overwrite", action="store_true", help="replace a comparison in DIR")
    p = add_command(sub, "demo-data", _demo_data, "generate the demo data set (mdCATH-layout HDF5)")
    p.add_argument("out")
    p.add_argument("--lengths", type=_positive_int, nargs="+", default=[24, 45, 73, 118, 167, 236])
    p.add_argument("--frames", type=_positive_int, default=100, help="frames per run")
    p.add_argument("--seed", type=int, default=0)
    p = add_command(sub, "demo", _demo, "the end-to-end demo on generated data")
    p.add_argument("--out", default="demo-output")
