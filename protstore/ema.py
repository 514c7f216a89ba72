"""Post-hoc EMA of parameters over stored checkpoints (domain notes section 6).

Online EMA with per-step decay d is e_t = d e_{t-1} + (1 - d) p_t. Checkpoints are a sample of
that stream; between consecutive checkpoints Δ steps apart the exact update for params held
constant over the interval is

    e <- d^Δ e + (1 - d^Δ) p                      (decay_per="step", the default)

The predecessor applied d once per checkpoint (decay_per="checkpoint"), so with d = 0.999 and
8 checkpoints the "EMA" was 99% the first one. The first checkpoint is the EMA's initial value;
``debias`` removes the weight it still carries, d^(s_last - s_first), and renormalises, exactly
like ``optax.ema(debias=True)`` when the first checkpoint is the step-0 state.

:func:`checkpoint_ema` makes the transformation, optax-style: a :class:`CheckpointEma` of pure
functions ``init``/``update``/``result`` over NumPy pytrees (float64 accumulation) with the
state in an :class:`EmaState`; the settings live in the functions, never in globals.
``compute_ema`` streams checkpoints through it, holding one running mean and one checkpoint at
a time.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from .checkpoints import (CheckpointError, check_same_structure, is_finite, leaf_signature,
                          list_checkpoints, read_checkpoint, write_checkpoint)
from .errors import ProtstoreError
from .location import as_location

DECAY_PER = ("step", "checkpoint")


class EmaState(NamedTuple):
    mean: dict  # running mean, float64 leaves
    step: int  # step of the last checkpoint folded in
    initial_weight: float  # weight the initial value (first checkpoint) still carries


class CheckpointEma(NamedTuple):
    """An EMA over checkpoints as pure functions (like ``optax.GradientTransformation``).

    init(params, step) -> EmaState : start from the first checkpoint, saved at ``step``.
    update(state, params, step) -> EmaState : fold in the checkpoint saved at ``step`` (greater
        than the state's step).
    result(state) -> params : the EMA parameters, float64 leaves of the checkpoints' shapes.
    """

    init: Callable[[dict, int], EmaState]
    update: Callable[[EmaState, dict, int], EmaState]
    result: Callable[[EmaState], dict]


def check_settings(decay: float, decay_per: str) -> None:
    """Refuse a decay outside (0, 1) or an unknown ``decay_per``."""
    if not 0.0 < decay < 1.0:
        raise ProtstoreError(f"decay must be in (0, 1), not {decay}")
    if decay_per not in DECAY_PER:
        raise ProtstoreError(f"decay_per must be one of {DECAY_PER}, not {decay_per!r}")


def _interval_decay(decay: float, delta: int, decay_per: str) -> float:
    """The factor d^Δ (per step) or d (per checkpoint) applied between two checkpoints Δ steps
    apart (``decay_per`` checked by :func:`check_settings`)."""
    return decay ** delta if decay_per == "step" else decay


def checkpoint_ema(decay: float, *, decay_per: str = "step", debias: bool = True
                   ) -> CheckpointEma:
    """The EMA with per-step (``decay_per="step"``) or per-checkpoint decay ``decay`` in (0, 1),
    debiased or not (module docstring)."""
    check_settings(decay, decay_per)

    def init(params: dict, step: int) -> EmaState:
        # debiased: zeros in the first checkpoint's place, its weight divided out by result
        mean = jax.tree.map(lambda x: np.zeros(np.shape(x)) if debias
                            else np.asarray(x, np.float64), params)
        return EmaState(mean, step, 1.0)

    def update(state: EmaState, params: dict, step: int) -> EmaState:
        if step <= state.step:
            raise ProtstoreError(f"checkpoints must come in increasing step order ({step} after "
                                 f"{state.step})")
        a = _interval_decay(decay, step - state.step, decay_per)
        mean = jax.tree.map(lambda e, p: a * e + (1.0 - a) * np.asarray(p, np.float64),
                            state.mean, params)
        return EmaState(mean, step, state.initial_weight * a)

    def result(state: EmaState) -> dict:
        if not debias:
            return state.mean
        if state.initial_weight >= 1.0:
            raise ProtstoreError("debiased EMA of a single checkpoint is undefined: give at "
                                 "least two checkpoints, or --no-debias")
        return jax.tree.map(lambda e: e / (1.0 - state.initial_weight), state.mean)

    return CheckpointEma(init, update, result)


def effective_weights(steps: Sequence[int], *, decay: float, decay_per: str = "step",
                      debias: bool = True) -> np.ndarray:
    """Weight of each checkpoint (saved at ``steps``) in the result of
    ``checkpoint_ema(decay, decay_per=decay_per, debias=debias)`` fed those checkpoints in
    order (they sum to 1), from the steps alone."""
    check_settings(decay, decay_per)
    a = np.array([_interval_decay(decay, s1 - s0, decay_per) for s0, s1 in zip(steps, steps[1:])])
    after = np.append(np.cumprod(a[::-1])[::-1], 1.0)  # Π of the factors after each checkpoint
    w = np.empty(len(steps))
    w[0] = after[0]
    w[1:] = (1.0 - a) * after[1:]
    if debias:
        w[0] = 0.0
        w = w / w.sum()
    return w


def compute_ema(source: str | Path, out: str | Path, *, decay: float = 0.999,
                decay_per: str = "step", debias: bool = True, from_step: int | None = None,
                to_step: int | None = None, pkl: str | Path | None = None,
                echo: Callable[[str], None] = print) -> dict:
    """EMA over the checkpoints of ``source`` (a run directory or a directory of checkpoint
    groups), written as the checkpoint group ``out``; returns its attrs['ema']."""
    ema = checkpoint_ema(decay, decay_per=decay_per, debias=debias)
    found = list_checkpoints(source, warn=lambda m: echo(f"warning: {m}"))
    found = [(p, a) for p, a in found if a["kind"] in ("checkpoint", "imported")
             and (from_step is None or a["step"] >= from_step)
             and (to_step is None or a["step"] <= to_step)]
    if not found:
        raise CheckpointError(f"{source}: no valid checkpoints in the step range")
    if decay_per == "step" and any(a.get("step_unit") == "epoch" for _, a in found):
        echo("warning: these imported checkpoints store epochs, not steps (no --steps-per-epoch "
             "at import): the per-step decay is applied per epoch")

    state, reference, dtypes, used = None, None, None, []
    for path, attrs in found:
        params = read_checkpoint(path).params
        if not is_finite(params):  # attrs said finite, the arrays disagree: never average it in
            echo(f"warning: skipping {path}: its arrays hold NaN or inf")
            continue
        if state is None:
            reference = leaf_signature(params)
            dtypes = jax.tree.map(lambda x: np.asarray(x).dtype, params)
            state = ema.init(params, attrs["step"])
        else:
            check_same_structure(reference, params, str(path))
            state = ema.update(state, params, attrs["step"])
        used.append((path, attrs))
        del params
    if state is None:
        raise CheckpointError(f"{source}: no finite checkpoints in the step range")
    result = jax.tree.map(lambda x, dt: np.asarray(x, dt), ema.result(state),
                          dtypes)
    found = used
    steps = [a["step"] for _, a in found]
    weights = effective_weights(steps, decay=decay, decay_per=decay_per, debias=debias)

    last = found[-1][1]
    doc = {"decay": decay, "decay_per": decay_per, "debias": debias, "steps": steps,
           "weights": [float(w) for w in weights], "sources": [p.name for p, _ in found],
           "initial_weight": float(state.initial_weight)}
    attrs = {"kind": "ema", "step": last["step"], "epoch": last["epoch"], "model": last["model"],
             "source": as_location(source).address, "ema": doc}
    for key in ("phase", "bucket", "config_hash"):
        if key in last:
            attrs[key] = last[key]
    write_checkpoint(out, result, attrs)
    if pkl is not None:
        as_location(pkl).write_bytes("", pickle.dumps(result))

    echo(f"EMA over {len(found)} checkpoints (steps {steps[0]}..{steps[-1]}), decay {decay} per "
         f"{decay_per}, {'debiased' if debias else 'not debiased'}")
    echo("  checkpoint              step    weight")
    for (path, _), s, w in zip(found, steps, weights):
        echo(f"  {path.name:<20s} {s:>7d}  {w:8.2%}")
    top = int(np.argmax(weights))
    if len(found) > 1 and weights[top] > 0.5:
        which = "the first checkpoint" if top == 0 else found[top][0].name
        advice = ("use --decay-per step or a smaller --decay" if decay_per == "checkpoint" else
                  "use a smaller --decay, or checkpoints closer together (train "
                  "--checkpoint-every)")
        echo(f"warning: {which} carries {weights[top]:.0%} of the weight: the EMA is mostly one "
             f"checkpoint (decay too close to 1 for the interval; {advice})")
    echo(f"wrote {out}" + (f" and {pkl}" if pkl else ""))
    return doc
