"""A training run: its directory, the epoch loop over bucket schedules, validation, metrics,
checkpoints, resume and the final export.

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

Resume continues from the last checkpoint with its optimizer state and loader position
(``loader.epoch(e, start_step=s)``), so an interrupted run ends with the same params as an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from .. import __version__
from ..batching import BatchLoader, BucketPlan, LoaderConfig
from ..batching.loader import bucket_batch_size
from ..checkpoints import (CHECKPOINTS_DIR, CheckpointError, checkpoint_name, is_finite,
                           list_checkpoints, read_checkpoint, write_checkpoint)
from ..errors import ConfigError, ProtstoreError, TrainingDiverged
from ..model.energy import (batch_neighbor_census, load_model, neighbor_overflow, total_energy,
                           trusted_model)
from ..model.fit import (PRIORS_DOC, check_temperatures, fit_priors_to_file, priors_from_doc,
                         priors_to_doc, write_priors)
from ..store import Store
from ..store.location import as_location
from ..store.schemas import dumps_document
from .config import TrainConfig
from .loggers import MetricsLogger, check_loggers, open_loggers
from .processes import barrier, is_main
from .step import DataParallel, TrainState, make_eval_step, make_optimizer, make_train_step


@dataclass
class Position:
    """Where a run is: phase, epochs completed in it, next step of the epoch, global step."""

    phase: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    step: int = 0


@dataclass
class TrainResult:
    run_dir: Path | str  # a local Path, or the URL
    final_val_rmse: float | None
    final_val_rmse_per_bucket: dict
    best_step: int | None
    steps: int
    compilations: int
    metrics: list = field(default_factory=list)
    priors_val_rmse: float | None = None  # step 0: the priors alone (learned energy zero)
    best_val_rmse: float | None = None


def force_rms(loader: BatchLoader, n_batches: int = 8) -> float:
    """RMS of the reference force components (kcal/mol/Å) over the first batches of epoch 0."""
    total, count = 0.0, 0.0
    for i, batch in enumerate(loader.epoch(0)):
        w = batch["mask"] * batch["sample_mask"][:, None]
        total += float(np.sum(w[..., None] * batch["F"].astype(np.float64) ** 2))
        count += 3.0 * float(w.sum())
        if i + 1 >= n_batches:
            break
    return math.sqrt(total / count) if count else 1.0


def densest_neighbors(store: Store, plan: BucketPlan, batch_size: int = 32
                      ) -> Callable[[float], int]:
    """``largest(cutoff)``: the most beads any bead has within ``cutoff`` (Å) over every
    frame of the plan, held-out parts included (one pass through the loader per cutoff asked,
    one compilation per bucket shape): what a network sizes its neighbour capacity from, so
    that no frame training, validation or evaluation sees overflows it (a smoothness bound,
    not a fitted quantity)."""
    from ..model.network import densest

    found: dict[float, int] = {}

    def largest(cutoff: float) -> int:
        if cutoff not in found:
            count = jax.jit(jax.vmap(lambda R, mask: densest(R, mask, cutoff)))
            most = 0
            for split in ("train", "val", "test"):
                loader = BatchLoader(store, plan, LoaderConfig(
                    batch_size=batch_size, order="sequential", split=split, shuffle=False,
                    last="pad"))
                for batch in loader.epoch(0):
                    counts = np.asarray(count(batch["R"], batch["mask"]))
                    most = max(most, int(np.max(np.where(batch["sample_mask"] > 0, counts, 0))))
            found[cutoff] = most
        return found[cutoff]

    return largest


def validate(evaluate: Callable, params, loader: BatchLoader | None, place,
             check: Callable[[dict, dict], None] = lambda params, batch: None) -> dict:
    """Validation force RMSE per component (kcal/mol/Å), overall and per bucket; ``check``
    (params, batch) sees every batch first (the neighbour-capacity check)."""
    if loader is None:
        return {"val_rmse": None, "val_rmse_per_bucket": {}}
    sums: dict[int, list[float]] = {}
    for batch in loader.epoch(0):
        check(params, batch)
        sq, n = evaluate(params, place(batch))
        acc = sums.setdefault(batch["bucket"], [0.0, 0.0])
        acc[0] += float(sq)
        acc[1] += float(n)
    per = {str(k): math.sqrt(s / (3 * n)) if n else None for k, (s, n) in sorted(sums.items())}
    s, n = sum(v[0] for v in sums.values()), sum(v[1] for v in sums.values())
    return {"val_rmse": math.sqrt(s / (3 * n)) if n else None, "val_rmse_per_bucket": per}


class Run:
    """One run directory (see the module docstring)."""

    def __init__(self, out: str | Path, store: Store, plan: BucketPlan, config: TrainConfig,
                 priors: dict, *, progress: bool = True, echo: Callable[[str], None] = print,
                 loggers: Sequence[str | MetricsLogger] = ()):
        self.dir = as_location(out)
        self.logger_specs = list(loggers)
        self.loggers: list[MetricsLogger] | None = None  # opened by open_loggers
        self.store, self.plan, self.config, self.priors = store, plan, config, priors
        self.progress, self.echo = progress, echo
        self.model = load_model(config.model, config.model_options)
        self.energy = total_energy(self.model)
        self.placement = DataParallel(sorted({
            bucket_batch_size(self._loader_config(), b.n_max) for b in plan.buckets}))
        self.evaluate = make_eval_step(self.energy)
        self.census = batch_neighbor_census(self.model)
        self.compilations = 0  # of the train step, summed over phases
        self._epoch_losses = (0.0, 0)  # (sum, steps) of the epoch a mid-epoch resume continues
        self._loaders: dict[int, BatchLoader] = {}
        self.wall0 = 0.0
        self.t_start = time.perf_counter()
        self.n_phases = len(plan.buckets) if config.schedule == "sequential" else 1
        has_val = any(len(plan.split.frames(p, plan.frames[p], "val")) for p in plan.proteins)
        self.val_loader = BatchLoader(store, plan, self._loader_config(
            order="sequential", split="val", shuffle=False, last="pad")) if has_val else None

    # ------------------------------------------------------------------ files
    @property
    def model_doc(self) -> dict:
        return {"factory": self.config.model, "options": dict(self.config.model_options)}

    def loader(self, phase: int) -> BatchLoader:
        """The training loader of ``phase``, made once (it keeps its proteins open)."""
        if phase not in self._loaders:
            cfg = self.config
            self._loaders[phase] = BatchLoader(self.store, self.plan, self._loader_config(
                buckets=(phase,) if cfg.schedule == "sequential" else None))
        return self._loaders[phase]

    def _loader_config(self, **changes) -> LoaderConfig:
        """The loader of this run's config (training split, interleaved), with ``changes``."""
        cfg = self.config
        base = LoaderConfig(batch_size=cfg.batch_size, batch_beads=cfg.batch_beads,
                            order="interleaved", split="train", seed=cfg.seed,
                            buffer_chunks=cfg.buffer_chunks, prefetch=cfg.prefetch)
        return dataclasses.replace(base, **changes)

    def wall(self) -> float:
        return self.wall0 + time.perf_counter() - self.t_start

    def attrs(self, kind: str, pos: Position, **extra) -> dict:
        return {"kind": kind, "step": pos.step, "epoch": pos.epoch,
                "step_in_epoch": pos.step_in_epoch, "phase": pos.phase,
                "bucket": pos.phase if self.config.schedule == "sequential" else None,
                "wall_time_s": round(self.wall(), 3), "config_hash": self.config.hash(),
                "model": self.model_doc, "source": self.dir.address, **extra}

    def save(self, state: TrainState, pos: Position, **extra) -> None:
        if not is_finite(state.params):
            self.diverged(state, pos, "the parameters are not finite")
        if is_main():
            write_checkpoint(self.dir / CHECKPOINTS_DIR / checkpoint_name(pos.step),
                             state.params, self.attrs("checkpoint", pos, **extra),
                             opt_state=state.opt_state)

    def check_neighbors(self, params, batch: dict) -> None:
        """Refuse a batch in which a bead has more neighbours within the model's cutoff than its
        capacity (the energy would not be smooth there), naming the protein and frame."""
        if self.census is None:
            return
        counts, capacity = self.census(params, batch["R"], batch["mask"])
        real = batch["sample_mask"] > 0
        i = neighbor_overflow(np.where(real, counts, 0), capacity)
        if i is not None:
            pid = self.plan.proteins[batch["protein_index"][i]]
            raise ConfigError(
                f"protein {pid} frame {int(batch['frame'][i])}: a bead has {int(counts[i])} "
                f"beads within the network's cutoff, more than its {int(capacity[i])} neighbour "
                f"slots (the energy would jump when neighbours swap); train with "
                f"--model-option max_neighbors=M, M >= {int(counts[i])}")

    def validate(self, params, pos: Position) -> dict:
        """Validation RMSEs of ``params`` (every batch checked for neighbour capacity first);
        a non-finite figure is a divergence."""
        val = validate(self.evaluate, params, self.val_loader, self.placement.batch,
                       self.check_neighbors)
        if val["val_rmse"] is not None and not math.isfinite(val["val_rmse"]):
            self.diverged(TrainState(params, None), pos,
                          f"the validation RMSE is {val['val_rmse']}")
        return val

    def metrics_line(self, pos: Position, train_loss: float | None, val: dict, *, frames: int,
                     elapsed: float, wait: float) -> dict:
        """The metrics.jsonl line of a validated position (step 0, or an epoch's end)."""
        return {"phase": pos.phase,
                "bucket": pos.phase if self.config.schedule == "sequential" else None,
                "epoch": pos.epoch, "step": pos.step, "train_loss": train_loss,
                "train_rmse": math.sqrt(train_loss) if train_loss is not None else None, **val,
                "frames": frames, "frames_per_s": frames / elapsed if elapsed and frames else None,
                "data_wait_s": wait, "epoch_time_s": elapsed, "wall_time_s": self.wall()}

    def stop_early(self, pos: Position) -> bool:
        """Whether the phase has gone ``early_stopping_patience`` validated epochs without a
        lower validation RMSE than its best (never, when the patience is 0 or nothing is
        validated)."""
        patience = self.config.early_stopping_patience
        if not patience:
            return False
        vals = [m["val_rmse"] for m in self.read_metrics()
                if m["phase"] == pos.phase and m["val_rmse"] is not None]
        if len(vals) <= patience:
            return False
        best = int(np.argmin(vals))
        if len(vals) - 1 - best < patience:
            return False
        self.echo(f"early stopping: no lower validation RMSE than {vals[best]:.3f} in the last "
                  f"{patience} epochs (phase {pos.phase}, epoch {pos.epoch})")
        return True

    def diverged(self, state: TrainState, pos: Position, what: str):
        where = self.dir / "diverged" / checkpoint_name(pos.step)
        if is_main() and not where.exists("zarr.json"):
            write_checkpoint(where, state.params, self.attrs("diverged", pos))
        raise TrainingDiverged(
            f"{self.dir}: training diverged at step {pos.step} (phase {pos.phase}, epoch "
            f"{pos.epoch + 1}): {what}; the state is kept in {where}, resume from the last "
            "checkpoint with a lower learning rate")

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
                                        len(self.plan.buckets))

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

    # ------------------------------------------------------------------ start / resume
    def start(self) -> tuple[TrainState, Position]:
        """Fresh state (priors + initialised model), validated and saved as the step-0
        checkpoint: with a learned energy that starts at zero, step 0 is the priors alone, and
        ``best/`` is chosen among every validated step including it."""
        # every process must initialise the same parameters: the statistics come from the
        # whole of the first global batches, not from this process's share
        stats = {"force_rms": force_rms(BatchLoader(self.store, self.plan, self._loader_config(
                     process_index=0, process_count=1))),
                 "max_neighbors": densest_neighbors(self.store, self.plan,
                                                    self.config.batch_size)}
        model_params = self.model.init(jax.random.PRNGKey(self.config.seed), stats)
        params = {"prior": jax.tree.map(np.asarray, self.priors), "model": model_params}
        optimizer = make_optimizer(self.config, self.phase_steps(0))
        state = TrainState(params, optimizer.init(params))
        pos = Position()
        t0 = time.perf_counter()
        val = self.validate(state.params, pos)
        if val["val_rmse"] is None:  # nothing held out: no step-0 line
            self.save(state, pos, **val)
            return state, pos
        line = self.metrics_line(pos, None, val, frames=0, elapsed=time.perf_counter() - t0,
                                 wait=0.0)
        self.save(state, pos, metrics=line, **val)
        self.write_metrics(line)
        self.echo(f"step 0 (priors only): val RMSE {val['val_rmse']:.3f} kcal/mol/Å per "
                  "component")
        return state, pos

    def phase_steps(self, phase: int) -> int:
        return self.config.epochs * self.loader(phase).steps_per_epoch(0)

    def resume(self) -> tuple[TrainState, Position]:
        """The state and position of the last checkpoint (a run killed before its step-0
        checkpoint starts again from step 0), with ``metrics.jsonl`` made whole again."""
        found = list_checkpoints(self.dir, warn=lambda m: self.echo(f"warning: {m}"))
        if not found:
            self.echo(f"{self.dir}: no checkpoint yet; starting the run from step 0")
            if is_main():
                self.dir.remove("metrics.jsonl")
            return self.start()
        path, attrs = found[-1]
        if attrs.get("config_hash") != self.config.hash():
            raise CheckpointError(f"{path}: written with a different config.json")
        pos = Position(attrs["phase"], attrs["epoch"], attrs["step_in_epoch"], attrs["step"])
        optimizer = make_optimizer(self.config, self.phase_steps(pos.phase))
        ckpt = read_checkpoint(path, opt_template=optimizer.init)
        self.wall0 = attrs["wall_time_s"]
        self._epoch_losses = (attrs.get("epoch_loss_sum", 0.0), attrs.get("epoch_loss_steps", 0))
        self.restore_metrics(found, pos.step)
        self.echo(f"resuming from {path.name} (phase {pos.phase}, epoch {pos.epoch}, "
                  f"step {pos.step})")
        return TrainState(ckpt.params, ckpt.opt_state), pos

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

    # ------------------------------------------------------------------ the loop
    def train(self, state: TrainState, pos: Position) -> TrainState:
        from ..progress import progress_bar

        cfg = self.config
        state = self.placement.replicate(state)
        for phase in range(pos.phase, self.n_phases):
            loader = self.loader(phase)
            steps_per_epoch = loader.steps_per_epoch(0)
            optimizer = make_optimizer(cfg, cfg.epochs * steps_per_epoch)
            step_fn = make_train_step(self.energy, optimizer,
                                      loader.real_beads_per_step(0)
                                      if cfg.loss_weighting == "bead" else None)
            if phase != pos.phase:  # sequential: next bucket from these params, fresh optimizer
                pos = Position(phase, 0, 0, pos.step)
                state = self.placement.replicate(TrainState(state.params,
                                                            optimizer.init(state.params)))
            if steps_per_epoch == 0:
                self.echo(f"phase {phase}: no training batches, skipped")
                continue
            while pos.epoch < cfg.epochs and not self.stop_early(pos):
                state, pos = self.epoch(state, pos, loader, step_fn, steps_per_epoch,
                                           progress_bar)
            self.compilations += step_fn._cache_size()
        return state

    def epoch(self, state, pos, loader, step_fn, steps_per_epoch, progress_bar):
        cfg = self.config
        label = (f"bucket {pos.phase} " if cfg.schedule == "sequential" else "") + \
            f"epoch {pos.epoch + 1}/{cfg.epochs}"
        bar = progress_bar(total=steps_per_epoch, initial=pos.step_in_epoch, desc=label,
                           disable=not self.progress, leave=False)  # off a terminal: lines
        # the epoch's loss so far: carried over from the checkpoint a mid-epoch resume starts at
        loss_sum, loss_steps = self._epoch_losses if pos.step_in_epoch else (0.0, 0)
        self._epoch_losses = (0.0, 0)
        frames, wait, t0 = 0, 0.0, time.perf_counter()
        batches = loader.epoch(pos.epoch, start_step=pos.step_in_epoch)
        while True:
            t_wait = time.perf_counter()
            batch = next(batches, None)
            wait += time.perf_counter() - t_wait
            if batch is None:
                break
            self.check_neighbors(state.params, batch)
            state, loss = step_fn(state, self.placement.batch(batch))
            loss = float(loss)
            pos = Position(pos.phase, pos.epoch, pos.step_in_epoch + 1, pos.step + 1)
            if not math.isfinite(loss):
                self.diverged(state, pos, f"the loss is {loss}")
            loss_sum, loss_steps = loss_sum + loss, loss_steps + 1
            frames += int(batch["sample_mask"].sum()) * jax.process_count()  # equal shares
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3g}")
            every = cfg.checkpoint_every_steps
            if every and pos.step % every == 0 and pos.step_in_epoch < steps_per_epoch:
                self.save(state, pos, val_rmse=None, train_loss=loss_sum / loss_steps,
                          epoch_loss_sum=loss_sum, epoch_loss_steps=loss_steps)
        bar.close()
        elapsed = time.perf_counter() - t0
        val = self.validate(state.params, pos)
        pos = Position(pos.phase, pos.epoch + 1, 0, pos.step)
        train_loss = loss_sum / loss_steps if loss_steps else None
        line = self.metrics_line(pos, train_loss, val, frames=frames, elapsed=elapsed, wait=wait)
        # the line goes into the epoch-end checkpoint too: a kill before it reaches
        # metrics.jsonl loses nothing (resume writes it from there)
        self.save(state, pos, train_loss=train_loss, metrics=line, **val)
        self.write_metrics(line)
        v = val["val_rmse"]
        per = " ".join(f"b{k}={x:.3f}" for k, x in val["val_rmse_per_bucket"].items()
                       if x is not None)
        self.echo(f"{label}: step {pos.step}, train RMSE {line['train_rmse'] or float('nan'):.3f}, "
                  f"val RMSE {v if v is not None else float('nan'):.3f} ({per}) kcal/mol/Å per "
                  f"component; {frames / elapsed:.0f} frames/s, waited {wait:.2f} s for data")
        return state, pos

    # ------------------------------------------------------------------ export
    def export(self, state: TrainState | None) -> tuple[int | None, float | None, dict]:
        """Write what a finished run holds and is missing: ``final/`` (from ``state``, or read
        back when a resumed run already wrote it), ``best/``, ``params.pkl``, the loss curve
        (process 0 writes; every process returns the best step, its validation RMSE and the
        last attrs)."""
        barrier("trained")  # process 0's last checkpoint is written
        found = list_checkpoints(self.dir, warn=lambda m: self.echo(f"warning: {m}"))
        _, last = found[-1]
        self.restore_metrics(found, last["step"])
        self.open_loggers()  # a resumed finished run: the loggers' files follow metrics.jsonl
        keep = {k: last.get(k) for k in ("val_rmse", "val_rmse_per_bucket", "train_loss")
                if k in last}
        pos = Position(last["phase"], last["epoch"], last["step_in_epoch"], last["step"])
        if self.dir.exists("final/zarr.json"):
            final = read_checkpoint(self.dir / "final").params
        else:
            final = jax.device_get(state.params)
            if is_main():
                write_checkpoint(self.dir / "final", final, self.attrs("final", pos, **keep))
        scored = [(a["val_rmse"], p, a) for p, a in found if a.get("val_rmse") is not None]
        best_step = best_val = None
        if scored:
            # the earliest step of the lowest figure: a later step must beat it, not tie it
            best_val, best_path, best = min(scored, key=lambda t: (t[0], t[2]["step"]))
            best_step = best["step"]
            bpos = Position(best["phase"], best["epoch"], best["step_in_epoch"], best["step"])
            if is_main() and not self.dir.exists("best/zarr.json"):
                write_checkpoint(self.dir / "best", read_checkpoint(best_path).params,
                                 self.attrs("best", bpos, val_rmse=best["val_rmse"],
                                            val_rmse_per_bucket=best.get("val_rmse_per_bucket",
                                                                         {})))
        if is_main():
            self.dir.write_bytes("params.pkl", pickle.dumps(jax.tree.map(np.asarray, final)))
            plot_metrics(self.read_metrics(), self.dir / "loss_curve.png", self.config.schedule)
        barrier("exported")
        return best_step, best_val, last


def _quiet(message: str) -> None:
    pass


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


def _check_batches(store: Store, plan: BucketPlan, config: TrainConfig) -> None:
    """Refuse, before anything is written, a run that would train no step."""
    loader = BatchLoader(store, plan, LoaderConfig(
        batch_size=config.batch_size, batch_beads=config.batch_beads, split="train",
        seed=config.seed))
    sizes = sorted({loader.batch_size(k) for k in range(len(plan.buckets))})
    DataParallel(sizes)  # batch sizes the devices cannot share are refused here
    if loader.steps_per_epoch(0) == 0:
        samples = sum(len(plan.split.frames(p, plan.frames[p], "train")) for p in plan.proteins)
        raise ConfigError(f"batch size {'/'.join(map(str, sizes))} is larger than the training "
                          f"samples of every bucket of plan {plan.name!r} ({samples} in all): "
                          f"no step would be trained; use a smaller --batch-size or "
                          f"--batch-beads")


def train(store: Store, plan: BucketPlan, out: str | Path, config: TrainConfig | None = None, *,
          priors: dict | None = None, resume: bool = False, model: str | None = None,
          temperature: float | None = None, progress: bool = True,
          echo: Callable[[str], None] = print,
          loggers: Sequence[str | MetricsLogger] | None = None,
          options: dict | None = None) -> TrainResult:
    """Train (or resume) a run in ``out``; see the module docstring for what it writes.

    ``priors``: a priors document (``fit-priors``' JSON, loaded) or prior params; fitted on the
    plan's training split when not given (``temperature``: K of the frames stored without one).
    On resume, config and priors come from the run directory; a model factory the run's
    ``config.json`` names is built only if it is one of protstore's own or the user names it
    again (``model``, ``--model``).

    ``loggers``: registered names (``"csv"``, ``"tensorboard"``) and objects with ``log(line)``
    and ``close()`` (``protstore.train.loggers``), given every metrics line; the names are kept
    in ``run.json``, and a resume without ``loggers`` uses them again. ``options``: the
    command-line options that made the run (``protstore train``), kept in ``run.json``.
    """
    out = as_location(out, store.storage_options)
    if resume and loggers is None and out.exists("run.json"):
        loggers = out.read_json("run.json").get("loggers", [])
    loggers = list(loggers or ())
    check_loggers(loggers, out)
    if resume:
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
        priors = priors_from_doc(out.read_json("priors.json"))
    else:
        config = config or TrainConfig()
        # everything that can be refused is refused before the run directory is written
        _check_batches(store, plan, config)
        load_model(config.model, config.model_options)
        if priors is None:
            check_temperatures(store, plan, temperature)
        if out.listdir():
            raise ProtstoreError(f"{out}: run directory exists and is not empty (each run has its "
                                 "own directory; use --resume to continue it)")
        barrier("run-directory-checked")  # by every process, before process 0 writes to it
        if not is_main():
            barrier("run-directory-written")
            priors = out.read_json("priors.json")
        elif priors is None:
            out.mkdir()
            echo("fitting priors by Boltzmann inversion on the training split")
            priors = fit_priors_to_file(store, plan, out / "priors.json", seed=config.seed,
                                        unknown_temperature=temperature)
        else:
            out.mkdir()
            priors = (dict(priors) if priors.get("format") == PRIORS_DOC  # fit-priors' JSON
                      else priors_to_doc(priors, None, plan=plan.name,
                                         created_by="given as params"))
            write_priors(priors, out / "priors.json")
        priors = priors_from_doc(priors)
        if is_main():
            out.write_bytes("config.json", (dumps_document(
                config.to_dict(), "train_config", str(out / "config.json")) + "\n").encode())
        run_doc = {"store": store.url, "plan": plan.name, "created_by": f"protstore {__version__}",
                   "devices": [str(d) for d in jax.devices()], "config_hash": config.hash(),
                   "loggers": [name for name in loggers if isinstance(name, str)]}
        if options is not None:
            run_doc["options"] = options
        if is_main():
            out.write_bytes("run.json", (dumps_document(run_doc, "run", str(out / "run.json"))
                                         + "\n").encode())
            barrier("run-directory-written")
    if not is_main():  # one process speaks for all
        progress, echo = False, _quiet
    run = Run(out, store, plan, config, priors, progress=progress, echo=echo, loggers=loggers)
    if len(run.placement.devices) > 1:
        echo(f"data-parallel over {len(run.placement.devices)} devices")
    try:
        if resume and out.exists("final/zarr.json"):  # trained: complete what export left out
            missing = [n for n in ("best", "params.pkl", "loss_curve.png") if not out.exists(n)]
            echo(f"{out}: the run has finished training; "
                 + (f"writing what it is missing: {', '.join(missing)}" if missing
                    else "nothing is missing"))
            state = None
        else:
            state, pos = run.resume() if resume else run.start()
            state = run.train(state, pos)
        best_step, best_val, last = run.export(state)
    finally:
        run.close_loggers()
    metrics = run.read_metrics()
    priors_val = next((m["val_rmse"] for m in metrics if m["step"] == 0), None)
    for line in against_priors(priors_val, best_step, best_val, last.get("val_rmse")):
        echo(line)
    return TrainResult(Path(out.path) if out.local else out.url, last.get("val_rmse"),
                       last.get("val_rmse_per_bucket", {}), best_step, last["step"],
                       run.compilations, metrics, priors_val, best_val)


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
