"""The training loop of a run: the epochs and steps of each phase of the bucket schedule,
validation, the neighbour-capacity check and divergence; :func:`train` runs it over a run
directory (:mod:`protstore.train.rundir`: the files, checkpoints, metrics and export).

Resume continues from the last checkpoint with its optimizer state and loader position
(``loader.epoch(e, start_step=s)``), so an interrupted run ends with the same params as an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..batching import BatchLoader, BucketPlan, LoaderConfig
from ..batching.loader import bucket_batch_size
from ..batching.sample import frames_in
from ..checkpoints import is_finite, read_checkpoint
from ..errors import ConfigError, TrainingDiverged
from ..location import as_location
from ..model.energy import batch_census, neighbor_overflow, overflow_message, total_energy
from ..store import Store
from ..store.versions import warn_if_changed
from .config import PACKING_PAYS, TrainConfig
from .loggers import MetricsLogger, check_loggers
from .priors import check_temperatures
from .processes import is_main
from .rundir import (Position, RunDir, against_priors, create, open_for_resume,
                     recorded_loggers)
from .step import DataParallel, TrainState, make_eval_step, make_optimizer, make_train_step


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
            count = jax.jit(lambda R, mask, sample_mask: jnp.max(jnp.where(
                sample_mask > 0, jax.vmap(lambda R, mask: densest(R, mask, cutoff))(R, mask),
                0)))
            most = 0
            for split in ("train", "val", "test"):
                loader = BatchLoader(store, plan, LoaderConfig(
                    batch_size=batch_size, order="sequential", split=split, shuffle=False,
                    last="pad"))
                for batch in loader.epoch(0):  # kept on the device: no sync per batch
                    most = jnp.maximum(most, count(batch["R"], batch["mask"],
                                                   batch["sample_mask"]))
            found[cutoff] = int(most)
        return found[cutoff]

    return largest


def validate(evaluate: Callable, params, loader: BatchLoader | None, place,
             check: Callable[[dict, object], None] = lambda batch, census: None) -> dict:
    """Validation force RMSE per component (kcal/mol/Å), overall and per bucket.

    ``evaluate(params, batch)`` gives (Σ||ΔF||², n_real) or, with the model's neighbour census
    in the same program, (Σ||ΔF||², n_real, census); ``check(batch, census)`` sees every batch's
    census (the neighbour-capacity check) once all batches are dispatched, before any figure is
    read, so validation waits for the device once instead of once per batch."""
    if loader is None:
        return {"val_rmse": None, "val_rmse_per_bucket": {}}
    done = []
    for batch in loader.epoch(0):
        out = evaluate(params, place(batch))
        meta = {k: batch[k] for k in ("bucket", "protein_index", "frame")}
        done.append((meta, out))
    for meta, out in done:
        if len(out) == 3:
            check(meta, out[2])
    sums: dict[int, list[float]] = {}
    for meta, (sq, n, *_) in done:
        acc = sums.setdefault(meta["bucket"], [0.0, 0.0])
        acc[0] += float(sq)
        acc[1] += float(n)
    per = {str(k): math.sqrt(s / (3 * n)) if n else None for k, (s, n) in sorted(sums.items())}
    s, n = sum(v[0] for v in sums.values()), sum(v[1] for v in sums.values())
    return {"val_rmse": math.sqrt(s / (3 * n)) if n else None, "val_rmse_per_bucket": per}


def _frames_of(plan: BucketPlan, batch: dict, i: int) -> str:
    """``protein P frame F`` of sample i of a batch; of a packed sample, every frame in it."""
    index, frame = np.asarray(batch["protein_index"][i]), np.asarray(batch["frame"][i])
    if index.ndim == 0:
        return f"protein {plan.proteins[int(index)]} frame {int(frame)}"
    pairs = dict.fromkeys(zip(index[index >= 0].tolist(), frame[index >= 0].tolist()))
    return "one of the frames packed in a sample: " + ", ".join(
        f"protein {plan.proteins[p]} frame {f}" for p, f in pairs)


def _local_rows(x) -> np.ndarray:
    """This process's rows of a batch-split array (all of it on one process)."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    shards = {s.index[0].start or 0: s.data for s in x.addressable_shards}
    return np.concatenate([np.asarray(shards[k]) for k in sorted(shards)])


class Run:
    """One training run: its model, loaders and loop over the run directory ``out``
    (:class:`~protstore.train.rundir.RunDir`, ``self.rundir``)."""

    def __init__(self, out: str | Path, store: Store, plan: BucketPlan, config: TrainConfig,
                 priors: dict, *, progress: bool = True, echo: Callable[[str], None] = print,
                 loggers: Sequence[str | MetricsLogger] = ()):
        self.store, self.plan, self.config, self.priors = store, plan, config, priors
        self.progress, self.echo = progress, echo
        self.model = config.model_spec.load()
        self.energy = total_energy(self.model)
        self.packing = False
        self.placement = DataParallel(sorted({
            bucket_batch_size(self._loader_config(), b.n_max) for b in plan.buckets}))
        self.census = batch_census(self.model)
        self.evaluate = make_eval_step(self.energy, self.census)
        self.compilations = 0  # of the train step, summed over phases
        self._epoch_losses = (0.0, 0)  # (sum, steps) of the epoch a mid-epoch resume continues
        self._loaders: dict[int, BatchLoader] = {}
        self.n_phases = len(plan.buckets) if config.schedule == "sequential" else 1
        self.packing = self._packs()
        has_val = any(len(plan.part_frames(p, "val")) for p in plan.proteins)
        self.val_loader = BatchLoader(store, plan, self._loader_config(
            order="sequential", split="val", shuffle=False, last="pad")) if has_val else None
        self.rundir = RunDir(as_location(out), config, len(plan.buckets), echo=echo,
                             loggers=loggers)  # its wall clock starts here
        self.dir = self.rundir.dir

    def loader(self, phase: int) -> BatchLoader:
        """The training loader of ``phase``, made once (it keeps its proteins open)."""
        if phase not in self._loaders:
            cfg = self.config
            self._loaders[phase] = BatchLoader(self.store, self.plan, self._loader_config(
                buckets=(phase,) if cfg.schedule == "sequential" else None))
        return self._loaders[phase]

    def _loader_config(self, **changes) -> LoaderConfig:
        """The loader of this run's config (training split, interleaved, packed when the run
        packs), with ``changes``."""
        cfg = self.config
        return dataclasses.replace(cfg.loader, **{"order": "interleaved", "split": "train",
                                                  "seed": cfg.seed, "packing": self.packing,
                                                  **changes})

    def _packs(self) -> bool:
        """Whether this run's training and validation batches are packed (``config.packing``;
        ``auto``: when it saves PACKING_PAYS of the first epoch's steps, from the layouts
        alone)."""
        choice = self.config.packing
        if choice == "off" or (choice == "auto" and not self.model.packing):
            return False
        if not self.model.packing:
            raise ConfigError(f"packing='on': model {self.config.model} does not take packed "
                              "samples (EnergyModel.packing); use packing='auto' or 'off'")
        if choice == "on":
            return True
        loaders = {packing: {k: BatchLoader(self.store, self.plan, self._loader_config(
                       packing=packing, buckets=(k,) if self.config.schedule == "sequential"
                       else None))
                       for k in range(self.n_phases)} for packing in (False, True)}
        steps = {packing: sum(loader.steps_per_epoch(0) for loader in phases.values())
                 for packing, phases in loaders.items()}
        packs = steps[True] <= (1 - PACKING_PAYS) * steps[False]
        self._loaders = loaders[packs]  # the training loaders, their first layouts made
        if packs:
            self.echo(f"packing frames: {steps[True]} steps an epoch instead of {steps[False]}")
        return packs

    def start(self) -> tuple[TrainState, Position]:
        """Fresh state (priors + initialised model), validated and saved as the step-0
        checkpoint: with a learned energy that starts at zero, step 0 is the priors alone, and
        ``best/`` is chosen among every validated step including it."""
        # every process must initialise the same parameters: the statistics come from the
        # whole of the first global batches, not from this process's share
        stats = {"force_rms": force_rms(BatchLoader(self.store, self.plan, self._loader_config(
                     process_index=0, process_count=1))),
                 "max_neighbors": densest_neighbors(self.store, self.plan,
                                                    self.config.loader.batch_size)}
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
        line = self.rundir.metrics_line(pos, None, val, frames=0,
                                        elapsed=time.perf_counter() - t0, wait=0.0)
        self.save(state, pos, metrics=line, **val)
        self.rundir.write_metrics(line)
        self.echo(f"step 0 (priors only): val RMSE {val['val_rmse']:.3f} kcal/mol/Å per "
                  "component")
        return state, pos

    def phase_steps(self, phase: int) -> int:
        return self.config.epochs * self.loader(phase).steps_per_epoch(0)

    def resume(self) -> tuple[TrainState, Position]:
        """The state and position of the last checkpoint (a run killed before its step-0
        checkpoint starts again from step 0), with ``metrics.jsonl`` made whole again."""
        point = self.rundir.resume_point()
        if point is None:
            self.echo(f"{self.dir}: no checkpoint yet; starting the run from step 0")
            self.rundir.clear_metrics()
            return self.start()
        path, attrs, pos = point.path, point.attrs, point.position
        optimizer = make_optimizer(self.config, self.phase_steps(pos.phase))
        ckpt = read_checkpoint(path, opt_template=optimizer.init)
        self.rundir.wall0 = attrs["wall_time_s"]
        self._epoch_losses = (attrs.get("epoch_loss_sum", 0.0), attrs.get("epoch_loss_steps", 0))
        self.rundir.restore_metrics(point.checkpoints, pos.step)
        self.echo(f"resuming from {path.name} (phase {pos.phase}, epoch {pos.epoch}, "
                  f"step {pos.step})")
        return TrainState(ckpt.params, ckpt.opt_state), pos

    # ------------------------------------------------------------------ checks
    def save(self, state: TrainState, pos: Position, **extra) -> None:
        """The checkpoint of ``pos``; parameters that are not finite are a divergence."""
        if not is_finite(state.params):
            self.diverged(state, pos, "the parameters are not finite")
        self.rundir.save(state, pos, **extra)

    def diverged(self, state: TrainState, pos: Position, what: str):
        where = self.rundir.save_diverged(state.params, pos)
        raise TrainingDiverged(
            f"{self.dir}: training diverged at step {pos.step} (phase {pos.phase}, epoch "
            f"{pos.epoch + 1}): {what}; the state is kept in {where}, resume from the last "
            "checkpoint with a lower learning rate")

    def check_neighbors(self, batch: dict, census, where: str) -> None:
        """Refuse a batch in which a bead had more neighbours within the model's cutoff than its
        capacity (the energy would not be smooth there), naming ``where`` (the step or the
        validation pass), the bucket, the protein and the frame. ``census``: the batch's
        :class:`~protstore.train.step.Census` from the step that ran it (0 on padded
        samples)."""
        if census is None:
            return
        counts = _local_rows(census.counts)
        # one capacity per bucket shape (min(K, N_max - 1)); on several processes the array may
        # be replicated rather than split like the counts
        capacity = np.full(counts.shape, np.max(_local_rows(census.capacity)))
        i = neighbor_overflow(counts, capacity)
        if i is not None:
            raise ConfigError(
                f"{where}, bucket {batch['bucket']}: {_frames_of(self.plan, batch, i)}: "
                f"{overflow_message(int(counts[i]), int(capacity[i]))}"
                f" (the energy would jump when neighbours swap); train with --model-option "
                f"max_neighbors=M, M >= {int(counts[i])}")

    def validate(self, params, pos: Position) -> dict:
        """Validation RMSEs of ``params`` (every batch checked for neighbour capacity first);
        a non-finite figure is a divergence."""
        val = validate(self.evaluate, params, self.val_loader, self.placement.batch,
                       lambda batch, census: self.check_neighbors(
                           batch, census, f"validation at step {pos.step}"))
        if val["val_rmse"] is not None and not math.isfinite(val["val_rmse"]):
            self.diverged(TrainState(params, None), pos,
                          f"the validation RMSE is {val['val_rmse']}")
        return val

    def stop_early(self, pos: Position) -> bool:
        """Whether the phase has gone ``early_stopping_patience`` validated epochs without a
        lower validation RMSE than its best (never, when the patience is 0 or nothing is
        validated)."""
        patience = self.config.early_stopping_patience
        if not patience:
            return False
        vals = [m["val_rmse"] for m in self.rundir.read_metrics()
                if m["phase"] == pos.phase and m["val_rmse"] is not None]
        if len(vals) <= patience:
            return False
        best = int(np.argmin(vals))
        if len(vals) - 1 - best < patience:
            return False
        self.echo(f"early stopping: no lower validation RMSE than {vals[best]:.3f} in the last "
                  f"{patience} epochs (phase {pos.phase}, epoch {pos.epoch})")
        return True

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
                                      if cfg.loss_weighting == "bead" else None, self.census)
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
        # a step's loss and neighbour census are read once the next step is on its way (one
        # step late: the host never waits for the device just to check them); the last one
        # before a checkpoint, a validation or the end of the epoch
        pending = None

        def settle():
            nonlocal pending, loss_sum, loss_steps
            if pending is None:
                return
            done_state, done_pos, meta, loss, census = pending
            pending = None
            self.check_neighbors(meta, census, f"training step {done_pos.step}")
            loss = float(loss)
            if not math.isfinite(loss):
                self.diverged(done_state, done_pos, f"the loss is {loss}")
            loss_sum, loss_steps = loss_sum + loss, loss_steps + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3g}")

        while True:
            t_wait = time.perf_counter()
            batch = next(batches, None)
            wait += time.perf_counter() - t_wait
            if batch is None:
                break
            state, loss, *census = step_fn(state, self.placement.batch(batch))
            pos = Position(pos.phase, pos.epoch, pos.step_in_epoch + 1, pos.step + 1)
            settle()  # the previous step's, while this one runs
            meta = {k: batch[k] for k in ("bucket", "protein_index", "frame")}
            pending = (state, pos, meta, loss, census[0] if census else None)
            frames += frames_in(batch) * jax.process_count()  # about equal shares
            every = cfg.checkpoint_every_steps
            if every and pos.step % every == 0 and pos.step_in_epoch < steps_per_epoch:
                settle()
                self.save(state, pos, val_rmse=None, train_loss=loss_sum / loss_steps,
                          epoch_loss_sum=loss_sum, epoch_loss_steps=loss_steps)
        settle()
        bar.close()
        elapsed = time.perf_counter() - t0
        val = self.validate(state.params, pos)
        pos = Position(pos.phase, pos.epoch + 1, 0, pos.step)
        train_loss = loss_sum / loss_steps if loss_steps else None
        line = self.rundir.metrics_line(pos, train_loss, val, frames=frames, elapsed=elapsed,
                                        wait=wait)
        # the line goes into the epoch-end checkpoint too: a kill before it reaches
        # metrics.jsonl loses nothing (resume writes it from there)
        self.save(state, pos, train_loss=train_loss, metrics=line, **val)
        self.rundir.write_metrics(line)
        v = val["val_rmse"]
        per = " ".join(f"b{k}={x:.3f}" for k, x in val["val_rmse_per_bucket"].items()
                       if x is not None)
        self.echo(f"{label}: step {pos.step}, train RMSE {line['train_rmse'] or float('nan'):.3f}, "
                  f"val RMSE {v if v is not None else float('nan'):.3f} ({per}) kcal/mol/Å per "
                  f"component; {frames / elapsed:.0f} frames/s, waited {wait:.2f} s for data")
        return state, pos

def _quiet(message: str) -> None:
    pass


def _check_batches(store: Store, plan: BucketPlan, config: TrainConfig) -> None:
    """Refuse, before anything is written, a run that would train no step."""
    loader = BatchLoader(store, plan, dataclasses.replace(config.loader, split="train",
                                                          seed=config.seed))
    sizes = sorted({loader.batch_size(k) for k in range(len(plan.buckets))})
    DataParallel(sizes)  # batch sizes the devices cannot share are refused here
    if loader.steps_per_epoch(0) == 0:
        samples = sum(len(plan.part_frames(p, "train")) for p in plan.proteins)
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
    if resume and loggers is None:
        loggers = recorded_loggers(out)
    loggers = list(loggers or ())
    check_loggers(loggers, out)
    if resume:
        config, priors = open_for_resume(out, plan, model)
        warn_if_changed(store, out.read_json("run.json").get("store_version"), plan.proteins,
                        f"the run in {out}")
    else:
        config = config or TrainConfig()
        # everything that can be refused is refused before the run directory is written
        _check_batches(store, plan, config)
        config.model_spec.load()
        if priors is None:
            check_temperatures(store, plan, temperature)
        priors = create(out, store, plan, config, priors, temperature=temperature,
                        loggers=loggers, options=options, echo=echo)
    if not is_main():  # one process speaks for all
        progress, echo = False, _quiet
    run = Run(out, store, plan, config, priors, progress=progress, echo=echo, loggers=loggers)
    rundir = run.rundir
    if len(run.placement.devices) > 1:
        echo(f"data-parallel over {len(run.placement.devices)} devices")
    try:
        if resume and rundir.finished:  # trained: complete what export left out
            missing = rundir.missing_outputs()
            echo(f"{out}: the run has finished training; "
                 + (f"writing what it is missing: {', '.join(missing)}" if missing
                    else "nothing is missing"))
            state = None
        else:
            state, pos = run.resume() if resume else run.start()
            state = run.train(state, pos)
        best_step, best_val, last = rundir.export(None if state is None else state.params)
    finally:
        rundir.close_loggers()
    metrics = rundir.read_metrics()
    priors_val = next((m["val_rmse"] for m in metrics if m["step"] == 0), None)
    for line in against_priors(priors_val, best_step, best_val, last.get("val_rmse")):
        echo(line)
    return TrainResult(Path(out.path) if out.local else out.url, last.get("val_rmse"),
                       last.get("val_rmse_per_bucket", {}), best_step, last["step"],
                       run.compilations, metrics, priors_val, best_val)
