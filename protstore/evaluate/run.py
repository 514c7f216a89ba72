"""``protstore evaluate``: errors computed once (dask graph -> Zarr), then reduced and reported."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dask
import numpy as np
import xarray as xr
import zarr

from ..batching import BucketPlan
from ..errors import ConfigError, ProtstoreError
from ..model.energy import MODES
from ..store import Store
from ..location import as_location
from ..store.quiet import quiet_zarr
from ..store.versions import warn_if_changed
from ..schemas import dumps_document
from ..vocab import PAD_ID, VOCABULARY
from .compute import error_dataset, select
from .config import EvalConfig
from .params import ModelParams, load_params
from .reduce import overall_metrics, per_residue_tables
from .report import overall_text, per_residue_text, plot_overall, plot_per_residue

@contextlib.contextmanager
def scheduler(address: str | None = None, workers: int | None = None, progress: bool = False):
    """Where the dask graph runs: ``address`` of a dask.distributed scheduler, else local
    threads (``workers`` of them; ``workers=0`` runs serially in this thread)."""
    if address:
        from ..cluster import connect

        with connect(address):
            yield
        return
    config = {"scheduler": "synchronous"} if workers == 0 else {"scheduler": "threads",
                                                                  "num_workers": workers}
    with dask.config.set(config):
        if progress and sys.stdout.isatty():  # a bar redrawn with \r floods a log file
            from dask.diagnostics import ProgressBar
            with ProgressBar(minimum=2.0):
                yield
        else:
            yield


@dataclass
class PerResidueResult:
    """What ``compute_per_residue_errors`` returns (the fields of the predecessor's plan, now
    one row per protein, plus the xarray results).

    rmse_per_atom [P, N_max] float: per-bead RMSE (vector norm, kcal/mol/Å), NaN on padding;
    species [P, N_max] int (PAD_ID on padding); mask [P, N_max] float (1 real);
    aa_names: species id -> name (the fixed vocabulary); proteins [P];
    dataset: the (sample, atom) error Dataset; tables: per_bead, by_resname, by_position,
    by_position_from_c, by_protein, by_temperature.
    """

    rmse_per_atom: np.ndarray
    species: np.ndarray
    mask: np.ndarray
    aa_names: list[str]
    proteins: list[str]
    dataset: xr.Dataset
    tables: dict = field(default_factory=dict)


def compute_per_residue_errors(store: Store, params: ModelParams | str | Path, *,
                               plan: BucketPlan | None = None, split: str = "val",
                               proteins: list[str] | None = None, n_frames: int | None = None,
                               seed: int = 0, mode: str = "full", frame_block: int = 32,
                               save_to: str | Path | None = None, address: str | None = None,
                               workers: int | None = None, model: str | None = None,
                               progress: bool = False) -> PerResidueResult:
    """Per-residue force errors of ``params`` on the selected frames (see PerResidueResult).

    ``params``: loaded params, or a checkpoint path (its model: ``model`` if given, else the
    stored one if built in; see :func:`~protstore.evaluate.params.load_params`). With
    ``save_to`` the error Dataset is written there as Zarr (streamed, each task computed once)
    and reduced from it; otherwise it is computed into memory.
    """
    if not isinstance(params, ModelParams):
        params = load_params(params, model=model)
    if mode not in MODES:
        raise ProtstoreError(f"mode must be one of {MODES}, not {mode!r}")
    selection = select(store, plan=plan, split=split, proteins=proteins, n_frames=n_frames,
                       seed=seed)
    ds = error_dataset(store, selection, params.params, model=params.model, mode=mode,
                       frame_block=frame_block)
    with scheduler(address, workers, progress):
        if save_to is not None:
            save_to = as_location(save_to, store.storage_options)
            save_to.remove("", recursive=True)
            chunked = ds.chunk({"sample": frame_block, "atom": -1, "xyz": -1})
            # the string coordinates stay NumPy: a dask array of objects is computed twice
            chunked = chunked.assign_coords(protein=ds.protein, xyz=ds.xyz)
            with quiet_zarr():
                chunked.to_zarr(save_to.url, mode="w-", consolidated=True,
                                storage_options=save_to.storage_options or None)
            ds = xr.open_zarr(save_to.url, storage_options=save_to.storage_options or None)
            ds = ds.assign_coords({k: ds[k].compute() for k in ("protein", "frame",
                                                                 "temperature", "bucket")})
        else:
            ds = ds.compute()
        tables = per_residue_tables(ds)
    beads = tables["per_bead"]
    names = [s.protein for s in selection]
    n_all = ds.sizes["atom"]
    rmse = np.full((len(names), n_all), np.nan)
    species = np.full((len(names), n_all), PAD_ID, np.int32)
    mask = np.zeros((len(names), n_all), np.float32)
    row = {p: i for i, p in enumerate(names)}
    r = np.array([row[p] for p in beads["protein"].values])
    a = beads["atom"].values
    rmse[r, a] = beads["rmse"].values
    species[r, a] = beads["species"].values
    mask[r, a] = 1.0
    return PerResidueResult(rmse, species, mask, list(VOCABULARY), names, ds, tables)


def run_of(params_path, storage_options: dict | None = None) -> tuple[str, dict] | None:
    """(run directory, its ``run.json``) of a checkpoint inside a training run (``RUN/final``,
    ``RUN/best``, ``RUN/checkpoints/step_N``); None for anything else."""
    url = str(as_location(params_path, storage_options).url).rstrip("/")
    parent = url.rpartition("/")[0]
    for run in (parent, parent.rpartition("/")[0] if parent.endswith("/checkpoints") else None):
        if not run:
            continue
        try:
            return run, as_location(run, storage_options).read_json("run.json")
        except (OSError, ValueError):  # no run.json, or one that does not decode: not a run
            continue
    return None


def evaluate(store: Store, params_path: str | Path, out: str | Path,
             config: EvalConfig = EvalConfig(), *, plan: BucketPlan | None = None,
             progress: bool = True, echo: Callable[[str], None] = print) -> dict:
    """Evaluate ``params_path`` (a checkpoint group, or a ``params.pkl`` with
    ``config.allow_pickle``) as ``config`` says and write the outputs of its mode into ``out``;
    returns their paths and numbers.

    ``plan``: the bucket plan whose split and bucket shapes to use (``store.plan(name)``, or one
    made in memory); none: every frame of the store, each protein padded to its own length.
    ``config.split`` None: with a plan, its test part when it holds one out (``best/`` was chosen
    on validation, so test is the figure that has not been looked at), else validation; without
    a plan, every frame."""
    if not isinstance(config, EvalConfig):
        raise ConfigError(f"config must be an EvalConfig, not {type(config).__name__}")
    mode, split, seed = config.mode, config.split, config.seed
    if split is None:
        split = ("test" if plan.split.has_test else "val") if plan is not None else "all"
    params = load_params(params_path, allow_pickle=config.allow_pickle, model=config.model)
    if plan is not None:
        run = run_of(params_path, store.storage_options)
        if run is not None and run[1].get("store_version"):  # what training read, after the plan
            warn_if_changed(store, run[1]["store_version"], plan.proteins, f"the run in {run[0]}")
        else:
            warn_if_changed(store, plan.store_version, plan.proteins, f"plan {plan.name!r}")
    if split not in ("val", "test"):
        echo(f"warning: evaluating the {split!r} frames, which include training frames; "
             "held-out frames (--plan NAME --split test or val) measure generalisation")
    model_id = config.model_id or as_location(params_path).name.replace(".pkl", "")
    out = as_location(out, store.storage_options)
    out.mkdir()
    energy_mode = "full" if mode == "per-residue" else mode
    stem = f"{model_id}_{mode.replace('-', '_')}"
    zarr_path = out / f"{stem}_errors.zarr"
    result = compute_per_residue_errors(
        store, params, plan=plan, split=split,
        proteins=list(config.proteins) if config.proteins is not None else None,
        n_frames=config.n_frames, seed=seed, mode=energy_mode, frame_block=config.frame_block,
        save_to=zarr_path, address=config.address, workers=config.workers, progress=progress)
    ds = result.dataset
    n_samples = ds.sizes["sample"]
    paths = {"errors": zarr_path}
    metrics = overall_metrics(ds)
    if mode == "per-residue":
        for name, table in result.tables.items():
            with quiet_zarr():
                table.to_zarr(zarr_path.url, group=f"tables/{name}", mode="w",
                              consolidated=False, storage_options=out.storage_options or None)
        with quiet_zarr():
            zarr.consolidate_metadata(zarr_path.zarr_store(read_only=False))
        text = per_residue_text(result.tables, model_id=model_id, mode=energy_mode,
                                n_samples=n_samples)
        paths["table"] = out / f"{model_id}_per_residue_rmse.txt"
        paths["plot"] = out / f"{model_id}_per_residue_rmse.png"
        paths["table"].write_bytes("", text.encode())
        plot_per_residue(result.tables, paths["plot"], model_id=model_id)
        by = result.tables["by_resname"].sortby("rmse_pooled", ascending=False)
        echo(f"per-residue force RMSE (vector norm, pooled) of {model_id} on {n_samples} frames: "
             f"hardest {by.resname.values[0]} {float(by.rmse_pooled[0]):.3f}, easiest "
             f"{by.resname.values[-1]} {float(by.rmse_pooled[-1]):.3f} kcal/mol/Å")
    else:
        paths["table"] = out / f"{stem}_forces.txt"
        paths["plot"] = out / f"{stem}_forces.png"
        paths["table"].write_bytes("", overall_text(metrics, model_id=model_id, mode=mode,
                                                    n_samples=n_samples).encode())
        plot_overall(ds, metrics, paths["plot"], model_id=model_id, mode=mode, seed=seed)
        echo(f"{mode} model {model_id}: force RMSE per component {metrics['rmse_component']:.4f}, "
             f"vector {metrics['rmse_vector']:.4f}, MAE per component "
             f"{metrics['mae_component']:.4f} kcal/mol/Å on {n_samples} frames")
    summary = {"model_id": model_id, "mode": mode, "params": str(params_path), "split": split,
               "n_frames": n_samples, **metrics, "store": store.url,
               "store_version": store.version}
    text = dumps_document(summary, "eval_metrics", str(out / f"{stem}_metrics.json"))
    out.write_bytes(f"{stem}_metrics.json", (text + "\n").encode())
    echo("wrote " + ", ".join(str(p) for p in paths.values()))
    return {"paths": paths, "metrics": metrics, "result": result}
