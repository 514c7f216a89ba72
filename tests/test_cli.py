import subprocess
import sys

import numpy as np
import pytest

from protstore.cli import main

from helpers import write_mdcath


def test_ingest_info_validate(tmp_path, capsys):
    write_mdcath(tmp_path / "toy.h5")
    store = str(tmp_path / "s.zarr")
    assert main(["ingest", str(tmp_path / "toy.h5"), "--store", store, "--no-progress"]) == 0
    assert main(["info", store]) == 0
    out = capsys.readouterr().out
    assert "proteins     1" in out and "compression ratio" in out and "toy1" in out
    assert main(["validate", store, "--no-progress"]) == 0
    assert "0 error(s)" in capsys.readouterr().out


def test_failures_give_one_line_and_nonzero_exit(tmp_path, capsys):
    np.savez(tmp_path / "p.npz", R=np.zeros((2, 3, 3), np.float32),
             F=np.zeros((2, 3, 3), np.float32), resname=np.array(["ALA"] * 3),
             aa_to_id=np.array({"ALA": 0}, dtype=object))
    store = str(tmp_path / "s.zarr")
    assert main(["ingest", str(tmp_path / "p.npz"), "--store", store, "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "--allow-pickle" in out
    assert main(["info", str(tmp_path / "missing.zarr")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("protstore: error:") and "missing.zarr" in err[0]


@pytest.mark.slow
def test_console_script_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "protstore.cli", "--version"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("protstore ")


def test_every_command_has_a_help_page():
    import argparse

    from protstore.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        assert name in command.format_help()  # a '%' in a help string raises here
