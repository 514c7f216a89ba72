"""Where a run's metrics go besides ``metrics.jsonl``: loggers, plain objects with two methods.

    class MetricsLogger(Protocol):
        def log(self, line: dict) -> None: ...   # a metrics.jsonl line (schemas/metrics.json)
        def close(self) -> None: ...

``train(..., loggers=[...])`` takes such objects and the names of registered ones (``csv``,
``tensorboard``; ``register_logger`` adds a name). Every line ``metrics.jsonl`` gets (step 0's
validation, every epoch end) goes to every logger, after it is in ``metrics.jsonl``, on process
0 only; ``train`` closes them when it returns or raises. A registered logger is made by
``factory(run_dir, history=lines, n_buckets=n)``, where ``history`` is ``metrics.jsonl`` as it
stands when training starts (empty for a new run; on resume the lines before the resumed
position): the built-in ones write it first, so that what they show is ``metrics.jsonl``, never
a row twice. No global state beyond the registry of names.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from ..errors import ConfigError
from ..location import Location
from ..schemas import load_schema


@runtime_checkable
class MetricsLogger(Protocol):
    def log(self, line: dict) -> None: ...

    def close(self) -> None: ...


LoggerFactory = Callable[..., MetricsLogger]
LOGGERS: dict[str, LoggerFactory] = {}


def register_logger(name: str, factory: LoggerFactory) -> None:
    """``factory(run_dir: Location, *, history: list[dict], n_buckets: int) -> MetricsLogger``,
    usable as ``loggers=[name]``; a ``factory.check(run_dir)``, if it has one, refuses what
    cannot work before the run directory is written."""
    LOGGERS[name] = factory


def csv_columns(n_buckets: int) -> list[str]:
    """The header of ``metrics.csv``: the fields of schemas/metrics.json in their order, the
    per-bucket validation RMSEs as ``val_rmse_bucket_<k>`` columns, one per bucket of the plan."""
    columns = []
    for name in load_schema("metrics")["required"]:
        if name == "val_rmse_per_bucket":
            columns += [f"val_rmse_bucket_{k}" for k in range(n_buckets)]
        else:
            columns.append(name)
    return columns


def flat_metrics(line: dict) -> dict:
    """A metrics line with ``val_rmse_per_bucket`` spread into ``val_rmse_bucket_<k>`` keys."""
    flat = {k: v for k, v in line.items() if k != "val_rmse_per_bucket"}
    flat.update({f"val_rmse_bucket_{k}": v
                 for k, v in line.get("val_rmse_per_bucket", {}).items()})
    return flat


class CSVLogger:
    """``RUN_DIR/metrics.csv``: one row per metrics line, a header that does not change during
    a run (``csv_columns``), empty cells for null figures, numbers as ``repr`` (they read back
    exactly). Opened with ``history``, it rewrites the file from it (atomically): on resume its
    rows are ``metrics.jsonl``'s, never one twice."""

    FILE = "metrics.csv"

    def __init__(self, run_dir: Location, *, history: Sequence[dict] = (), n_buckets: int = 1):
        self.dir = run_dir
        self.columns = csv_columns(n_buckets)
        self.dir.write_bytes(self.FILE, self._rows([dict(zip(self.columns, self.columns))]
                                                   + [flat_metrics(m) for m in history]).encode())

    def _rows(self, rows: list[dict]) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, self.columns, extrasaction="ignore", lineterminator="\n")
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
        return out.getvalue()

    def log(self, line: dict) -> None:
        self.dir.append_text(self.FILE, self._rows([flat_metrics(line)]))

    def close(self) -> None:
        pass


#: metrics line field -> TensorBoard tag (per-bucket RMSEs: val/rmse_bucket_<k>)
TB_TAGS = {"train_loss": "train/loss", "train_rmse": "train/rmse", "val_rmse": "val/rmse",
           "frames_per_s": "perf/frames_per_s", "data_wait_s": "perf/data_wait_s",
           "epoch_time_s": "perf/epoch_time_s"}


def tensorboard_scalars(line: dict) -> dict[str, float]:
    """tag -> value of a metrics line's figures (null ones left out)."""
    found = {tag: line.get(name) for name, tag in TB_TAGS.items()}
    found.update({f"val/rmse_bucket_{k}": v
                  for k, v in line.get("val_rmse_per_bucket", {}).items()})
    return {tag: float(v) for tag, v in found.items()
            if isinstance(v, int | float) and math.isfinite(v)}


class TensorBoardLogger:
    """Event files in ``RUN_DIR/tensorboard/`` (tensorboardX, the ``tensorboard`` extra): the
    scalars of ``tensorboard_scalars`` at each line's ``step``. Opened with ``history``, it
    writes those lines first (on resume a new event file repeats them; TensorBoard shows the
    latest event of each step)."""

    DIR = "tensorboard"

    @staticmethod
    def check(run_dir: Location) -> None:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise ConfigError("--log tensorboard needs tensorboardX: pip install "
                              "'protstore[tensorboard]'") from None
        if not run_dir.local:
            raise ConfigError(f"--log tensorboard writes local event files; the run directory "
                              f"{run_dir} is not local")

    def __init__(self, run_dir: Location, *, history: Sequence[dict] = (), n_buckets: int = 1):
        self.check(run_dir)
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=os.path.join(run_dir.path, self.DIR))
        for line in history:
            self._add(line)
        self.writer.flush()

    def _add(self, line: dict) -> None:
        for tag, value in tensorboard_scalars(line).items():
            self.writer.add_scalar(tag, value, global_step=line["step"])

    def log(self, line: dict) -> None:
        self._add(line)
        self.writer.flush()  # a TensorBoard watching the run sees each epoch as it ends

    def close(self) -> None:
        self.writer.close()


register_logger("csv", CSVLogger)
register_logger("tensorboard", TensorBoardLogger)


def logger_names(text: str) -> list[str]:
    """``"tensorboard,csv"`` -> the registered names it lists (ConfigError naming the others)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise ConfigError(f"unknown logger {unknown[0]!r} (choose from "
                          f"{', '.join(sorted(LOGGERS))})")
    return names


def check_loggers(specs: Sequence, run_dir: Location) -> None:
    """Refuse, before anything is written, a logger that is neither a registered name nor an
    object with ``log`` and ``close``, or a registered one that cannot work here."""
    for spec in specs:
        if isinstance(spec, str):
            logger_names(spec)
            check = getattr(LOGGERS[spec], "check", None)
            if check is not None:
                check(run_dir)
        elif not isinstance(spec, MetricsLogger):
            raise ConfigError(f"logger {spec!r}: not a registered name "
                              f"({', '.join(sorted(LOGGERS))}) nor an object with log(line) "
                              f"and close()")


def open_loggers(specs: Sequence, run_dir: Location, history: list[dict],
                 n_buckets: int) -> list[MetricsLogger]:
    """The loggers of ``specs``: registered names made for ``run_dir``, objects as they are."""
    return [LOGGERS[s](run_dir, history=history, n_buckets=n_buckets) if isinstance(s, str)
            else s for s in specs]
