"""A learned energy named as data: :class:`ModelSpec` (factory + options), hashable, so that it
can key the caches of jitted functions and travel through dask as it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..frozen import FrozenMap, freeze, thaw
from .energy import DEFAULT_MODEL, EnergyModel, load_model


@dataclass(frozen=True)
class ModelSpec:
    """The model ``factory`` ``'package.module:factory'`` and its keyword ``options``.

    ``options`` may be given as a dict or as pairs; it is kept as a :class:`FrozenMap` (the
    ``(name, value)`` pairs sorted by name, nested lists and dicts frozen too), so two specs
    with the same options are equal and hash alike. Building the model (:meth:`load`) imports
    and calls the factory: the name must come from the user or be built in
    (:func:`~protstore.model.energy.trusted_model`).
    """

    factory: str = DEFAULT_MODEL
    options: FrozenMap = FrozenMap()

    def __post_init__(self):
        if not isinstance(self.factory, str):
            raise ConfigError(f"model factory must be a 'package.module:factory' string, not "
                              f"{self.factory!r}")
        options = self.options if isinstance(self.options, FrozenMap) else dict(self.options)
        object.__setattr__(self, "options", freeze(options, f"model {self.factory!r} options"))

    @property
    def options_dict(self) -> dict[str, Any]:
        """The options as keyword arguments (lists where the frozen form holds tuples, as a
        JSON round trip gives them)."""
        return thaw(self.options)

    def to_doc(self) -> dict:
        """``{"factory": ..., "options": {...}}``: the ``model`` field of checkpoints and
        trajectories."""
        return {"factory": self.factory, "options": self.options_dict}

    @classmethod
    def from_doc(cls, doc: dict) -> "ModelSpec":
        """The spec of a ``model`` document field (``options`` may be absent)."""
        return cls(doc["factory"], doc.get("options") or {})

    def load(self) -> EnergyModel:
        """The EnergyModel: the factory imported and called with the options."""
        return load_model(self.factory, self.options_dict)
