"""Hashable, immutable forms of JSON-like values: what a cache key or a dask task argument holds
in place of a dict (model options, storage options), and back.

``freeze`` turns a mapping into a :class:`FrozenMap` (its ``(key, value)`` pairs sorted by key),
a list or tuple into a tuple, recursively; ``thaw`` undoes it the way a JSON round trip would
(tuples come back as lists).
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import ConfigError


class FrozenMap(tuple):
    """A mapping frozen as the tuple of its ``(key, value)`` pairs, sorted by key."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"FrozenMap({tuple(self)!r})"


def freeze(value, where: str = "value"):
    """``value`` with every mapping a :class:`FrozenMap` and every list a tuple; a leaf that is
    not hashable is a :class:`ConfigError` naming ``where``."""
    if isinstance(value, FrozenMap):
        return value
    if isinstance(value, Mapping):
        return FrozenMap(sorted((str(k), freeze(v, f"{where}[{k!r}]")) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(freeze(v, f"{where}[{i}]") for i, v in enumerate(value))
    try:
        hash(value)
    except TypeError:
        raise ConfigError(f"{where}: a {type(value).__name__} is not a JSON-like value") from None
    return value


def thaw(value):
    """The JSON-like value of a frozen one: FrozenMap -> dict, tuple -> list."""
    if isinstance(value, FrozenMap):
        return {k: thaw(v) for k, v in value}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value
