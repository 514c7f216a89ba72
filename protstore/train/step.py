"""Pure training pieces: state, optimizer, the jitted force-matching step and evaluation step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..batching.sample import MODEL_INPUTS
from ..errors import ConfigError
from ..model.energy import batch_forces, squared_error_sums
from .config import TrainConfig

#: The batch arrays the step functions take (everything else in a loader batch is host-side;
#: ``segment`` may be left out of unpacked batches).
BATCH_KEYS = MODEL_INPUTS


class TrainState(NamedTuple):
    params: dict
    opt_state: Any


def param_labels(params: dict) -> dict:
    """'frozen' for the priors and for every leaf under a ``"frozen"`` key, else 'train'."""
    def label(path, _):
        keys = [getattr(k, "key", None) for k in path]
        return "frozen" if keys[0] == "prior" or "frozen" in keys else "train"
    return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """AdamW with warmup + cosine decay (to 1%) and gradient clipping; frozen leaves untouched."""
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, warmup, max(total_steps, warmup + 1),
        end_value=config.learning_rate * 0.01)
    train = optax.chain(optax.clip_by_global_norm(config.clip_norm),
                        optax.adamw(schedule, weight_decay=config.weight_decay))
    return optax.multi_transform({"train": train, "frozen": optax.set_to_zero()}, param_labels)


def force_loss(energy: Callable, beads_per_step: float | None = None) -> Callable:
    """``loss(params, batch) -> (loss, (Σ||ΔF||², n_real))`` over real beads of real samples
    only, (kcal/mol/Å)²: Σ||ΔF||² / (3 beads_per_step) (every bead of an epoch weighs the same;
    ``beads_per_step``: the epoch's mean real beads per step), or without it the batch's own
    mean squared force component."""
    forces = batch_forces(energy)

    def loss(params, batch):
        F = forces(params, batch["R"], batch["species"], batch["resid"], batch["chain"],
                   batch["mask"], batch.get("segment"))
        sq, n = squared_error_sums(F, batch["F"], batch["mask"], batch["sample_mask"])
        scale = jnp.maximum(n, 1.0) if beads_per_step is None else beads_per_step
        return sq / (3.0 * scale), (sq, n)

    return loss


class Census(NamedTuple):
    """The neighbour census of a batch, computed inside the jitted step: ``counts`` [B] (the
    most beads any bead of each sample has within the network's cutoff; 0 on padded samples)
    and ``capacity`` [B] (the network's neighbour slots); a sample with counts > capacity
    overflows."""

    counts: Any
    capacity: Any


def _census(neighbors: Callable, params, batch: dict) -> Census:
    counts, capacity = neighbors(params, batch["R"], batch["mask"], batch.get("segment"))
    return Census(jnp.where(batch["sample_mask"] > 0, counts, 0), capacity)


def make_train_step(energy: Callable, optimizer: optax.GradientTransformation,
                    beads_per_step: float | None = None,
                    neighbors: Callable | None = None) -> Callable:
    """``step(state, batch) -> (state, loss)``, jitted: one compilation per batch shape
    (``beads_per_step``: see :func:`force_loss`). With ``neighbors``
    (:func:`protstore.model.energy.batch_census` of the model) it returns ``(state, loss,
    census)``: the :class:`Census` of the batch under the params it started from, computed in
    the same program, for the caller to check when it reads the loss (no host sync of its
    own). Gradients are taken of the trainable leaves only (:func:`param_labels`; the frozen
    ones get no update either way)."""
    loss_fn = force_loss(energy, beads_per_step)

    def trainable_loss(params, batch):
        frozen = jax.tree.leaves(param_labels(params))
        leaves, tree = jax.tree.flatten(params)
        params = jax.tree.unflatten(tree, [jax.lax.stop_gradient(leaf) if label == "frozen"
                                           else leaf for label, leaf in zip(frozen, leaves)])
        return loss_fn(params, batch)

    @jax.jit
    def step(state: TrainState, batch: dict):
        (loss, _), grads = jax.value_and_grad(trainable_loss, has_aux=True)(state.params, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new = TrainState(optax.apply_updates(state.params, updates), opt_state)
        if neighbors is None:
            return new, loss
        return new, loss, _census(neighbors, state.params, batch)

    return step


def make_eval_step(energy: Callable, neighbors: Callable | None = None) -> Callable:
    """``evaluate(params, batch) -> (Σ||ΔF||², n_real)``, jitted; with ``neighbors`` (as for
    :func:`make_train_step`) ``(Σ||ΔF||², n_real, census)`` from the same program."""
    loss_fn = force_loss(energy)

    @jax.jit
    def evaluate(params, batch: dict):
        sums = loss_fn(params, batch)[1]
        return sums if neighbors is None else (*sums, _census(neighbors, params, batch))

    return evaluate


class DataParallel:
    """Places batches split over all devices (of every process, when several train together)
    and state replicated (no-op on one device). ``batch_sizes``: the global batch sizes (one
    per bucket with ``batch_beads``)."""

    def __init__(self, batch_sizes, devices=None):
        self.devices = list(devices if devices is not None else jax.devices())
        self.mesh = None
        sizes = [batch_sizes] if isinstance(batch_sizes, int) else list(batch_sizes)
        if len(self.devices) > 1:
            bad = [b for b in sizes if b % len(self.devices)]
            if bad:
                raise ConfigError(f"batch size {bad[0]} is not divisible by the "
                                  f"{len(self.devices)} devices")
            self.mesh = Mesh(np.array(self.devices), ("data",))

    def batch(self, batch: dict) -> dict:
        """This process's batch (its share of the global batch when several processes train
        together: ``jax.process_count() > 1``) as arrays split over the devices."""
        arrays = {k: batch[k] for k in BATCH_KEYS if k in batch}  # segment: only if packed
        if self.mesh is None:
            return arrays
        sharding = NamedSharding(self.mesh, PartitionSpec("data"))
        if jax.process_count() > 1:  # each process holds its own rows of the global batch
            return {k: jax.make_array_from_process_local_data(sharding, v)
                    for k, v in arrays.items()}
        return jax.device_put(arrays, sharding)

    def replicate(self, tree):
        if self.mesh is None:
            return jax.device_put(tree)
        return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))
