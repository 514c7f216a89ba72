"""Write docs/api.md, the Python API page, from the docstrings of every public name (each
subpackage's ``__all__``): ``python docs/gen_api.py`` (``make api``). A test checks the page is
current."""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

PAGE = Path(__file__).with_name("api.md")
MODULES = ["protstore", "protstore.store", "protstore.ingest", "protstore.batching", "protstore.selection",
           "protstore.model", "protstore.train", "protstore.checkpoints", "protstore.ema",
           "protstore.evaluate", "protstore.simulate", "protstore.compare", "protstore.export", "protstore.errors"]


def _signature(obj) -> str:
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""
    text = re.sub(r"<function (\S+) at 0x[0-9a-f]+>", r"\1", text)  # no addresses
    return re.sub(r"^\(self(: [\w.]+)?(, )?", "(", text)


def _summary(obj) -> str:
    return (inspect.getdoc(obj) or "").split("\n\n")[0].replace("\n", " ").strip()


def _methods(cls) -> list[str]:
    """Public methods and properties a protstore class defines itself or takes from the parts
    it is made of (protstore classes that are not public names: the Store's write side...)."""
    lines, members = [], {}
    for base in reversed(cls.__mro__):
        if base is cls or (base.__module__.startswith("protstore")
                           and base.__name__ not in getattr(sys.modules[base.__module__.rsplit(
                               ".", 1)[0]], "__all__", ())):
            members.update(vars(base))
    for name, member in members.items():
        if name.startswith("_") or not (callable(member) or isinstance(member, property)):
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        sig = "" if isinstance(member, property) else _signature(member)
        lines.append(f"- `{name}{sig}`" + (f": {_summary(member)}" if _summary(member) else ""))
    return lines


def _entry(name: str, obj) -> list[str]:
    if inspect.isclass(obj):
        kind = "class"
    elif callable(obj):
        kind = "def"
    else:
        return [f"- `{name}` = `{obj!r}`" if len(repr(obj)) < 80 else f"- `{name}`"]
    lines = [f"### `{name}{_signature(obj)}`", ""]
    if _summary(obj):
        lines += [_summary(obj), ""]
    if kind == "class" and obj.__module__.startswith("protstore") and _methods(obj):
        lines += [*_methods(obj), ""]
    return lines


def public_names(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items() if not n.startswith("_")
                 and getattr(v, "__module__", None) == module.__name__]
    return sorted(names)


def render() -> str:
    out = ["# protstore Python API", "",
           "Generated from the docstrings by `docs/gen_api.py` (do not edit by hand). Shapes and "
           "units are in each docstring; the command line is in [reference.md](reference.md).",
           ""]
    seen: dict[int, str] = {}  # a name re-exported by several modules is described once
    for modname in MODULES:
        module = importlib.import_module(modname)
        out += [f"## `{modname}`", ""]
        doc = (inspect.getdoc(module) or "").split("\n\n")[0].replace("\n", " ")
        if doc:
            out += [doc, ""]
        constants = []
        for name in public_names(module):
            obj = getattr(module, name)
            if (inspect.isclass(obj) or callable(obj)) and id(obj) in seen:
                out += [f"- `{name}`: see `{seen[id(obj)]}`", ""]
            elif inspect.isclass(obj) or callable(obj):
                seen[id(obj)] = f"{modname}.{name}"
                out += _entry(name, obj)
            elif not inspect.ismodule(obj):
                constants += _entry(name, obj)
        if constants:
            out += ["Constants:", "", *constants, ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    PAGE.write_text(render())
    print(f"wrote {PAGE}")
