"""Training commands: fit-priors, train (config files, several processes), ema,
import-checkpoints."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import ProtstoreError
from ..location import as_location
from ..train.config import FLAG_NAMES, LOSS_WEIGHTINGS, PACKINGS
from .common import (_count, _loggers, _nonnegative_float, _open, _positive_float,
                     _positive_int, add_command)


def _fit_priors(args) -> int:
    from ..train.priors import fit_priors_to_file

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
    "packing", "early_stopping", "seed", "checkpoint_every", "model", "model_option")}


#: what a config file's ``[run]`` table cannot set: the file itself
NOT_IN_FILE = ("help", "config")


#: what run.json does not record of the command's options (they may hold credentials)
NOT_RECORDED = ("storage_options",)


_VALUE_KINDS = {None: "a string", int: "an integer", float: "a number"}


def _train_actions() -> dict[str, argparse.Action]:
    """dest -> action of the ``protstore train`` options a config file's ``[run]`` table sets."""
    sub = argparse.ArgumentParser().add_subparsers()
    add_commands(sub)
    return {a.dest: a for a in sub.choices["train"]._actions
            if a.dest not in NOT_IN_FILE and a.dest not in TRAIN_FLAGS}


def _run_value(action: argparse.Action, value, where: str):
    """A ``[run]`` table's value for ``action``, checked as the command line checks its text."""
    from ..train.loggers import logger_names

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
    from ..location import parse_storage_options
    from ..train.config import RUN_TABLE, check_fields, read_config_file, split_config_file
    from ..train.config import unknown_key

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
    fields, options = train_options(args)
    for key, value in options.items():  # what the file gives, the flags did not
        setattr(args, key, value)
    if not args.store or not args.plan:
        raise ProtstoreError(f"give the {'store (STORE' if not args.store else 'plan (--plan'} "
                             f"on the command line, or {'store' if not args.store else 'plan'} "
                             f"in the config file's [run] table)")
    if args.coordinator or args.num_processes or args.process_id is not None:
        from ..train.processes import init_processes

        if not (args.coordinator and args.num_processes and args.process_id is not None):
            raise ProtstoreError("multi-process training needs all of --coordinator HOST:PORT, "
                                 "--num-processes N and --process-id I")
        init_processes(args.coordinator, args.num_processes, args.process_id)
        try:
            return _train_run(args, fields, options)
        except BaseException as exc:  # noqa: BLE001 - every way out of a multi-process run
            _leave_processes(args, exc)
    return _train_run(args, fields, options)


def _leave_processes(args, exc: BaseException) -> None:
    """End this process of a multi-process run that failed: one line, then ``os._exit``, since
    JAX's shutdown at interpreter exit waits for the dead peers at a barrier and then aborts the
    process with a native stack dump."""
    if isinstance(exc, ProtstoreError):
        what = str(exc)
    elif isinstance(exc, KeyboardInterrupt):
        what = "interrupted"
    elif type(exc).__name__ != "JaxRuntimeError":  # not the runtime: say what it was
        if os.environ.get("PROTSTORE_DEBUG"):
            import traceback

            traceback.print_exception(exc)
        first = (str(exc).strip().splitlines() or [""])[0]
        what = (f"process {args.process_id} of {args.num_processes}: unexpected "
                f"{type(exc).__name__}: {first[:300]} (PROTSTORE_DEBUG=1 shows where)")
    else:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        what = (f"process {args.process_id} of {args.num_processes}: the training processes "
                f"lost each other ({type(exc).__name__}: {first[:200]}): another process died "
                f"or its connection broke; committed checkpoints stay: start every process "
                f"again with --resume RUN_DIR")
    print(f"protstore: error: {what}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130 if isinstance(exc, KeyboardInterrupt) else 1)


def _train_run(args, fields: dict, options: dict) -> int:
    import json

    from ..schemas import check_document
    from ..train import TrainConfig, train

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
    from ..train import TrainConfig

    if not run_dir.exists("config.json"):
        return  # not a run: train says so
    run = TrainConfig.of_run(run_dir / "config.json").flat()
    for key, value in fields.items():
        if key != "model" and run[key] != value:  # model: train confirms or refuses it
            raise ProtstoreError(f"{run_dir}: the run trains with {key} = {run[key]!r}, not "
                                 f"{value!r}; a resumed run keeps its config.json")


def _ema(args) -> int:
    from ..ema import compute_ema

    from ..location import parse_storage_options

    options = parse_storage_options(args.storage_options)
    compute_ema(as_location(args.source, options), as_location(args.out, options),
                decay=args.decay, decay_per=args.decay_per, debias=args.debias,
                from_step=args.from_step, to_step=args.to_step,
                pkl=as_location(args.pkl, options) if args.pkl else None)
    return 0


def _import_checkpoints(args) -> int:
    from ..legacy import import_checkpoints

    written = import_checkpoints(args.dir, args.out, allow_pickle=args.allow_pickle,
                                 steps_per_epoch=args.steps_per_epoch)
    print(f"imported {len(written)} checkpoints into {args.out}")
    return 0


def add_commands(sub) -> None:
    """Register the training commands on ``sub`` (the parser's subparsers)."""
    p = add_command(sub, "fit-priors", _fit_priors,
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
    p = add_command(sub, "train", _train,
                    "train a CG force field (priors + network) by force matching")
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
    p.add_argument("--packing", choices=PACKINGS,
                   help="auto (default): pack several whole frames into a padded sample when it "
                        "saves 10%% of the steps; on; off")
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
    p = add_command(sub, "ema", _ema,
                    "exponential moving average of parameters over stored checkpoints")
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
    p = add_command(sub, "import-checkpoints", _import_checkpoints,
                    "convert the predecessor's epoch*.pkl checkpoints into Zarr checkpoint groups")
    p.add_argument("dir")
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    p.add_argument("--allow-pickle", action="store_true",
                   help="required: unpickling runs code from the files (only for files you trust)")
    p.add_argument("--steps-per-epoch", type=_positive_int,
                   help="store step = epoch x this (else the step is the epoch number)")
