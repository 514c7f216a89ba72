"""Training on two processes (JAX's multi-process runtime on CPU, 127.0.0.1): the parameters of
a single-process run with the same global batch; a process that dies stops the other."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from protstore.checkpoints import read_checkpoint

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(store: Path, out: Path, *extra: str, process: tuple[int, int] | None = None,
           port: int = 0) -> subprocess.Popen:
    args = [sys.executable, "-m", "protstore.cli", "train", str(store), "--plan", "p",
            "--out", str(out), "--epochs", "1", "--batch-size", "8", "--no-progress", *extra]
    if process is not None:
        args += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(process[1]),
                 "--process-id", str(process[0])]
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


@pytest.mark.slow
def test_two_processes_train_the_parameters_of_one(train_store, tmp_path):
    store = train_store.root
    single = _train(store, tmp_path / "one")
    port = _free_port()
    procs = [_train(store, tmp_path / "two", process=(i, 2), port=port) for i in range(2)]
    try:
        outs = [p.communicate(timeout=300) for p in [single, *procs]]
    finally:
        for p in [single, *procs]:
            p.kill()
    assert [p.returncode for p in [single, *procs]] == [0, 0, 0], [e[-2000:] for _, e in outs]
    assert "trained" in outs[1][0] and "trained" in outs[2][0]  # both report the result
    one = read_checkpoint(tmp_path / "one" / "final").params
    two = read_checkpoint(tmp_path / "two" / "final").params
    close = jax.tree.map(lambda a, b: np.allclose(a, b, rtol=2e-4, atol=1e-6), one, two)
    assert all(jax.tree.leaves(close))
    # process 0 wrote the run, once: the step-0 line and one epoch
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]


@pytest.mark.slow
def test_a_process_that_dies_stops_the_other(train_store, tmp_path):
    port = _free_port()
    procs = [_train(train_store.root, tmp_path / "run", "--epochs", "50", process=(i, 2),
                    port=port) for i in range(2)]
    deadline = time.time() + 120
    while not (tmp_path / "run" / "checkpoints" / "step_00000000").exists():
        if time.time() > deadline or procs[0].poll() is not None:
            for p in procs:
                p.kill()
            pytest.fail(f"no step-0 checkpoint in 120 s: {procs[0].communicate()[1][-2000:]}")
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    t0 = time.time()
    _, err = procs[0].communicate(timeout=120)  # not forever
    assert procs[0].returncode == 1 and time.time() - t0 < 90  # not a native abort (-6)
    assert "protstore: error: process 0 of 2: the training processes lost each other" in err
    assert "--resume" in err and "Check failure stack trace" not in err
