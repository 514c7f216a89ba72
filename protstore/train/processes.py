"""Training on several processes (hosts) with JAX's multi-process runtime.

Every process runs the same program: :func:`init_processes` joins them (``jax.distributed``),
after which ``jax.devices()`` lists the devices of all processes, the loader gives each process
its share of every global batch (``LoaderConfig.process_index/count``), and the train step runs
on global arrays (:class:`~protstore.train.step.DataParallel`), so every process holds the same
parameters. Only process 0 writes the run directory (checkpoints, metrics, plots); all read it
on resume. When a process dies, JAX's coordination service notices the missing heartbeats
(``heartbeat_timeout_s``) and stops the others with an error instead of leaving them waiting in
a collective forever.
"""

from __future__ import annotations

import jax

from ..errors import ConfigError

HEARTBEAT_TIMEOUT_S = 30


def init_processes(coordinator: str, num_processes: int, process_id: int, *,
                   heartbeat_timeout_s: int = HEARTBEAT_TIMEOUT_S) -> None:
    """Join this process to a job of ``num_processes`` (before any JAX computation):
    ``coordinator`` is ``HOST:PORT`` of process 0, which serves it."""
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ConfigError(f"--process-id {process_id} is not in 0..{num_processes - 1}")
    if ":" not in coordinator:
        raise ConfigError(f"--coordinator {coordinator!r}: expected HOST:PORT")
    if num_processes > 1:
        # a CPU program that a multi-process job loads from JAX's persistent compilation cache
        # hangs in its first collective (jax 0.12, Gloo): such jobs compile afresh
        jax.config.update("jax_enable_compilation_cache", False)
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id,
                               heartbeat_timeout_seconds=heartbeat_timeout_s)


def is_main() -> bool:
    """True in the process that writes (process 0; the only one without multi-process)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process got here (nothing to wait for in a single process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"protstore-{name}")
