"""The trajectory group: created empty, grown block by block, reopened to resume.

::

    TRAJ.zarr/
      zarr.json            attrs["protstore_trajectory"] (schemas/trajectory.json), consolidated
                           metadata of every array below (rewritten with each block)
      R                    float32 (replica, frame, atom, xyz) Å; chunk = (all, block, all, 3)
      potential_energy     float32 (replica, frame) kcal/mol
      kinetic_temperature  float32 (replica, frame) K
      replica frame time   coordinates (time in ps, on frame)
      atom xyz species resid chain
      _state/              the integrator's state after each block (a subgroup: invisible to
        position momentum  xr.open_zarr): float32 (block, replica, atom, xyz), uint32 rng
        force rng steps    (block, replica, 2), int64 steps (block); entry 0 is the start

A block is written in this order: the data arrays grow and their chunks are written, then the
state entry, then the root ``zarr.json`` (one atomic write: the document with the new
``steps_done`` and the consolidated shapes). A reader (xarray uses the consolidated metadata)
sees the state before or after a block, never a part of it; a kill leaves at worst data beyond
``steps_done``, which a resume cuts off. Every array chunk ends with a CRC32C like the store's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from ..errors import TrajectoryError
from ..store.labels import encode_labels
from ..store.layout import Encoding
from ..units import UNITS
from ..location import Location
from ..store.quiet import quiet_zarr
from ..schemas import check_document
from ..store.writer import write_group_metadata

TRAJECTORY_DOC = "protstore_trajectory"
TRAJECTORY_VERSION = 1
STATE = "_state"
STATE_FIELDS = ("position", "momentum", "force")
DATA = ("R", "potential_energy", "kinetic_temperature")
PER_FRAME = ("frame", "time")
STATIC = ("replica", "atom", "xyz", "species", "resid", "chain")


def read_document(location: Location) -> dict | None:
    """The trajectory document at ``location`` (schema-checked), or None when there is no
    Zarr group there; a group without a valid document is a :class:`TrajectoryError`."""
    try:
        meta = location.read_json("zarr.json")
    except FileNotFoundError:
        return None
    doc = (meta.get("attributes") or {}).get(TRAJECTORY_DOC)
    if doc is None:
        raise TrajectoryError(f"{location}: a Zarr group, but not a protstore trajectory")
    check_document(doc, "trajectory", str(location))
    return doc


@dataclass
class TrajectoryWriter:
    """An open trajectory group: :meth:`create` or :meth:`reopen`, then :meth:`append`."""

    location: Location
    group: zarr.Group
    block_frames: int
    frames: int  # frames written (and kept)
    blocks: int  # state entries written (the start is entry 0)

    @classmethod
    def create(cls, location: Location, doc: dict, *, species, resid, chain, n_replicas: int,
               block_frames: int, state: dict) -> "TrajectoryWriter":
        """Create the group with 0 frames, its coordinates, the start ``state`` (entry 0:
        position/momentum/force [R, N, 3], rng [R, 2]) and ``doc``."""
        check_document(doc, "trajectory", str(location))
        n_atoms = len(species)
        enc = Encoding()
        small = enc.codecs_for_coordinates()
        vectors = {"compressors": [BloscCodec(cname=enc.cname, clevel=enc.clevel,
                                              shuffle="bitshuffle", typesize=4,
                                              blocksize=enc.block_bytes), Crc32cCodec()]}
        with quiet_zarr():
            # the document from the start: a kill during creation leaves a trajectory that
            # says it is incomplete (and that --overwrite replaces), never a bare group
            group = zarr.create_group(location.zarr_store(read_only=False), zarr_format=3,
                                      overwrite=False, attributes={TRAJECTORY_DOC: doc})
            coords = "chain resid species time"

            def data(name, shape, chunks, dims, units, coordinates, codecs):
                group.create_array(name, shape=shape, chunks=chunks, dtype="float32",
                                   fill_value=np.nan, dimension_names=dims,
                                   attributes={"units": units, "coordinates": coordinates},
                                   **codecs)

            data("R", (n_replicas, 0, n_atoms, 3), (n_replicas, block_frames, n_atoms, 3),
                 ("replica", "frame", "atom", "xyz"), UNITS["R"], coords, vectors)
            for name, units in (("potential_energy", UNITS["energy"]),
                                ("kinetic_temperature", UNITS["temperature"])):
                data(name, (n_replicas, 0), (n_replicas, block_frames), ("replica", "frame"),
                     units, "time", small)
            group.create_array("frame", shape=(0,), chunks=(block_frames,), dtype="int64",
                               fill_value=0, dimension_names=("frame",), **small)
            group.create_array("time", shape=(0,), chunks=(block_frames,), dtype="float64",
                               fill_value=0.0, dimension_names=("frame",),
                               attributes={"units": "ps"}, **small)
            # string coordinates as label codes, as in the store (format 3): every Zarr
            # reader reads them; open_trajectory gives the labels back
            static = {"replica": (np.arange(n_replicas, dtype=np.int32), {}),
                      "atom": (np.arange(n_atoms, dtype=np.int32), {}),
                      "xyz": encode_labels(["x", "y", "z"]),
                      "species": (np.asarray(species, np.int32), {}),
                      "resid": (np.asarray(resid, np.int32), {}),
                      "chain": encode_labels(chain)}
            for name, (values, attributes) in static.items():
                dim = "xyz" if name == "xyz" else "replica" if name == "replica" else "atom"
                group.create_array(name, shape=values.shape, chunks=values.shape,
                                   dtype=values.dtype, dimension_names=(dim,),
                                   attributes=attributes, **small)[...] = values
            st = group.create_group(STATE)
            for name in STATE_FIELDS:
                st.create_array(name, shape=(0, n_replicas, n_atoms, 3),
                                chunks=(1, n_replicas, n_atoms, 3), dtype="float32", **small)
            st.create_array("rng", shape=(0, n_replicas, 2), chunks=(1, n_replicas, 2),
                            dtype="uint32", **small)
            st.create_array("steps", shape=(0,), chunks=(1,), dtype="int64", **small)
        writer = cls(location, group, block_frames, 0, 0)
        writer._write_state(state, 0)
        writer.write_document(doc)
        return writer

    @classmethod
    def reopen(cls, location: Location, doc: dict) -> tuple["TrajectoryWriter", dict]:
        """Open the trajectory of ``doc`` to continue it at ``doc["steps_done"]``: data and
        state beyond that (a killed block) are cut off. Returns the writer and the state there
        (position/momentum/force [R, N, 3], rng [R, 2])."""
        with quiet_zarr():
            group = zarr.open_group(location.zarr_store(read_only=False), mode="r+",
                                    zarr_format=3, use_consolidated=False)
            st = group[STATE]
            steps = st["steps"][...]
            at = np.flatnonzero(steps == doc["steps_done"])
            if not len(at):
                raise TrajectoryError(f"{location}: no saved integrator state at step "
                                      f"{doc['steps_done']} (damaged trajectory); simulate "
                                      "again with --overwrite")
            i = int(at[-1])
            state = {name: st[name][i] for name in (*STATE_FIELDS, "rng")}
            frames = doc["steps_done"] // doc["save_every"]
            block_frames = group["R"].chunks[1]
            writer = cls(location, group, block_frames, frames, i + 1)
            writer._truncate()
        return writer, state

    def _truncate(self) -> None:
        for name in DATA + PER_FRAME:
            a = self.group[name]
            if a.shape[a.metadata.dimension_names.index("frame")] != self.frames:
                shape = list(a.shape)
                shape[a.metadata.dimension_names.index("frame")] = self.frames
                a.resize(tuple(shape))
        st = self.group[STATE]
        for name in (*STATE_FIELDS, "rng", "steps"):
            if st[name].shape[0] != self.blocks:
                st[name].resize((self.blocks, *st[name].shape[1:]))

    def _write_state(self, state: dict, steps: int) -> None:
        st = self.group[STATE]
        b = self.blocks
        for name in (*STATE_FIELDS, "rng", "steps"):
            a = st[name]
            a.resize((b + 1, *a.shape[1:]))
            a[b] = np.int64(steps) if name == "steps" else np.asarray(state[name])
        self.blocks = b + 1

    def append(self, R, potential_energy, kinetic_temperature, time, state: dict, steps: int,
               doc: dict) -> None:
        """Add ``k`` frames (R [R, k, N, 3] Å, energies and temperatures [R, k], time [k] ps),
        the state after them (at step ``steps``), and ``doc`` (its ``steps_done`` = steps)."""
        k = len(time)
        f0, f1 = self.frames, self.frames + k
        g = self.group
        with quiet_zarr():
            for name, values in (("R", R), ("potential_energy", potential_energy),
                                 ("kinetic_temperature", kinetic_temperature)):
                a = g[name]
                a.resize((a.shape[0], f1, *a.shape[2:]))
                a[:, f0:f1] = values
            for name, values in (("frame", np.arange(f0, f1, dtype=np.int64)),
                                 ("time", np.asarray(time, np.float64))):
                g[name].resize((f1,))
                g[name][f0:f1] = values
            self._write_state(state, steps)
        self.frames = f1
        self.write_document(doc)

    def write_document(self, doc: dict) -> None:
        """The root ``zarr.json``: ``doc`` and the consolidated metadata, in one write."""
        check_document(doc, "trajectory", str(self.location))
        children = [*DATA, *PER_FRAME, *STATIC, STATE,
                    *(f"{STATE}/{name}" for name in (*STATE_FIELDS, "rng", "steps"))]
        write_group_metadata(self.location, {TRAJECTORY_DOC: doc}, children)
