"""The command line's defaults are the library's: every option of a command that sets a field of
the library's config (or a keyword of the function it calls) defaults to that field's default,
or to None where the command takes the library's own (train: the config file's, then
TrainConfig's)."""

from __future__ import annotations

import argparse
import dataclasses
import inspect

import pytest

from protstore.batching.spec import PlanSpec
from protstore.cli import build_parser
from protstore.compare import compare
from protstore.demo.dataset import DemoConfig
from protstore.ema import compute_ema
from protstore.evaluate import EvalConfig
from protstore.simulate.run import SimulateConfig
from protstore.train import TrainConfig
from protstore.train.priors import fit_priors_to_file

from protstore.cli.training import TRAIN_FLAGS
from protstore.train.config import LOADER_FIELDS, TRAINING_LOADER


def _fields(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING}


def _keywords(fn) -> dict:
    return {n: p.default for n, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


# command: (the library's defaults, CLI dest -> library name where they differ)
LIBRARY = {
    "bucket": (_fields(PlanSpec), {"bucket_boundaries": "boundaries"}),
    "train": ({**_fields(TrainConfig), **{k: getattr(TRAINING_LOADER, k) for k in LOADER_FIELDS}},
              TRAIN_FLAGS),
    "evaluate": (_fields(EvalConfig), {}),
    "simulate": (_fields(SimulateConfig), {"steps": "n_steps", "replicas": "n_replicas"}),
    "compare": (_keywords(compare), {"bins": "n_bins"}),
    "ema": (_keywords(compute_ema), {}),
    "fit-priors": (_keywords(fit_priors_to_file), {"only_temperature": "temperature",
                                                   "temperature": "unknown_temperature"}),
    "demo-data": (_fields(DemoConfig), {}),
}
MAY_DEFER = {"train"}  # None: the config file's value, else TrainConfig's


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("command", sorted(LIBRARY))
def test_every_option_defaults_to_the_library_default(command):
    defaults, renamed = LIBRARY[command]
    parser = _commands()[command]
    checked = []
    for action in parser._actions:
        name = renamed.get(action.dest, action.dest)
        if name not in defaults or action.default is argparse.SUPPRESS:
            continue
        want = defaults[name]
        got = action.default
        if isinstance(want, tuple) and isinstance(got, list):
            got = tuple(got)
        if command in MAY_DEFER and got is None:
            checked.append(name)
            continue
        assert got == want, f"protstore {command} --{action.dest.replace('_', '-')}: " \
                            f"{got!r}, the library's {name} = {want!r}"
        checked.append(name)
    assert len(checked) >= 2, (command, checked)  # the table names real options


def test_the_plan_and_the_command_agree_on_the_split():
    """The decision #24 asked for: one default split, the honest one (whole proteins held out),
    and one validation fraction, in the library and on the command line."""
    bucket = _commands()["bucket"]
    split = next(a for a in bucket._actions if a.dest == "split")
    assert split.default == PlanSpec().split == "protein"
    assert list(split.choices) == ["none", "protein", "frame", "run"]
