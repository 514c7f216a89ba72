"""Progress bars that suit where stderr goes: tqdm's bar on a terminal (or a Jupyter widget),
plain lines in a log file, a pipe or CI.

On a terminal a bar redraws itself with carriage returns and cursor moves; in a log those are
escape codes and hundreds of half-lines, and every message written beside a bar repeats it.
Off a terminal :func:`progress_bar` gives a bar that writes whole lines only: one at most every
``LINE_EVERY_S`` seconds while there is progress, and one when a bar that stays
(``leave=True``) closes; nothing when it is redrawn around a message. Every long-running
protstore command goes through here.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm as auto_tqdm
from tqdm.std import tqdm as std_tqdm

LINE_EVERY_S = 30.0  # seconds between two progress lines of one bar off a terminal
LINE_FORMAT = "{desc}{desc_sep}{n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def is_terminal(stream) -> bool:
    """Whether ``stream`` shows a redrawn bar: a terminal, or a Jupyter kernel's stream."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty, or closed
        return False
    return type(stream).__module__.startswith("ipykernel")


def progress_bar(iterable=None, *, file=None, **kwargs):
    """A tqdm progress bar (same arguments) on ``file`` (default: stderr now): tqdm's own on a
    terminal, else one that writes plain lines (module docstring)."""
    stream = sys.stderr if file is None else file
    cls = auto_tqdm if is_terminal(stream) else LineBar
    return cls(iterable, file=stream, **kwargs)


def write_line(message: str, file=None) -> None:
    """Write a message line beside any open bars (which stay whole on a terminal)."""
    auto_tqdm.write(message, file=sys.stderr if file is None else file)


class LineBar(std_tqdm):
    """A tqdm bar that writes whole lines (``desc: n/total unit [elapsed<remaining, rate]``),
    no carriage returns or escape codes: one at most every ``LINE_EVERY_S`` seconds when the
    count has moved, and a last one when a ``leave=True`` bar closes."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("bar_format", LINE_FORMAT.replace("{desc_sep}", ": " if kwargs.get(
            "desc") else ""))
        # every update reaches display(), which decides (cheaply) whether a line is due
        kwargs.update(dynamic_ncols=False, ascii=True, mininterval=0, miniters=1)
        self._line_t = time.monotonic()
        self._line_n = None
        super().__init__(*args, **kwargs)
        self._line_n = self.n  # the opening state is not worth a line

    def display(self, msg=None, pos=None) -> bool:
        if self._line_n is None or msg == "":
            return True
        now = time.monotonic()
        if self.n != self._line_n and now - self._line_t >= LINE_EVERY_S:
            self._write_line(now)
        return True

    def _write_line(self, now: float) -> None:
        self._line_t, self._line_n = now, self.n
        self.fp.write(self.format_meter(**self.format_dict).rstrip() + "\n")
        self.fp.flush()

    def clear(self, nolock: bool = False) -> None:
        """Nothing to clear: a line written stays."""

    def moveto(self, n: int) -> None:
        """No cursor to move."""

    def close(self) -> None:
        if self.disable:
            return
        if self.leave and self.n != self._line_n:
            self._write_line(time.monotonic())
        self.disable = True
        self._decr_instances(self)
