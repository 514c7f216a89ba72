"""Parameters to evaluate: a checkpoint group (training, best/final, EMA) or a params.pkl
(read by :mod:`protstore.legacy`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax

from ..checkpoints import check_same_structure, leaf_signature, read_checkpoint
from ..errors import CheckpointError
from ..errors import ConfigError, ProtstoreError
from ..legacy import read_params_pickle
from ..model.energy import DEFAULT_MODEL, trusted_model
from ..model.spec import ModelSpec
from ..location import as_location


@dataclass(frozen=True)
class ModelParams:
    """Params plus the model that reads them."""

    params: dict
    model: ModelSpec


def load_params(path: str | Path, *, allow_pickle: bool = False,
                model: str | None = None) -> ModelParams:
    """Read params from a checkpoint group or (only with ``allow_pickle``) a ``params.pkl``.

    The model is ``model`` when the user names one; else the checkpoint's stored factory, but
    only if it is one of protstore's built-in models (a checkpoint is data: the factory it
    names is never imported on its say-so, :func:`~protstore.model.energy.trusted_model`). A
    pickle carries no model: ``model`` or protstore's network, whose params hold every
    non-shape hyperparameter.
    """
    path = as_location(path)
    if path.exists("zarr.json"):
        ckpt = read_checkpoint(path)
        spec = ckpt.attrs["model"]
        if model is None and "(imported" in spec["factory"]:
            raise ConfigError(f"{path}: imported from the predecessor; its params belong to "
                              "another model (give --model package.module:factory)")
        factory = trusted_model(spec["factory"], model, str(path))
        return checked(ModelParams(ckpt.params, ModelSpec(factory, spec.get("options", {}))),
                       str(path))
    if not path.exists():
        raise ProtstoreError(f"{path}: no such checkpoint or params file")
    params = read_params_pickle(path, allow_pickle=allow_pickle)
    return checked(ModelParams(params, ModelSpec(model or DEFAULT_MODEL)), str(path))


def checked(params: ModelParams, where: str) -> ModelParams:
    """``params`` if the model's leaves are the ones the model makes (paths and shapes) and the
    priors' terms are all there, else a :class:`CheckpointError` naming the first leaf that
    differs."""
    from ..model import default_priors

    model = params.model.load()
    prior = params.params.get("prior")
    missing = sorted(set(default_priors()) - set(prior if isinstance(prior, dict) else {}))
    if missing:
        raise CheckpointError(f"{where}: leaf params['prior']['{missing[0]}'] is missing")
    expected = {"prior": prior,
                "model": jax.eval_shape(lambda key: model.init(key, {
                    "force_rms": 1.0, "max_neighbors": lambda cutoff: 0}), jax.random.PRNGKey(0))}
    signature = leaf_signature(expected)
    got = leaf_signature(params.params)
    for key in signature:  # frozen leaves may be sized from the data (a network's capacity)
        if "'frozen'" in key and key in got:
            signature[key] = got[key]
    check_same_structure(signature, params.params, where, f"model {params.model.factory}")
    return params
