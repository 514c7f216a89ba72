"""Training benchmark: step throughput per bucket shape, time waiting for data, and the
sequential vs interleaved schedules (final validation RMSE on every bucket).

    python benchmarks/bench_train.py [--store demo-output/store.zarr] [--epochs 3] [--steps 20]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import jax

from _demo import demo_args
from protstore.batching import BatchLoader, LoaderConfig
from protstore.model import batch_census, default_priors, load_model, total_energy
from protstore.train import TrainConfig, TrainState, make_optimizer, make_train_step, train
from protstore.train.step import BATCH_KEYS


def throughput(store, plan, batch_size: int, steps: int) -> None:
    model = load_model()
    params = {"prior": default_priors(),
              "model": model.init(jax.random.PRNGKey(0), {"force_rms": 5.0})}
    optimizer = make_optimizer(TrainConfig(), 1000)
    # the step as training runs it: the neighbour census in the same program
    step = make_train_step(total_energy(model), optimizer, neighbors=batch_census(model))
    print(f"\n## Train-step throughput (batch {batch_size}, default network, neighbour census "
          f"in the step, {steps} timed steps after one compile step)")
    print(f"{'bucket':>6s} {'N_max':>6s} {'compile s':>10s} {'step ms':>8s} {'frames/s':>9s} "
          f"{'data wait %':>12s}")
    for b in plan.buckets:
        loader = BatchLoader(store, plan, LoaderConfig(batch_size=batch_size, buckets=(b.index,)))
        state = jax.device_put(TrainState(params, optimizer.init(params)))
        batches = loader.epoch(0)
        t0 = time.perf_counter()
        state, loss, _ = step(state, {k: next(batches)[k] for k in BATCH_KEYS})
        loss.block_until_ready()
        compile_s = time.perf_counter() - t0
        wait = 0.0
        t0 = time.perf_counter()
        n = 0
        for _ in range(steps):
            tw = time.perf_counter()
            batch = next(batches, None)
            wait += time.perf_counter() - tw
            if batch is None:
                break
            state, loss, _ = step(state, {k: batch[k] for k in BATCH_KEYS})
            loss.block_until_ready()  # honest per-step timing
            n += 1
        dt = time.perf_counter() - t0
        print(f"{b.index:6d} {b.n_max:6d} {compile_s:10.1f} {1000 * dt / n:8.0f} "
              f"{batch_size * n / dt:9.0f} {100 * wait / dt:11.1f}%")


def schedules(store, plan, epochs: int, batch_size: int) -> None:
    print(f"\n## Sequential vs interleaved ({epochs} epochs per phase, batch {batch_size}; "
          "validation force RMSE per component, kcal/mol/Å, final params)")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for schedule in ("interleaved", "sequential"):
            t0 = time.perf_counter()
            config = TrainConfig(epochs=epochs, schedule=schedule, learning_rate=3e-3,
                                 loader=LoaderConfig(batch_size=batch_size))
            r = train(store, plan, Path(tmp) / schedule, config,
                progress=False, echo=lambda m: None)
            rows[schedule] = (r, time.perf_counter() - t0)
    buckets = [str(b.index) for b in plan.buckets]
    print(f"{'schedule':<12s} {'steps':>6s} {'time s':>7s} {'all':>7s} " +
          " ".join(f"{'bucket ' + k:>9s}" for k in buckets))
    for schedule, (r, dt) in rows.items():
        print(f"{schedule:<12s} {r.steps:6d} {dt:7.0f} {r.final_val_rmse:7.3f} " +
              " ".join(f"{r.final_val_rmse_per_bucket[k]:9.3f}" for k in buckets))
    seq = rows["sequential"][0].metrics
    print("sequential, validation RMSE per bucket after each phase (forgetting shows as a rise "
          "in earlier buckets):")
    for m in seq:
        if m["epoch"] == epochs:
            print(f"  after bucket {m['bucket']}: " + " ".join(
                f"b{k}={m['val_rmse_per_bucket'][k]:.3f}" for k in buckets))


def main() -> None:
    args, store, plan = demo_args(__doc__, epochs=3, batch=16, steps=20)
    print(plan.table())
    throughput(store, plan, args.batch, args.steps)
    schedules(store, plan, args.epochs, args.batch)


if __name__ == "__main__":
    main()
