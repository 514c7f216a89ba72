"""The ``protstore`` command line: parse, call the library, print. Errors become one line."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from . import __version__
from .batching.plan import BLOCK_FRAMES, BLOCK_TAU, LEAKAGE_TARGET, SPLITS
from .errors import ProtstoreError
from .store.location import as_location
from .train.config import FLAG_NAMES, LOSS_WEIGHTINGS


def _open(args, mode: str = "r"):
    """The store named on the command line, opened with ``--storage-options``; what opening
    did (a migration) is said on stderr."""
    from .store import open_store
    from .store.location import parse_storage_options

    store = open_store(args.store, mode=mode,
                       storage_options=parse_storage_options(args.storage_options))
    for note in store.notes:
        print(f"protstore: {note}", file=sys.stderr)
    return store


def _ingest(args) -> int:
    from .ingest import IngestOptions, ingest

    options = IngestOptions(
        temperatures=tuple(args.temperatures) if args.temperatures else None,
        replicas=tuple(args.replicas) if args.replicas else None,
        strict=args.strict, overwrite=args.overwrite, allow_pickle=args.allow_pickle,
        allow_unknown=args.allow_unknown, protein_id=args.id, temperature=args.temperature,
        length_units=args.length_units, force_units=args.force_units,
        topology=args.topology, md_format=args.format)
    if args.id is not None:
        from .store import check_protein_id

        check_protein_id(args.id)
        if len(args.sources) > 1:
            raise ProtstoreError("--id names one protein; give exactly one source file with it")
    store = _open(args, "a")
    if args.scheduler:
        from .cluster import connect

        with connect(args.scheduler) as client:
            report = ingest(args.sources, store, options, progress=not args.no_progress,
                            client=client)
    else:
        report = ingest(args.sources, store, options, progress=not args.no_progress)
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


def _info(args) -> int:
    from .report import store_info

    print(store_info(_open(args)))
    return 0


def _validate(args) -> int:
    from .store.verify import verify_store

    if args.repair:
        store = _open(args, "r+")
        for line in [*store.recover_staging(), *store.rebuild_catalog()]:
            print(f"repair: {line}")
    store = _open(args)
    findings = verify_store(store, progress=not args.no_progress)
    for f in findings:
        print(f)
    errors = sum(f.level == "error" for f in findings)
    print(f"validate: {len(store.proteins)} proteins checked, {errors} error(s), "
          f"{len(findings) - errors} warning(s)")
    return 1 if errors else 0


def _bucket(args) -> int:
    from .batching import plan_from_store, save_plan

    store = _open(args, "r+")
    plan = plan_from_store(
        store, name=args.name, boundaries=args.bucket_boundaries, n_buckets=args.n_buckets,
        strategy=args.strategy, cost=args.cost, pad_multiple=args.pad_multiple,
        max_waste=args.max_waste, split=args.split, val_fraction=args.val_fraction,
        test_fraction=args.test_fraction, seed=args.seed, block_frames=args.block_frames)
    save_plan(store, plan, overwrite=args.overwrite)
    print(plan.table())
    print(f"saved as plans/{plan.name} in {args.store}")
    return 0


def _export_npz(args) -> int:
    from .batching import load_plan
    from .batching.export import export_npz

    store = _open(args)
    for path in export_npz(store, load_plan(store, args.plan), args.out, split=args.split,
                           pickle_objects=args.pickle_objects):
        print(path)
    return 0


def _export(args) -> int:
    from .export import export

    store = _open(args)
    print(export(store, args.plan, args.out, args.format, split=args.split, bucket=args.bucket,
                 priors=args.prior_delta, overwrite=args.overwrite,
                 progress=not args.no_progress).line())
    return 0


def _demo_data(args) -> int:
    from .demo import DemoConfig, make_demo_dataset

    config = DemoConfig(lengths=tuple(args.lengths), frames=args.frames, seed=args.seed)
    for path in make_demo_dataset(args.out, config, progress=not args.no_progress):
        print(path)
    return 0


def _demo(args) -> int:
    from .demo.pipeline import run_demo

    result = run_demo(args.out, progress=not args.no_progress)
    print(f"demo outputs in {args.out}")
    return 0 if result["ok"] else 1


def _fit_priors(args) -> int:
    from .model.fit import fit_priors_to_file

    store = _open(args)
    doc = fit_priors_to_file(store, store.plan(args.plan), args.out, max_frames=args.max_frames,
                             temperature=args.only_temperature,
                             unknown_temperature=args.temperature, seed=args.seed)
    p, fit = doc["params"], doc["fit"]
    temps = ", ".join(f"{t} K" for t in fit["temperatures_K"])
    print(f"priors fitted on {fit['n_frames']} training frames at {temps}: bond "
          f"k={p['bond']['k']:.1f} kcal/mol/Å² r0={p['bond']['r0']:.3f} Å "
          f"({fit['bond_cis']['n_cis']} cis bonds left out); repulsion "
          f"σ={p['repulsion']['sigma']:.2f} Å p={p['repulsion']['power']:.1f}")
    print(f"wrote {args.out} and {as_location(args.out).with_suffix('.png')}")
    return 0


def _model_options(pairs: list[str] | None) -> dict | None:
    import json

    if not pairs:
        return None
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ProtstoreError(f"--model-option {pair!r}: expected KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


#: ``protstore train`` flags that set a TrainConfig field: flag dest -> field
TRAIN_FLAGS = {dest: FLAG_NAMES.get(dest, dest) for dest in (
    "schedule", "epochs", "batch_size", "batch_beads", "lr", "weight_decay", "loss_weighting",
    "early_stopping", "seed", "checkpoint_every", "model", "model_option")}
#: what a config file's ``[run]`` table cannot set: the file itself
NOT_IN_FILE = ("help", "config")
#: what run.json does not record of the command's options (they may hold credentials)
NOT_RECORDED = ("storage_options",)
_VALUE_KINDS = {None: "a string", int: "an integer", float: "a number"}


def _train_actions() -> dict[str, argparse.Action]:
    """dest -> action of the ``protstore train`` options a config file's ``[run]`` table sets."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices["train"]._actions
            if a.dest not in NOT_IN_FILE and a.dest not in TRAIN_FLAGS}


def _run_value(action: argparse.Action, value, where: str):
    """A ``[run]`` table's value for ``action``, checked as the command line checks its text."""
    from .train.loggers import logger_names

    if action.dest == "log":
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in items):
            raise ProtstoreError(f"{where} must be a logger name or a list of them, not {value!r}")
        try:
            return [n for v in items for n in logger_names(v)]
        except ProtstoreError as exc:
            raise ProtstoreError(f"{where}: {exc}") from None
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise ProtstoreError(f"{where} must be true or false, not {value!r}")
        return value
    if action.dest == "storage_options" and isinstance(value, dict):
        import json

        return json.dumps(value)
    kind = _VALUE_KINDS.get(action.type, (action.type.__doc__ or "a value").strip())
    numeric = action.type is not None and action.type is not str
    if isinstance(value, bool) or not isinstance(value, (int, float) if numeric else str):
        raise ProtstoreError(f"{where} must be {kind}, not {value!r}")
    try:
        value = action.type(str(value)) if numeric else value
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise ProtstoreError(f"{where} {exc}" if isinstance(exc, argparse.ArgumentTypeError)
                             else f"{where} must be {kind}, not {value!r}") from None
    if action.choices is not None and value not in action.choices:
        raise ProtstoreError(f"{where} must be one of ({', '.join(map(str, action.choices))}), "
                             f"not {value!r}")
    return value


def train_options(args) -> tuple[dict, dict]:
    """(TrainConfig fields, the command's other options) of a ``protstore train`` command
    line: its ``--config`` file (TOML, YAML or JSON: TrainConfig keys at the top level, the
    command's options in a ``[run]`` table, named as their flags with ``_`` for ``-``), with
    the flags given on the command line over it (``--model-option`` per key)."""
    from .store.location import parse_storage_options
    from .train.config import RUN_TABLE, check_fields, read_config_file, split_config_file
    from .train.config import unknown_key

    actions = _train_actions()
    fields, table = {}, {}
    if args.config:
        where = args.config
        doc = read_config_file(where, parse_storage_options(args.storage_options))
        fields, table = split_config_file(doc, where)
        for key in fields:
            if key in actions:
                raise ProtstoreError(f"{where}: {key} is an option of the command: put it in "
                                     f"the [{RUN_TABLE}] table")
        check_fields(fields, where)
        for key, value in table.items():
            if key not in actions:
                if key in TRAIN_FLAGS.values():
                    raise ProtstoreError(f"{where}: {RUN_TABLE}.{key} is a training setting: "
                                         f"put it at the top level, before [{RUN_TABLE}]")
                raise unknown_key(where, key, actions, prefix=f"{RUN_TABLE}.")
            table[key] = _run_value(actions[key], value, f"{where}: {RUN_TABLE}.{key}")
    options = {}
    for key, action in actions.items():
        given = getattr(args, key)
        if key == "log" and given is not None:
            given = [name for names in given for name in names]
        unset = given is None or given is False  # not `in (None, False)`: 0 == False
        options[key] = table.get(key, action.default) if unset else given
    for flag, other in (("resume", "out"), ("out", "resume")):  # the file's run yields
        if getattr(args, flag) is not None and getattr(args, other) is None:
            options[other] = None
    for dest, field in TRAIN_FLAGS.items():
        given = getattr(args, dest)
        if dest == "model_option":
            given = _model_options(given)
            if given is not None:
                given = {**fields.get("model_options", {}), **given}
        if given is not None:
            fields[field] = given
    return fields, options


def _train(args) -> int:
    import json

    fields, options = train_options(args)
    for key, value in options.items():  # what the file gives, the flags did not
        setattr(args, key, value)
    if not args.store or not args.plan:
        raise ProtstoreError(f"give the {'store (STORE' if not args.store else 'plan (--plan'} "
                             f"on the command line, or {'store' if not args.store else 'plan'} "
                             f"in the config file's [run] table)")
    if args.coordinator or args.num_processes or args.process_id is not None:
        from .train.processes import init_processes

        if not (args.coordinator and args.num_processes and args.process_id is not None):
            raise ProtstoreError("multi-process training needs all of --coordinator HOST:PORT, "
                                 "--num-processes N and --process-id I")
        init_processes(args.coordinator, args.num_processes, args.process_id)

    from .store.schemas import check_document
    from .train import TrainConfig, train

    store = _open(args)
    plan = store.plan(args.plan)
    if bool(args.out) == bool(args.resume):
        raise ProtstoreError("give exactly one of --out RUN_DIR (a new run) or --resume RUN_DIR")
    if args.resume:
        _same_config(as_location(args.resume, store.storage_options), fields)
        result = train(store, plan, args.resume, resume=True, model=fields.get("model"),
                       progress=not args.no_progress, loggers=args.log)
    else:
        config = TrainConfig.from_dict(fields, args.config or "the command line")
        priors = None
        if args.priors:
            try:
                priors = json.loads(as_location(args.priors, store.storage_options)
                                    .read_bytes(""))
            except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
                raise ProtstoreError(f"{args.priors}: cannot read priors ({exc})") from None
            check_document(priors, "priors", args.priors)
        record = {k: v for k, v in options.items() if k not in NOT_RECORDED}
        result = train(store, plan, args.out, config, priors=priors,
                       temperature=args.temperature, progress=not args.no_progress,
                       loggers=args.log or [], options={**record, "config": args.config})
    v = result.final_val_rmse
    print(f"trained {result.steps} steps ({result.compilations} compilation(s) of the train step); "
          f"final validation force RMSE per component: "
          f"{'n/a' if v is None else f'{v:.4f}'} kcal/mol/Å; outputs in {result.run_dir}")
    return 0


def _same_config(run_dir, fields: dict) -> None:
    """A resumed run keeps its ``config.json``: a setting given again must agree with it."""
    from .train import TrainConfig

    if not run_dir.exists("config.json"):
        return  # not a run: train says so
    run = TrainConfig.of_run(run_dir / "config.json").to_dict()
    for key, value in fields.items():
        if key != "model" and run[key] != value:  # model: train confirms or refuses it
            raise ProtstoreError(f"{run_dir}: the run trains with {key} = {run[key]!r}, not "
                                 f"{value!r}; a resumed run keeps its config.json")


def _ema(args) -> int:
    from .ema import compute_ema

    from .store.location import parse_storage_options

    options = parse_storage_options(args.storage_options)
    compute_ema(as_location(args.source, options), as_location(args.out, options),
                decay=args.decay, decay_per=args.decay_per, debias=args.debias,
                from_step=args.from_step, to_step=args.to_step,
                pkl=as_location(args.pkl, options) if args.pkl else None)
    return 0


def _import_checkpoints(args) -> int:
    from .ema import import_checkpoints

    written = import_checkpoints(args.dir, args.out, allow_pickle=args.allow_pickle,
                                 steps_per_epoch=args.steps_per_epoch)
    print(f"imported {len(written)} checkpoints into {args.out}")
    return 0


def _evaluate(args) -> int:
    from .evaluate import evaluate

    store = _open(args)
    plan = store.plan(args.plan) if args.plan else None
    evaluate(store, args.params, args.out, mode=args.mode, plan=plan, split=args.split,
             proteins=args.proteins, n_frames=args.n_frames, seed=args.seed,
             address=args.scheduler, workers=args.workers, model_id=args.model_id,
             allow_pickle=args.allow_pickle, model=args.model, frame_block=args.frame_block,
             progress=not args.no_progress)
    return 0


def _compare(args) -> int:
    """``protstore compare``: thin; everything is in :func:`protstore.compare.compare`."""
    from .compare import compare

    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
    compare(_open(args), args.trajectories, labels=labels, burn_in=args.burn_in,
            allow_incomplete=args.allow_incomplete, n_bins=args.bins, tica=not args.no_tica,
            tica_lag=args.tica_lag, out=args.out, overwrite=args.overwrite, echo=print)
    return 0


def _simulate(args) -> int:
    from .simulate import SimulateConfig, simulate
    from .store.location import parse_storage_options

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


def _positive_int(text: str) -> int:
    """a positive integer"""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _loggers(text: str) -> list[str]:
    from .train.loggers import logger_names

    try:
        return logger_names(text)
    except ProtstoreError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    """0 or a positive integer"""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _positive_float(text: str) -> float:
    """a positive finite number"""
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, not {text}")
    return value


def _nonnegative_float(text: str) -> float:
    """a finite number >= 0"""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a non-negative finite number, not {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1), not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="protstore", description=__doc__)
    parser.add_argument("--version", action="version", version=f"protstore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, func, help):
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        if name not in ("demo", "demo-data", "import-checkpoints"):
            p.add_argument("--storage-options", metavar="JSON",
                           help="fsspec options of the locations given as URLs (store, "
                                "run directory, outputs: credentials, endpoint_url...), beyond "
                                "the standard environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID...)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        return p

    p = command("ingest", _ingest,
                "ingest mdCATH HDF5 / NPZ files / MD trajectories with forces into a store")
    p.add_argument("sources", nargs="+", metavar="SRC",
                   help=".h5 (mdCATH layout) or .npz files, or MD trajectories with forces "
                        "(.trr, .nc/.ncdf, .h5md, .lammpstrj/.dump, .tng; with --topology)")
    p.add_argument("--topology", metavar="FILE",
                   help="topology of the MD trajectories (TPR, GRO, PDB, PRMTOP, PSF, LAMMPS "
                        "data, ...; read with MDAnalysis, pip install 'protstore[mda]')")
    p.add_argument("--format", metavar="FMT",
                   help="read the sources as MD trajectories in this MDAnalysis format (TRR, "
                        "NCDF, H5MD, LAMMPSDUMP, ...; default: from the suffix)")
    p.add_argument("--store", required=True, help="store directory (created if missing)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="ingest the files on the workers of this dask.distributed scheduler "
                        "(tcp://...); they must reach the store and the files")
    p.add_argument("--temperatures", type=_positive_int, nargs="+", metavar="K",
                   help="mdCATH temperatures to take (default: all)")
    p.add_argument("--replicas", type=_count, nargs="+", metavar="R",
                   help="mdCATH replicas to take (default: all)")
    p.add_argument("--strict", action="store_true",
                   help="fail a protein on any bad frame instead of excluding the frame")
    p.add_argument("--overwrite", action="store_true",
                   help="replace proteins already in the store")
    p.add_argument("--allow-pickle", action="store_true",
                   help="read NPZ files holding pickled objects (only for files you trust)")
    p.add_argument("--allow-unknown", action="store_true",
                   help="map unknown residue names to the UNK species instead of failing")
    p.add_argument("--id", help="protein id for a single per-protein NPZ file or MD trajectory")
    p.add_argument("--length-units", metavar="UNIT",
                   help="unit of NPZ positions (or of MD trajectories whose reader knows none): "
                        "angstrom (default) or nm; converted to Å")
    p.add_argument("--force-units", metavar="UNIT",
                   help="unit of NPZ forces (or of MD trajectories whose reader knows none, "
                        "e.g. LAMMPS dumps): kcal/mol/angstrom (default), kJ/mol/nm, "
                        "kJ/mol/angstrom, kcal/mol/nm, eV/angstrom, hartree/bohr; converted to "
                        "kcal/mol/Å. Undeclared units are checked by physics")
    p.add_argument("--temperature", type=_positive_float, metavar="K",
                   help="temperature of NPZ data that does not store one, and of MD "
                        "trajectories")

    p = command("info", _info, "summarise a store (metadata only)")
    p.add_argument("store")

    p = command("validate", _validate,
                "check metadata against the schemas and every chunk's invariants")
    p.add_argument("store")
    p.add_argument("--repair", action="store_true",
                   help="first remove unfinished staging groups and make the catalog list "
                        "exactly the complete protein groups")

    p = command("bucket", _bucket, "compute, store and print a length-bucket plan")
    p.add_argument("store")
    p.add_argument("--bucket-boundaries", type=_positive_int, nargs="+", metavar="N",
                   help="inclusive upper bounds, e.g. 100 200: N<=100, 100<N<=200, N>200")
    p.add_argument("--n-buckets", type=_positive_int, default=3, help="number of buckets (default 3)")
    p.add_argument("--strategy", choices=["equal-count", "optimal"], default="equal-count")
    p.add_argument("--cost", choices=["linear", "pair"], default="linear",
                   help="cost of a padded frame: N_max (linear) or N_max^2 (pair)")
    p.add_argument("--max-waste", type=_fraction, metavar="FRACTION",
                   help="choose the number of buckets: the fewest whose optimal waste <= this")
    p.add_argument("--pad-multiple", type=_positive_int, metavar="K", help="round N_max up to a multiple")
    p.add_argument("--name", default="default", help="plan name (default: 'default')")
    p.add_argument("--split", choices=SPLITS, default="protein",
                   help="hold out whole proteins (default), blocks of every protein's runs "
                        "(frame) or whole runs of every protein (run)")
    p.add_argument("--val-fraction", type=_fraction, default=0.2)
    p.add_argument("--test-fraction", type=_fraction, default=0.0,
                   help="also hold out a test part (proteins, blocks or runs, as the split "
                        "does): best/ is chosen on validation, evaluate reports test")
    p.add_argument("--block-frames", type=_positive_int, metavar="N",
                   help=f"--split frame: hold out contiguous blocks of N frames of each run "
                        f"(default: {BLOCK_TAU:g} autocorrelation times of the run, so that "
                        f"<= {LEAKAGE_TARGET:.0%}% of held-out frames lie within one of a "
                        f"training frame; {BLOCK_FRAMES} when the store has no times)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a plan of the same name")

    p = command("export-npz", _export_npz,
                "write bucket_N####.npz files in the predecessor's combined format")
    p.add_argument("store")
    p.add_argument("--plan", default="default")
    p.add_argument("--out", required=True)
    p.add_argument("--split", choices=["all", "train", "val", "test"], default="all")
    p.add_argument("--pickle-objects", action="store_true",
                   help="write object arrays and aa_to_id dicts as the predecessor did")

    from .export import FORMATS, SPLITS as EXPORT_SPLITS

    p = command("export", _export,
                "write a plan's frames as an HDF5 file of torchmd-net (its HDF5 dataset) or "
                "mlcg (its H5Dataset); Å and kcal/mol/Å")
    p.add_argument("store")
    p.add_argument("--plan", required=True)
    p.add_argument("--format", required=True, choices=tuple(FORMATS))
    p.add_argument("--out", required=True, metavar="URL", help="the HDF5 file (path or URL)")
    p.add_argument("--split", choices=EXPORT_SPLITS, default="all",
                   help="the plan's frames to export (default: all)")
    p.add_argument("--bucket", type=_count, metavar="K", help="only bucket K (default: all)")
    p.add_argument("--prior-delta", metavar="PRIORS.json",
                   help="also write the forces minus these priors' forces (from fit-priors): "
                        "torchmd-net's forces then hold them (ref_forces the stored ones), "
                        "mlcg's cg_delta_forces")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")

    p = command("fit-priors", _fit_priors,
                "fit the prior terms by Boltzmann inversion on a plan's training split")
    p.add_argument("store")
    p.add_argument("--plan", required=True)
    p.add_argument("--out", required=True, metavar="PRIORS.json",
                   help="fitted parameters (JSON); a PNG of the fit is written beside it")
    p.add_argument("--max-frames", type=_positive_int, default=20000, help="training frames to sample")
    p.add_argument("--temperature", type=_positive_float, metavar="K",
                   help="temperature of the frames stored without one (NPZ sources); without "
                        "it such frames are refused")
    p.add_argument("--only-temperature", type=_positive_float, metavar="K",
                   help="fit on the frames at this temperature only (default: all, each at "
                        "its own temperature)")
    p.add_argument("--seed", type=int, default=0)

    p = command("train", _train, "train a CG force field (priors + network) by force matching")
    p.add_argument("store", nargs="?", metavar="STORE",
                   help="the store (or store in the config file's [run] table)")
    p.add_argument("--plan", help="the bucket plan (required, here or in the config file)")
    p.add_argument("--out", metavar="RUN_DIR", help="a new run directory")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--config", metavar="FILE",
                   help="a .toml, .yaml/.yml or .json file: TrainConfig keys, and the command's "
                        "other options in a [run] table (flags given here override it)")
    p.add_argument("--log", action="append", type=_loggers, metavar="NAME[,NAME]",
                   help="also log the metrics to: csv (RUN_DIR/metrics.csv), tensorboard "
                        "(RUN_DIR/tensorboard/, needs protstore[tensorboard]); repeatable; "
                        "with --resume: default the run's own")
    p.add_argument("--priors", metavar="PRIORS.json", help="from fit-priors (default: fit now)")
    p.add_argument("--temperature", type=_positive_float, metavar="K",
                   help="when fitting the priors: temperature of the frames stored without one")
    p.add_argument("--schedule", choices=["interleaved", "sequential"])
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--batch-beads", type=_positive_int, metavar="N",
                   help="instead of --batch-size: max(1, N // N_max) samples per batch in each "
                        "bucket (about equal cost per step, equal weight per bead)")
    p.add_argument("--lr", type=_positive_float, help="peak learning rate")
    p.add_argument("--weight-decay", type=_nonnegative_float, metavar="W",
                   help="AdamW weight decay (default 1e-4)")
    p.add_argument("--loss-weighting", choices=LOSS_WEIGHTINGS,
                   help="bead (default): every real bead weighs the same in an epoch; frame: "
                        "every step's loss is its own beads' mean (short proteins weigh more)")
    p.add_argument("--early-stopping", type=_count, metavar="EPOCHS",
                   help="end after this many validated epochs without a lower validation RMSE "
                        "(default 0: never; best/ is chosen on validation either way)")
    p.add_argument("--seed", type=int)
    p.add_argument("--checkpoint-every", type=_count, metavar="STEPS",
                   help="also checkpoint every N steps (always at epoch ends)")
    p.add_argument("--model", metavar="PACKAGE.MODULE:FACTORY",
                   help="learned energy (default protstore.model.network:schnet); with --resume, "
                        "confirms a plug-in model named in the run's config.json")
    p.add_argument("--model-option", action="append", metavar="KEY=VALUE",
                   help="keyword option of the model factory (JSON value), repeatable")
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   help="multi-process training: the address process 0 serves (JAX's "
                        "multi-process runtime); every process runs the same command")
    p.add_argument("--num-processes", type=_positive_int, metavar="N")
    p.add_argument("--process-id", type=_count, metavar="I", help="0..N-1; 0 writes the run")

    p = command("ema", _ema, "exponential moving average of parameters over stored checkpoints")
    p.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINTS")
    p.add_argument("--out", required=True, help="the EMA checkpoint group to write")
    p.add_argument("--decay", type=float, default=0.999, help="per-step (or per-checkpoint) decay")
    p.add_argument("--decay-per", choices=["step", "checkpoint"], default="step",
                   help="step: d^Δ between checkpoints Δ steps apart (default); checkpoint: d "
                        "once per checkpoint (the predecessor's convention)")
    p.add_argument("--debias", action=argparse.BooleanOptionalAction, default=True,
                   help="remove the weight left on the first checkpoint (default: on)")
    p.add_argument("--from-step", type=int)
    p.add_argument("--to-step", type=int)
    p.add_argument("--pkl", metavar="PATH", help="also pickle the nested params dict here")

    p = command("import-checkpoints", _import_checkpoints,
                "convert the predecessor's epoch*.pkl checkpoints into Zarr checkpoint groups")
    p.add_argument("dir")
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    p.add_argument("--allow-pickle", action="store_true",
                   help="required: unpickling runs code from the files (only for files you trust)")
    p.add_argument("--steps-per-epoch", type=_positive_int,
                   help="store step = epoch x this (else the step is the epoch number)")

    p = command("evaluate", _evaluate,
                "force errors of a trained model: overall or per residue (dask-parallel)")
    p.add_argument("store")
    p.add_argument("--params", required=True, metavar="CHECKPOINT",
                   help="a checkpoint group (training, final/best, EMA) or, with --allow-pickle, "
                        "a params.pkl")
    p.add_argument("--mode", choices=["per-residue", "full", "prior-only", "ml-only"],
                   default="per-residue")
    p.add_argument("--plan", help="bucket plan: its split and bucket shapes")
    p.add_argument("--split", choices=["test", "val", "train", "all"],
                   help="frames to evaluate (default with --plan: test when the plan holds a "
                        "test part out, else val; without: all)")
    p.add_argument("--proteins", nargs="+", metavar="ID")
    p.add_argument("--n-frames", type=_positive_int, metavar="N", help="at most N frames per protein")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="dask.distributed scheduler (tcp://...); default: local threads")
    p.add_argument("--workers", type=_count, help="local threads (0: serial)")
    p.add_argument("--frame-block", type=_positive_int, default=32, help="frames per task")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--model-id", help="prefix of the output files (default: the params' name)")
    p.add_argument("--model", metavar="PACKAGE.MODULE:FACTORY",
                   help="the model that reads the params: needed for a params.pkl (default "
                        "protstore's network) and for a checkpoint of a plug-in model, whose "
                        "stored factory is never imported unless named here")
    p.add_argument("--allow-pickle", action="store_true",
                   help="read a params.pkl (runs code from the file; only files you trust)")

    p = command("simulate", _simulate,
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
    p = command("compare", _compare,
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

    p = command("demo-data", _demo_data, "generate the demo data set (mdCATH-layout HDF5)")
    p.add_argument("out")
    p.add_argument("--lengths", type=_positive_int, nargs="+", default=[24, 45, 73, 118, 167, 236])
    p.add_argument("--frames", type=_positive_int, default=100, help="frames per run")
    p.add_argument("--seed", type=int, default=0)

    p = command("demo", _demo, "the end-to-end demo on generated data")
    p.add_argument("--out", default="demo-output")
    return parser


#: Options that name a local file or directory, per command: a URL there is refused, never
#: turned into a local folder named "s3:". Every other location (stores, run directories,
#: checkpoints, priors, configs, evaluation and EMA outputs) may be a URL.
LOCAL_PATHS = {"export-npz": ("out",), "import-checkpoints": ("dir", "out"),
               "demo": ("out",), "demo-data": ("out",)}


def _check_local_paths(args) -> None:
    for name in LOCAL_PATHS.get(args.command, ()):
        value = getattr(args, name, None)
        if isinstance(value, str) and value.startswith("file://"):
            setattr(args, name, value.removeprefix("file://"))
        elif isinstance(value, str) and "://" in value:
            raise ProtstoreError(f"--{name} {value}: a URL; {args.command} writes local files "
                                 f"only (give a local path)")


def _one_line_warning(show):
    """``warnings.showwarning`` that prints protstore's own warnings as one line, no source."""
    def showwarning(message, category, filename, lineno, file=None, line=None):
        if "protstore" in Path(filename).parts:
            print(f"protstore: warning: {message}", file=file or sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)
    return showwarning


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():  # restores the session's showwarning afterwards
            warnings.showwarning = _one_line_warning(warnings.showwarning)
            _check_local_paths(args)
            return args.func(args)
    except ProtstoreError as exc:
        print(f"protstore: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("protstore: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback (unless asked for)
        if os.environ.get("PROTSTORE_DEBUG"):
            raise
        if isinstance(exc, OSError) and exc.strerror:
            what = exc.strerror + (f": {exc.filename}" if exc.filename else "")
        else:
            what = f"unexpected {type(exc).__name__}: {exc} (PROTSTORE_DEBUG=1 shows where)"
        print(f"protstore: error: {what}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
