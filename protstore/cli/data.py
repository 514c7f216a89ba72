"""Data commands: ingest, info, validate, log, gc, bucket, export-npz, export."""

from __future__ import annotations

from ..batching.plan import BLOCK_FRAMES, BLOCK_TAU, LEAKAGE_TARGET
from ..batching.spec import COSTS, SPLITS, STRATEGIES, PlanSpec
from ..errors import ProtstoreError
from ..selection import FIELDS, INGEST_FIELDS
from .common import _count, _fraction, _open, _positive_float, _positive_int, add_command


def _ingest(args) -> int:
    from ..ingest import IngestOptions, ingest

    options = IngestOptions(
        temperatures=tuple(args.temperatures) if args.temperatures else None,
        replicas=tuple(args.replicas) if args.replicas else None,
        strict=args.strict, overwrite=args.overwrite, allow_pickle=args.allow_pickle,
        allow_unknown=args.allow_unknown, protein_id=args.id, temperature=args.temperature,
        length_units=args.length_units, force_units=args.force_units,
        topology=args.topology, md_format=args.format, break_claims=args.break_claim,
        selection=_selection(args))
    if args.id is not None:
        from ..store import check_protein_id

        check_protein_id(args.id)
        if len(args.sources) > 1:
            raise ProtstoreError("--id names one protein; give exactly one source file with it")
    store = _open(args, "a")
    if args.scheduler:
        from ..cluster import connect

        with connect(args.scheduler) as client:
            report = ingest(args.sources, store, options, progress=not args.no_progress,
                            client=client)
    else:
        report = ingest(args.sources, store, options, progress=not args.no_progress)
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


def _info(args) -> int:
    from ..report import store_info

    print(store_info(_open(args)))
    return 0


def _validate(args) -> int:
    from ..batching.verify import verify_plans
    from ..store.verify import verify_store

    if args.repair:
        store = _open(args, "r+")
        for line in [*store.recover_staging(), *store.rebuild_catalog()]:
            print(f"repair: {line}")
    store = _open(args)
    findings = [*verify_store(store, progress=not args.no_progress), *verify_plans(store)]
    for f in findings:
        print(f)
    errors = sum(f.level == "error" for f in findings)
    print(f"validate: {len(store.proteins)} proteins checked, {errors} error(s), "
          f"{len(findings) - errors} warning(s)")
    return 1 if errors else 0


def _log(args) -> int:
    from ..store.versions import log_lines

    lines = log_lines(_open(args))
    for line in lines:
        print(line)
    if not lines:
        print(f"{args.store}: no store versions (no commit yet, or a format-1 store)")
    return 0


def _gc(args) -> int:
    from ..store import collect_garbage

    lines = collect_garbage(_open(args, "r+"), keep=args.keep, keep_since=args.keep_since,
                            dry_run=not args.yes)
    for line in lines:
        print(line)
    if not lines:
        print("gc: nothing to remove")
    elif not args.yes:
        print("gc: a dry run; pass --yes to remove these")
    return 0


def _selection(args):
    """The --select / --stride / --max-frames-per-run of a command, as one Selection (None:
    none given)."""
    from ..selection import Selection

    chosen = Selection(args.select, args.stride, getattr(args, "max_frames_per_run", None))
    return None if chosen.everything else chosen


def _bucket(args) -> int:
    from ..batching import plan_from_store, save_plan

    store = _open(args, "r+")
    source = _open(args) if args.store_version else store  # the plan is saved in the store
    spec = PlanSpec(
        name=args.name, boundaries=args.bucket_boundaries, n_buckets=args.n_buckets,
        strategy=args.strategy, cost=args.cost, pad_multiple=args.pad_multiple,
        max_waste=args.max_waste, split=args.split, val_fraction=args.val_fraction,
        test_fraction=args.test_fraction, seed=args.seed, block_frames=args.block_frames,
        selection=_selection(args))
    plan = plan_from_store(source, spec, progress=not args.no_progress)
    save_plan(store, plan, overwrite=args.overwrite)
    print(plan.table())
    if plan.selection is not None and len(plan.proteins) < len(source.proteins):
        print(f"the selection keeps no frame of {len(source.proteins) - len(plan.proteins)} of "
              f"the store's {len(source.proteins)} proteins: they are not in the plan")
    print(f"saved as plans/{plan.name} in {args.store}")
    return 0


def _export_npz(args) -> int:
    from ..batching import load_plan
    from ..batching.export import export_npz

    store = _open(args)
    for path in export_npz(store, load_plan(store, args.plan), args.out, split=args.split,
                           pickle_objects=args.pickle_objects):
        print(path)
    return 0


def _export(args) -> int:
    from ..export import export

    store = _open(args)
    print(export(store, args.plan, args.out, args.format, split=args.split, bucket=args.bucket,
                 priors=args.prior_delta, overwrite=args.overwrite,
                 progress=not args.no_progress).line())
    return 0


def add_commands(sub) -> None:
    """Register the data commands on ``sub`` (the parser's subparsers)."""
    p = add_command(sub, "ingest", _ingest,
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
    p.add_argument("--break-claim", action="store_true",
                   help="object storage: take over proteins whose write claim is live, when you "
                        "know their writer is dead (a live one then commits nothing)")
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
    p.add_argument("--select", metavar="EXPR",
                   help=f"ingest only the proteins (and mdCATH runs) for which this pandas "
                        f"query condition holds, over {', '.join(INGEST_FIELDS)}, e.g. "
                        f"\"n_residues <= 300 and temperature in (320, 348)\"")
    p.add_argument("--stride", type=_positive_int, default=1, metavar="K",
                   help="keep only the source frames whose number is a multiple of K "
                        "(default 1: all)")
    p = add_command(sub, "info", _info, "summarise a store (metadata only)")
    p.add_argument("store")
    p = add_command(sub, "validate", _validate,
                    "check metadata against the schemas and every chunk's invariants")
    p.add_argument("store")
    p.add_argument("--repair", action="store_true",
                   help="first remove unfinished staging groups and make the catalog list "
                        "exactly the complete protein groups")
    p = add_command(sub, "log", _log, "list the store's versions, newest first, with what each "
                    "commit changed")
    p.add_argument("store")
    p = add_command(sub, "gc", _gc, "remove the old proteins' data and catalog history no kept "
                    "store version reads (a dry run unless --yes)")
    p.add_argument("store")
    keep = p.add_mutually_exclusive_group(required=True)
    keep.add_argument("--keep", type=_positive_int, metavar="N",
                      help="keep the N newest store versions")
    keep.add_argument("--keep-since", metavar="TIME",
                      help="keep the versions committed at or after TIME (YYYY-MM-DD or "
                           "YYYY-MM-DDTHH:MM:SS, UTC unless a zone is given); the newest always")
    p.add_argument("--yes", action="store_true", help="remove (default: only say what would go)")
    p = add_command(sub, "bucket", _bucket, "compute, store and print a length-bucket plan")
    p.add_argument("store")
    p.add_argument("--bucket-boundaries", type=_positive_int, nargs="+", metavar="N",
                   help="inclusive upper bounds, e.g. 100 200: N<=100, 100<N<=200, N>200")
    p.add_argument("--n-buckets", type=_positive_int, default=PlanSpec.n_buckets,
                   help=f"number of buckets (default {PlanSpec.n_buckets})")
    p.add_argument("--strategy", choices=STRATEGIES[1:], default=PlanSpec.strategy)
    p.add_argument("--cost", choices=sorted(COSTS), default=PlanSpec.cost,
                   help="cost of a padded frame: N_max (linear) or N_max^2 (pair)")
    p.add_argument("--max-waste", type=_fraction, metavar="FRACTION",
                   help="choose the number of buckets: the fewest whose optimal waste <= this")
    p.add_argument("--pad-multiple", type=_positive_int, metavar="K", help="round N_max up to a multiple")
    p.add_argument("--name", default=PlanSpec.name, help=f"plan name (default: {PlanSpec.name!r})")
    p.add_argument("--split", choices=SPLITS, default=PlanSpec.split,
                   help="hold out whole proteins (default), blocks of every protein's runs "
                        "(frame) or whole runs of every protein (run)")
    p.add_argument("--val-fraction", type=_fraction, default=PlanSpec.val_fraction,
                   help=f"default {PlanSpec.val_fraction:g}")
    p.add_argument("--test-fraction", type=_fraction, default=PlanSpec.test_fraction,
                   help="also hold out a test part (proteins, blocks or runs, as the split "
                        "does): best/ is chosen on validation, evaluate reports test")
    p.add_argument("--block-frames", type=_positive_int, metavar="N",
                   help=f"--split frame: hold out contiguous blocks of N frames of each run "
                        f"(default: {BLOCK_TAU:g} autocorrelation times of the run, so that "
                        f"<= {LEAKAGE_TARGET:.0%}% of held-out frames lie within one of a "
                        f"training frame; {BLOCK_FRAMES} when the store has no times)")
    p.add_argument("--seed", type=int, default=PlanSpec.seed)
    p.add_argument("--overwrite", action="store_true", help="replace a plan of the same name")
    p.add_argument("--select", metavar="EXPR",
                   help=f"use only the frames for which this pandas query condition holds, "
                        f"over {', '.join(FIELDS)}, e.g. \"n_residues <= 300 and temperature "
                        f"in (320, 348)\" (docs/reference.md: selections)")
    p.add_argument("--stride", type=_positive_int, default=1, metavar="K",
                   help="use every K-th stored frame of each run (default 1: all)")
    p.add_argument("--max-frames-per-run", type=_positive_int, metavar="M",
                   help="use at most M evenly spaced frames of each run (after --stride and "
                        "--select)")
    p = add_command(sub, "export-npz", _export_npz,
                    "write bucket_N####.npz files in the predecessor's combined format")
    p.add_argument("store")
    p.add_argument("--plan", default="default")
    p.add_argument("--out", required=True)
    p.add_argument("--split", choices=["all", "train", "val", "test"], default="all")
    p.add_argument("--pickle-objects", action="store_true",
                   help="write object arrays and aa_to_id dicts as the predecessor did")
    from ..export import FORMATS, SPLITS as EXPORT_SPLITS

    p = add_command(sub, "export", _export,
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
