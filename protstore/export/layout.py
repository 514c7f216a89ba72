"""The pieces of an export layout: its datasets (:class:`Column`) and what every format
stores beside the peers' own fields."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .frames import Part


@dataclass(frozen=True)
class Column:
    """One dataset of a protein's group: ``name`` in the file, filled from
    :meth:`~protstore.export.frames.Block.get` ``key`` as ``dtype``, with ``attrs``."""

    name: str
    key: str
    dtype: type
    attrs: dict = field(default_factory=dict)


def per_frame_columns() -> list[Column]:
    """Where each frame came from, in every format: ``frame``, ``temperature``, ``replica``,
    ``source_frame``, ``split``."""
    return [Column("frame", "frame", np.int32, {"content": "frame index in the store's "
                                                            "protein group"}),
            Column("temperature", "temperature", np.float32, {"unit": "K"}),
            Column("replica", "replica", np.int32, {"content": "replica of the source run"}),
            Column("source_frame", "source_frame", np.int32,
                   {"content": "frame index in the source run"}),
            Column("split", "split", np.int8, {"content": "plan part: 0 train, 1 val, 2 test"})]


def protein_attrs(group, part: Part) -> None:
    """The protein's id and per-bead topology as attributes of its group."""
    group.attrs["protein"] = part.protein
    group.attrs["bucket"] = part.bucket
    group.attrs["resname"] = np.array([str(r) for r in part.resname], dtype="S")
    group.attrs["resid"] = part.resid.astype(np.int32)
    group.attrs["chain"] = np.array([str(c) for c in part.chain], dtype="S")
