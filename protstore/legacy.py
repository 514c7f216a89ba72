"""The predecessor's pickle formats, read only when the caller opts in (``allow_pickle``).

Unpickling runs code stored in the file, so every reader here refuses with a
:class:`~protstore.errors.PickleRefusedError` unless ``allow_pickle`` is given (``--allow-pickle``
on the command line). Two formats:

- the predecessor's training checkpoints ``epoch<N>.pkl``: ``{'trainer_state': {'params': ...}}``,
  converted into protstore checkpoint groups by :func:`import_checkpoints`;
- a ``params.pkl``: the nested dict ``{'prior': ..., 'model': ...}`` of NumPy arrays that
  ``train`` and ``ema --pkl`` write for the predecessor's tools, read back by
  :func:`read_params_pickle` (``evaluate``/``simulate --params params.pkl``).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from .checkpoints import CHECKPOINTS_DIR, write_checkpoint
from .errors import PickleRefusedError, ProtstoreError
from .location import Location, as_location

_EPOCH = re.compile(r"epoch[_-]?(\d+)")


def import_checkpoints(source: str | Path, out: str | Path, *, allow_pickle: bool = False,
                       steps_per_epoch: int | None = None,
                       echo: Callable[[str], None] = print) -> list[Path]:
    """Convert the predecessor's ``epoch*.pkl`` files (``{'trainer_state': {'params': ...}}``)
    into checkpoint groups ``out/checkpoints/step_<8-digit step>``. Unpickling runs code from the
    file, so the caller must opt in with the ``allow_pickle`` flag; ``*_error_state.pkl`` and
    ``*.meta.pkl`` are skipped."""
    source = Path(source)
    files = sorted(p for p in source.glob("epoch*.pkl")
                   if not p.name.endswith(("_error_state.pkl", ".meta.pkl")))
    if not files:
        raise ProtstoreError(f"{source}: no epoch*.pkl checkpoint files")
    if not allow_pickle:
        raise PickleRefusedError(f"{files[0]}: importing pickle checkpoints runs code stored in "
                                 "them; pass --allow-pickle only for files you trust")
    written = []
    for path in sorted(files, key=lambda p: int(_EPOCH.search(p.name).group(1))
                       if _EPOCH.search(p.name) else -1):
        match = _EPOCH.search(path.name)
        if match is None:
            raise ProtstoreError(f"{path}: no epoch number in the file name")
        epoch = int(match.group(1))
        try:
            with open(path, "rb") as fh:
                blob = pickle.load(fh)  # noqa: S301 - explicitly allowed by the user
            params = blob["trainer_state"]["params"]
        except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError) as exc:
            raise ProtstoreError(f"{path}: not a predecessor checkpoint "
                                 f"(expected trainer_state['params']: {exc!r})") from None
        params = jax.tree.map(np.asarray, _as_plain_dict(params, path))
        step = epoch * steps_per_epoch if steps_per_epoch else epoch
        attrs = {"kind": "imported", "step": step, "epoch": epoch,
                 "model": {"factory": "unknown (imported from pickle)", "options": {}},
                 "source": str(path.resolve()),
                 "step_unit": "step" if steps_per_epoch else "epoch"}
        target = as_location(out) / f"{CHECKPOINTS_DIR}/step_{step:08d}"
        written.append(write_checkpoint(target, params, attrs))
        echo(f"{path.name} -> {target}")
    return written


def _as_plain_dict(tree, path) -> dict:
    """Nested mappings (dict, FrozenDict, ...) as plain dicts."""
    if hasattr(tree, "items"):
        return {str(k): _as_plain_dict(v, path) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        raise ProtstoreError(f"{path}: params hold a {type(tree).__name__}; only nested dicts of "
                             "arrays can be imported")
    return tree


def read_params_pickle(path: Location, *, allow_pickle: bool = False) -> dict:
    """The params dict of a ``params.pkl`` (``{'prior': ..., 'model': ...}``, leaves as NumPy
    arrays), only with ``allow_pickle``; which model reads them is the caller's to say."""
    if not allow_pickle:
        raise PickleRefusedError(f"{path}: reading a pickle runs code stored in it; pass "
                                 "--allow-pickle only for files you trust")
    try:
        params = pickle.loads(path.read_bytes(""))  # noqa: S301 - explicitly allowed by the user
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise ProtstoreError(f"{path}: cannot read params pickle ({exc})") from None
    if not isinstance(params, dict) or "prior" not in params or "model" not in params:
        raise ProtstoreError(f"{path}: expected a dict with 'prior' and 'model' params")
    return jax.tree.map(np.asarray, params)
