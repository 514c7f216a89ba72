"""Imports flow one way: every edge between protstore's parts points down the layers below, and
no module imports itself back through others (top-level or deferred imports alike)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "protstore"

# Each part of the package (a top-level module or subpackage) and its layer: a part may import
# only parts of lower layers. Parts of one layer do not import each other.
LAYERS = [
    ["_version", "errors", "units"],
    ["vocab", "pools", "schemas", "timeseries", "cluster", "prefetch", "selection", "structure",
     "frozen", "progress"],
    ["location"],
    ["plotting"],
    ["store"],
    ["ingest", "model", "batching"],
    ["checkpoints"],
    ["ema", "train", "legacy"],
    ["evaluate", "export", "torch"],
    ["simulate"],
    ["compare"],
    ["report"],
    ["demo"],
    ["cli", "__main__"],
    ["__init__"],
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    parts = ["protstore", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The protstore modules ``name`` imports anywhere in its body (deferred imports too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # ``from . import accessor`` imports the submodule, ``from .x import f`` module x
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        out |= {t for t in targets if t == "protstore" or t.startswith("protstore.")}
    return {t for t in out if t in known and t != name}


def part(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


GRAPH = {name: imports_of(name, path, set(modules())) for name, path in modules().items()}


def test_every_part_has_a_layer():
    assert {part(m) for m in GRAPH} <= set(RANK), sorted({part(m) for m in GRAPH} - set(RANK))


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_imports_point_down_the_layers(name):
    upward = sorted(t for t in GRAPH[name]
                    if part(t) != part(name) and RANK[part(t)] >= RANK[part(name)])
    assert not upward, f"{name} imports {upward} (layer {RANK[part(name)]}: {part(name)})"


def test_no_import_cycles():
    cycles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for t in sorted(GRAPH[node]):
            # a package's __init__ imports its own submodules; a submodule importing the package
            # back is the cycle, seen from the submodule's side
            if state.get(t) == "open":
                cycles.append(path[path.index(t):] + [t])
            elif t not in state:
                visit(t, path + [t])
        state[node] = "done"

    for node in sorted(GRAPH):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_walk_sees_deferred_and_relative_imports():
    """The graph is not empty by accident: known edges of each kind are in it."""
    assert "protstore.store" in GRAPH["protstore.batching.views"]  # from ..store import Store
    assert "protstore.batching.accessor" in GRAPH["protstore.batching.views"]  # from . import x
    assert "protstore.train.priors" in GRAPH["protstore.cli.training"]  # deferred, in a function
