"""Parameters to evaluate: a checkpoint group (training, best/final, EMA) or a pickle."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from ..checkpoints import CheckpointError, read_checkpoint
from ..errors import PickleRefusedError, ProtstoreError
from ..model.energy import DEFAULT_MODEL


@dataclass(frozen=True)
class ModelParams:
    """Params plus the model that reads them (``factory`` 'package.module:factory')."""

    params: dict
    factory: str
    options: dict


def load_params(path: str | Path, *, allow_pickle: bool = False,
                model: str | None = None) -> ModelParams:
    """Read params from a checkpoint group or (only with ``allow_pickle``) a ``params.pkl``.

    The model comes from the checkpoint's attrs; a pickle carries none, so ``model`` names it
    (default: protstore's network, whose params hold every non-shape hyperparameter).
    """
    path = Path(path)
    if path.is_dir():
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError as exc:
            raise ProtstoreError(str(exc)) from None
        spec = ckpt.attrs["model"]
        factory = model or spec["factory"]
        if "(imported" in factory:
            raise ProtstoreError(f"{path}: imported from the predecessor; its params belong to "
                                 "another model (give --model package.module:factory)")
        return ModelParams(ckpt.params, factory, spec.get("options", {}))
    if not path.exists():
        raise ProtstoreError(f"{path}: no such checkpoint or params file")
    if not allow_pickle:
        raise PickleRefusedError(f"{path}: reading a pickle runs code stored in it; pass "
                                 "--allow-pickle only for files you trust")
    try:
        with open(path, "rb") as fh:
            params = pickle.load(fh)  # noqa: S301 - explicitly allowed by the user
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise ProtstoreError(f"{path}: cannot read params pickle ({exc})") from None
    if not isinstance(params, dict) or "prior" not in params or "model" not in params:
        raise ProtstoreError(f"{path}: expected a dict with 'prior' and 'model' params")
    return ModelParams(jax.tree.map(np.asarray, params), model or DEFAULT_MODEL, {})
