"""Progress off a terminal: whole lines, no carriage returns or escape codes; an ingest re-run
prints one line per skipped file; on a terminal tqdm's own bar."""

from __future__ import annotations

import io

import pytest

from protstore import progress
from protstore.cli import main

from helpers import write_mdcath


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_an_ingest_rerun_in_a_log_prints_one_line_per_skipped_file(tmp_path, capfd):
    for name, seed in (("a1", 0), ("b1", 1), ("c1", 2)):
        write_mdcath(tmp_path / f"{name}.h5", domain=name, seed=seed)
    files = [str(tmp_path / f"{n}.h5") for n in ("a1", "b1", "c1")]
    assert main(["ingest", *files, "--store", str(tmp_path / "s.zarr")]) == 0
    first = capfd.readouterr().err
    assert "\r" not in first and "\x1b" not in first
    assert main(["ingest", *files, "--store", str(tmp_path / "s.zarr")]) == 0
    err = capfd.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert lines[:3] == [f"{n}: already in the store from the same source; skipped"
                         for n in ("a1", "b1", "c1")]
    assert len(lines) == 4 and lines[3].startswith("files: 3/3 file [")  # the bar's last line


def test_a_bar_off_a_terminal_writes_a_line_at_most_every_interval(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)
    bar = progress.progress_bar(total=3, desc="validate", unit="protein", file=out)
    assert isinstance(bar, progress.LineBar)
    for i in range(3):
        bar.update()
        progress.write_line(f"message {i}", file=out)  # not followed by the bar again
    bar.close()
    lines = out.getvalue().splitlines()
    assert [line.split(" [")[0] for line in lines] == [
        "validate: 1/3 protein", "message 0", "validate: 2/3 protein", "message 1",
        "validate: 3/3 protein", "message 2"]  # closing at 3/3 adds nothing new
    monkeypatch.setattr(progress, "LINE_EVERY_S", 3600.0)
    quiet = io.StringIO()
    with progress.progress_bar(range(50), desc="files", file=quiet) as bar:
        for _ in bar:
            pass
    assert quiet.getvalue().splitlines() == [quiet.getvalue().splitlines()[0]]
    assert quiet.getvalue().startswith("files: 50/50 it [")  # only the closing line
    transient = io.StringIO()
    with progress.progress_bar(total=5, file=transient, leave=False) as bar:
        bar.update(5)
    assert transient.getvalue() == ""  # a bar that does not stay leaves nothing


def test_on_a_terminal_the_bar_is_tqdms_own():
    term = _Terminal()
    bar = progress.progress_bar(total=2, desc="files", file=term)
    assert not isinstance(bar, progress.LineBar)
    bar.update(2)
    bar.close()
    assert "\r" in term.getvalue()
    assert progress.progress_bar(total=1, file=term, disable=True).disable


@pytest.mark.parametrize("stream", [io.StringIO(), None])
def test_a_stream_without_a_terminal_is_not_one(stream):
    assert not progress.is_terminal(stream)
