"""The store's commit lock (filelock): other processes wait while one holds it, a holder
killed with SIGKILL releases it, and protstore imports where there is no fcntl and no fork
(what Windows lacks)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from protstore.store.lock import store_lock
from protstore.store.staging import _pid_alive

REPO = Path(__file__).resolve().parents[1]
HOLD = """
import sys, time
from pathlib import Path
from protstore.store.lock import store_lock
with store_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL")
def test_another_process_waits_for_the_lock_until_its_killed_holder_is_gone(tmp_path):
    import signal

    env = dict(os.environ, PYTHONPATH=str(REPO))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        got = threading.Event()

        def take():
            with store_lock(tmp_path):
                got.set()

        waiter = threading.Thread(target=take, daemon=True)
        waiter.start()
        assert not got.wait(1.0)  # held by the other process: this one waits
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        assert got.wait(10)  # the kernel released it with its holder
        waiter.join(10)
    finally:
        holder.kill()
        holder.wait(10)
    assert (tmp_path / ".lock").is_file()  # left in place: later lockers share the file
    assert not _pid_alive(holder.pid) and _pid_alive(os.getpid())


@pytest.mark.slow
def test_protstore_imports_without_fcntl_or_fork():
    code = ("import os, sys\n"
            "sys.modules['fcntl'] = None\n"  # an import of fcntl now fails, as on Windows
            "del os.register_at_fork, os.fork\n"  # no fork: the stdlib then skips its hooks
            "import protstore, protstore.cli, protstore.store, protstore.ingest\n"
            "import protstore.store.lock, protstore.store.staging, protstore.store.writer\n"
            "print('imported')\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "imported"
    assert "fcntl" not in (REPO / "protstore/store/lock.py").read_text().split('"""', 2)[2]
