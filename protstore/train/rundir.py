"""A training run's directory: its files, checkpoints and metrics, how a resume finds where the
run stands, and what a finished run writes and reports (the epoch loop is
:mod:`protstore.train.loop`).

    RUN_DIR/
      run.json            store, plan, devices, protstore version
      config.json         the TrainConfig (its sha256 is in every checkpoint)
      priors.json         the priors used (fitted by Boltzmann inversion unless given)
      metrics.jsonl       one line per epoch: train loss, validation RMSE overall and per bucket
      metrics.csv         the same lines as CSV (``loggers=["csv"]``, ``--log csv``)
      tensorboard/        TensorBoard event files (``loggers=["tensorboard"]``)
      checkpoints/        step_00001200/, ...: params + optimizer state (Zarr; step 0: the init)
      final/ best/        params of the last step and of the best validation epoch
      params.pkl          the final params as a nested dict of NumPy arrays
      loss_curve.png
      diverged/           a non-finite state, kept for inspection (never a checkpoint)

A new run refuses a non-empty directory; a resumed one keeps its ``config.json``, ``priors.json``
and plan, and goes on from its last checkpoint (:meth:`RunDir.resume_point`). Only process 0
writes (:func:`~protstore.train.processes.is_main`); every process reads.
"""

from __future__ import annotations

import json
import math
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import jax
import numpy as np

from .._version import __version__
from ..batching import BucketPlan
from ..checkpoints import (CHECKPOINTS_DIR, CheckpointError, checkpoint_name, list_checkpoints,
                           read_checkpoint, write_checkpoint)
from ..errors import ConfigError, ProtstoreError
from ..location import Location
from ..model.energy import trusted_model
from ..model.fit import PRIORS_DOC, priors_from_doc, priors_to_doc
from ..schemas import dumps_document
from ..store import Store
from .config import TrainConfig
from .loggers import MetricsLogger, open_loggers
from .priors import fit_priors_to_file, write_priors
from .processes import barrier, is_main

#: what a finished run holds besides ``final/``: a resume writes whichever is missing
FINISHED_OUTPUTS = ("best", "params.pkl", "loss_curve.png")


@dataclass
class Position:
    """Where a run is: phase, epochs completed in it, next step of the epoch, global step."""

    phase: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    step: int = 0

    @classmethod
    def of(cls, attrs: dict) -> "Position":
        """The position a checkpoint's attrs record."""
        return cls(attrs["phase"], attrs["epoch"], attrs["step_in_epoch"], attrs["step"])


class ResumePoint(NamedTuple):
    """The checkpoint a resume starts from: its path, attrs and position, and all of the
    run's checkpoints (``RunDir.checkpoints``)."""

    path: Location
    attrs: dict
    position: Position
    checkpoints: list


# ---------------------------------------------------------------------- opening a run directory
def recorded_loggers(out: Location) -> list:
    """The logger names a run recorded in its ``run.json`` (a resume without loggers uses them
    again), none when there is no ``run.json``."""
    return out.read_json("run.json").get("loggers", []) if out.exists("run.json") else []


def open_for_resume(out: Location, plan: BucketPlan, model: str | None
                    ) -> tuple[TrainConfig, dict]:
    """The config and prior params of the run in ``out``, refused unless it is a run trained
    on ``plan`` whose model is built in or named again (``model``)."""
    for name in ("config.json", "priors.json", "run.json"):
        if not out.exists(name):
            raise ProtstoreError(f"{out}: not a training run (no {name})")
    run_doc = out.read_json("run.json")
    if run_doc["plan"] != plan.name:
        raise ProtstoreError(f"{out}: the run trained on plan {run_doc['plan']!r}, "
                             f"not {plan.name!r}")
    config = TrainConfig.of_run(out / "config.json")
    if model is not None and model != config.model:
        raise ConfigError(f"{out}: the run trains model {config.model!r}, not {model!r}")
    trusted_model(config.model, model, str(out / "config.json"))
    return config, priors_from_doc(out.read_json("priors.json"))


def create(out: Location, store: Store, plan: BucketPlan, config: TrainConfig,
           priors: dict | None, *, temperature: float | None, loggers: Sequence,
           options: dict | None, echo: Callable[[str], None]) -> dict:
    """Write a new run's ``priors.json`` (fitted on the plan's training split unless
    ``priors`` is given: a priors document or prior params), ``config.json`` and ``run.json``
    into the empty directory ``out`` (process 0; the others wait for it); returns the prior
    params."""
    if out.listdir():
        raise ProtstoreError(f"{out}: run directory exists and is not empty (each run has its "
                             "own directory; use --resume to continue it)")
    barrier("run-directory-checked")  # by every process, before process 0 writes to it
    if not is_main():
        barrier("run-directory-written")
        return priors_from_doc(out.read_json("priors.json"))
    out.mkdir()
    if priors is None:
        echo("fitting priors by Boltzmann inversion on the training split")
        priors = fit_priors_to_file(store, plan, out / "priors.json", seed=config.seed,
                                    unknown_temperature=temperature)
    else:
        priors = (dict(priors) if priors.get("format") == PRIORS_DOC  # fit-priors' JSON
                  else priors_to_doc(priors, None, plan=plan.name, created_by="given as params"))
        write_priors(priors, out / "priors.json")
    params = priors_from_doc(priors)
    out.write_bytes("config.json", (dumps_document(
        config.to_dict(), "train_config", str(out / "config.json")) + "\n").encode())
    run_doc = {"store": store.url, "store_version": store.version, "plan": plan.name,
               "created_by": f"protstore {__version__}",
               "devices": [str(d) for d in jax.devices()], "config_hash": config.hash(),
               "loggers": [name for name in loggers if isinstance(name, str)]}
    if options is not None:
        run_doc["options"] = options
    out.write_bytes("run.json", (dumps_document(run_doc, "run", str(out / "run.json"))
                                 + "\n").encode())
    barrier("run-directory-written")
    return params


# ---------------------------------------------------------------------- the directory of a run
class RunDir:
    """The directory of one run (module docstring): checkpoints with their attrs, metrics lines
    and loggers, the run's wall clock, and the export of a finished run."""

    def __init__(self, out: Location, config: TrainConfig, n_buckets: int, *,
                 echo: Callable[[str], None] = print,
                 loggers: Sequence[str | MetricsLogger] = ()):
        self.dir, self.config, self.n_buckets, self.echo = out, config, n_buckets, echo
        self.logger_specs = list(loggers)
        self.loggers: list[MetricsLogger] | None = None  # opened by open_loggers
        self.wall0 = 0.0  # wall time of the run before this process took it up (a resume)
        self.t_start = time.perf_counter()

    @property
    def model_doc(self) -> dict:
        return self.config.model_spec.to_doc()

    def wall(self) -> float:
        return self.wall0 + time.perf_counter() - self.t_start

    def bucket(self, pos: Position) -> int | None:
        """The bucket ``pos`` trains (sequential schedule), None when all are mixed."""
        return pos.phase if self.config.schedule == "sequential" else None

    # ------------------------------------------------------------------ checkpoints
    def attrs(self, kind: str, pos: Position, **extra) -> dict:
        return {"kind": kind, "step": pos.step, "epoch": pos.epoch,
                "step_in_epoch": pos.step_in_epoch, "phase": pos.phase,
                "bucket": self.bucket(pos),
                "wall_time_s": round(self.wall(), 3), "config_hash": self.config.hash(),
                "model": self.model_doc, "source": self.dir.address, **extra}

    def save(self, state, pos: Position, **extra) -> None:
        """``state`` (params and optimizer state) as the checkpoint of ``pos`` (process 0)."""
        if is_main():
            write_checkpoint(self.dir / CHECKPOINTS_DIR / checkpoint_name(pos.step),
                             state.params, self.attrs("checkpoint", pos, **extra),
                             opt_state=state.opt_state)

    def save_diverged(self, params, pos: Position) -> Location:
        """``params`` kept in ``diverged/`` (once per step, process 0); returns the place."""
        where = self.dir / "diverged" / checkpoint_name(pos.step)
        if is_main() and not where.exists("zarr.json"):
            write_checkpoint(where, params, self.attrs("diverged", pos))
        return where

    def checkpoints(self) -> list:
        """The run's valid checkpoints by step (``list_checkpoints``, warnings echoed)."""
        return list_checkpoints(self.dir, warn=lambda m: self.echo(f"warning: {m}"))

    def resume_point(self) -> ResumePoint | None:
        """Where a resume starts: the last checkpoint, its ``config_hash`` checked against
        ``config.json``; None when there is none yet."""
        found = self.checkpoints()
        if not found:
            return None
        path, attrs = found[-1]
        if attrs.get("config_hash") != self.config.hash():
            raise CheckpointError(f"{path}: written with a different config.json")
        return ResumePoint(path, attrs, Position.of(attrs), found)

    @property
    def finished(self) -> bool:
        """Whether the run has finished training (its ``final/`` is written)."""
        return self.dir.exists("final/zarr.json")

    def missing_outputs(self) -> list[str]:
        return [n for n in FINISHED_OUTPUTS if not self.dir.exists(n)]

    # ------------------------------------------------------------------ metrics
    def metrics_line(self, pos: Position, train_loss: float | None, val: dict, *, frames: int,
                     elapsed: float, wait: float) -> dict:
        """The metrics.jsonl line of a validated position (step 0, or an epoch's end)."""
        return {"phase": pos.phase, "bucket": self.bucket(pos),
                "epoch": pos.epoch, "step": pos.step, "train_loss": train_loss,
                "train_rmse": math.sqrt(train_loss) if train_loss is not None else None, **val,
                "frames": frames, "frames_per_s": frames / elapsed if elapsed and frames else None,
                "data_wait_s": wait, "epoch_time_s": elapsed, "wall_time_s": self.wall()}

    def write_metrics(self, line: dict) -> None:
        """``line`` appended to ``metrics.jsonl``, then given to every logger (process 0)."""
        text = dumps_document(line, "metrics", str(self.dir / "metrics.jsonl"), indent=None)
        if is_main():
            self.open_loggers()
            self.dir.append_text("metrics.jsonl", text + "\n")
            for logger in self.loggers:
                logger.log(dict(line))

    def open_loggers(self) -> None:
        """The loggers, opened once on process 0 (the registered ones with ``metrics.jsonl`` as
        it stands: the resumed position's lines)."""
        if self.loggers is None and is_main():
            self.loggers = []  # a logger failing to open leaves none half-open
            self.loggers = open_loggers(self.logger_specs, self.dir, self.read_metrics(),
                                        self.n_buckets)

    def close_loggers(self) -> None:
        for logger in self.loggers or ():
            logger.close()
        self.loggers = None

    def read_metrics(self) -> list[dict]:
        try:
            text = self.dir.read_bytes("metrics.jsonl").decode()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def clear_metrics(self) -> None:
        """Remove ``metrics.jsonl`` (a run restarted from step 0; process 0)."""
        if is_main():
            self.dir.remove("metrics.jsonl")

    def restore_metrics(self, found: list, last_step: int) -> None:
        """Rewrite ``metrics.jsonl`` as the lines up to ``last_step``, each epoch-end line that a
        kill kept out of it taken from its checkpoint (atomically: a reader sees the old file
        or the new one)."""
        by_step = {m["step"]: m for m in self.read_metrics() if m["step"] <= last_step}
        for _, attrs in found:
            if "metrics" in attrs and attrs["step"] <= last_step:
                by_step.setdefault(attrs["step"], attrs["metrics"])
        text = "".join(dumps_document(by_step[s], "metrics", str(self.dir / "metrics.jsonl"),
                                      indent=None) + "\n" for s in sorted(by_step))
        if is_main():
            self.dir.write_bytes("metrics.jsonl", text.encode())

    # ------------------------------------------------------------------ export
    def export(self, params) -> tuple[int | None, float | None, dict]:
        """Write what a finished run holds and is missing: ``final/`` (from ``params``, or read
        back when a resumed run already wrote it), ``best/``, ``params.pkl``, the loss curve
        (process 0 writes; every process returns the best step, its validation RMSE and the
        last attrs)."""
        barrier("trained")  # process 0's last checkpoint is written
        found = self.checkpoints()
        _, last = found[-1]
        self.restore_metrics(found, last["step"])
        self.open_loggers()  # a resumed finished run: the loggers' files follow metrics.jsonl
        keep = {k: last.get(k) for k in ("val_rmse", "val_rmse_per_bucket", "train_loss")
                if k in last}
        pos = Position.of(last)
        if self.finished:
            final = read_checkpoint(self.dir / "final").params
        else:
            final = jax.device_get(params)
            if is_main():
                write_checkpoint(self.dir / "final", final, self.attrs("final", pos, **keep))
        scored = [(a["val_rmse"], p, a) for p, a in found if a.get("val_rmse") is not None]
        best_step = best_val = None
        if scored:
            # the earliest step of the lowest figure: a later step must beat it, not tie it
            best_val, best_path, best = min(scored, key=lambda t: (t[0], t[2]["step"]))
            best_step = best["step"]
            if is_main() and not self.dir.exists("best/zarr.json"):
                write_checkpoint(self.dir / "best", read_checkpoint(best_path).params,
                                 self.attrs("best", Position.of(best), val_rmse=best["val_rmse"],
                                            val_rmse_per_bucket=best.get("val_rmse_per_bucket",
                                                                         {})))
        if is_main():
            self.dir.write_bytes("params.pkl", pickle.dumps(jax.tree.map(np.asarray, final)))
            plot_metrics(self.read_metrics(), self.dir / "loss_curve.png", self.config.schedule)
        barrier("exported")
        return best_step, best_val, last


# ---------------------------------------------------------------------- the report
def plot_metrics(metrics: list[dict], path, schedule: str) -> None:
    """Loss curve: training RMSE and validation RMSE (overall and per bucket) against step, and
    the priors alone (step 0) as a line to beat."""
    from ..plotting import new_figure, save_figure

    fig = new_figure((7, 4.2))
    ax = fig.subplots()
    steps = [m["step"] for m in metrics]
    trained = [m for m in metrics if m["train_rmse"] is not None]
    ax.plot([m["step"] for m in trained], [m["train_rmse"] for m in trained], "o-",
            label="train (epoch mean)")
    priors = next((m["val_rmse"] for m in metrics if m["step"] == 0), None)
    if priors is not None:
        ax.axhline(priors, color="0.4", ls=":", label="validation, priors alone (step 0)")
    if any(m["val_rmse"] is not None for m in metrics):
        ax.plot(steps, [m["val_rmse"] for m in metrics], "s-", lw=2, label="validation, all")
        buckets = sorted({k for m in metrics for k in m["val_rmse_per_bucket"]}, key=int)
        for k in buckets:
            ax.plot(steps, [m["val_rmse_per_bucket"].get(k) for m in metrics], "--", alpha=0.7,
                    label=f"validation, bucket {k}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("force RMSE per component (kcal/mol/Å)")
    ax.set_title(f"Force matching ({schedule} schedule)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def against_priors(priors_val: float | None, best_step: int | None, best_val: float | None,
                   final_val: float | None) -> list[str]:
    """What a run's validation figures say against its priors alone (step 0): the lines the
    run ends with (none when step 0 was not validated: nothing held out, or a run from before
    protstore 0.7)."""
    if priors_val is None or best_val is None:
        return []
    lines = []
    if best_step == 0:
        lines.append(f"warning: the network never beat the priors on validation (priors alone "
                     f"{priors_val:.4f} kcal/mol/Å per component, no later step lower); best/ "
                     f"holds step 0: the priors with a zero learned energy")
    else:
        lines.append(f"best/ (step {best_step}): val RMSE {best_val:.4f}, "
                     f"{100 * (1 - best_val / priors_val):.2f}% below the priors alone "
                     f"({priors_val:.4f})")
    if final_val is not None and final_val > priors_val:
        lines.append(f"warning: final/ validates worse than the priors alone ({final_val:.4f} > "
                     f"{priors_val:.4f}); use best/")
    return lines
