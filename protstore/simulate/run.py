"""``protstore simulate``: Langevin dynamics of a parameter set on one protein of a store.

The energy is protstore's (priors + learned energy, or priors only), the integrator BAOAB
(:mod:`~protstore.simulate.integrator`), the bead masses the residues' (:mod:`.masses`). The
replicas are vmapped and run in jitted blocks: a block is ``block_frames`` saved frames of
``save_every`` steps each, one loop on the device that also computes what the stability checks
need (:mod:`.checks`); one compilation serves every block of every protein of the same shape
and every run of the same integrator settings in the process. After each block the host checks
it, then appends it to the trajectory (:mod:`.trajectory`) with the integrator state, so that
memory stays flat in the number of steps and ``resume`` continues bit for bit. The same seed
gives the same trajectory bit for bit on the same machine (JAX's counter-based keys; replica r
uses ``split(PRNGKey(seed), R)[r]``).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .._version import __version__
from ..errors import ConfigError, SimulationUnstable, TrajectoryError
from ..evaluate.params import ModelParams, checked, load_params
from ..model.energy import total_energy
from ..model.spec import ModelSpec
from ..model.topology import build_topology
from ..store.layout import chain_codes
from ..units import KB_KCAL_PER_MOL_K
from ..location import Location, as_location
from .checks import Diagnostics, failures, frame_diagnostics, remedy
from .integrator import BAOABState, baoab, kinetic_temperature
from .masses import MASSES_DESCRIPTION, internal_masses
from .trajectory import TRAJECTORY_VERSION, TrajectoryWriter, read_document

SIM_MODES = ("full", "prior-only")
STARTS = ("first", "random")
ON_UNSTABLE = ("stop", "drop")
#: The data's frames at a temperature: those within this many K of it.
TEMPERATURE_TOLERANCE_K = 0.5
#: Saved frames per block when ``block_frames`` is not given: about 1 MiB of R, at most this.
MAX_BLOCK_FRAMES = 100


@dataclass(frozen=True)
class SimulateConfig:
    """How to simulate (config as data; every field lands in the trajectory document).

    n_steps : integration steps, a multiple of ``save_every``.
    temperature : K; None: the data's, when the protein's frames have exactly one.
    n_replicas : independent replicas (vmapped, one compiled loop).
    dt_fs : time step, fs.  friction : Langevin γ, 1/ps.  save_every : steps per saved frame.
    seed : of the start frames (``start="random"``) and of the noise.
    mode : "full" (priors + learned energy) or "prior-only".
    start : "first" (every replica from the first frame at the temperature) or "random"
        (each from a frame drawn among them; all frames when none is at the temperature).
    on_unstable : "stop" (the run stops with an error naming replica, step and reason) or
        "drop" (that replica is left out from then on, recorded in the document).
    bond_range : Å, allowed bonded CA-CA distances (a cis-proline sits near 2.9 Å).
    block_frames : saved frames per written block (None: about 1 MiB of R, at most 100).
    """

    n_steps: int = 10_000
    temperature: float | None = None
    n_replicas: int = 1
    dt_fs: float = 2.0
    friction: float = 1.0
    save_every: int = 100
    seed: int = 0
    mode: str = "full"
    start: str = "first"
    on_unstable: str = "stop"
    bond_range: tuple[float, float] = (2.0, 5.5)
    block_frames: int | None = None

    def __post_init__(self):
        def positive_int(name):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, "
                                  f"not {value!r}")

        def positive(name, value):
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0 < value < math.inf:
                raise ConfigError(f"{name} must be a positive finite number, not {value!r}")

        for name in ("n_steps", "n_replicas", "save_every"):
            positive_int(name)
        if self.block_frames is not None:
            positive_int("block_frames")
        positive("dt-fs", self.dt_fs)
        positive("friction", self.friction)
        if self.temperature is not None:
            positive("temperature", self.temperature)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an integer, not {self.seed!r}")
        for name, allowed in (("mode", SIM_MODES), ("start", STARTS),
                              ("on_unstable", ON_UNSTABLE)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name.replace('_', '-')} must be one of {allowed}, not "
                                  f"{getattr(self, name)!r}")
        if self.n_steps % self.save_every:
            raise ConfigError(f"steps ({self.n_steps}) must be a multiple of save-every "
                              f"({self.save_every})")
        lo, hi = self.bond_range
        if not 0 <= lo < hi:
            raise ConfigError(f"bond_range must be (low, high) Å with 0 <= low < high, not "
                              f"{self.bond_range!r}")

    @property
    def dt(self) -> float:
        """The time step in ps."""
        return self.dt_fs * 1e-3

    def replace(self, **changes) -> "SimulateConfig":
        return replace(self, **changes)


@dataclass(frozen=True)
class SimulationResult:
    """path: the trajectory; document: its final document; steps: steps run by this call;
    wall_s: their time (compilation included); compile_s: the first block's time (its
    compilation and its own steps)."""

    path: Location
    document: dict
    steps: int
    wall_s: float
    compile_s: float


class Engine:
    """The jitted functions of one model, mode and block size (built once: :func:`engine`).

    ``init(params, keys [R, 2], R0 [R, N, 3], mass [N], species, topo, kT) -> BAOABState``
    (each field with a leading replica axis); ``block(params, species, topo, state, n_frames,
    save_every, dt, kT, gamma) -> (state, frames)``: ``frames`` a dict of R [F, R, N, 3],
    energy and temperature [F, R] and the :class:`~.checks.Diagnostics` fields [F, R] of
    ``n_frames <= F = block_frames`` saved frames (rows beyond ``n_frames`` unused). The
    integrator settings and counts are traced arguments, so jit compiles once per protein
    shape (``compiles`` counts them).
    """

    def __init__(self, model: ModelSpec, mode: str, block_frames: int):
        model = model.load()
        energy = total_energy(model, mode)
        census = model.neighbors if mode == "full" else None
        self.compiles = 0

        def energy_of(R, params, species, topo):
            return energy(params, R, species, jnp.ones(R.shape[0], jnp.float32), topo)

        def force(R, params, species, topo):
            return -jax.grad(energy_of)(R, params, species, topo)

        init, step = baoab(force, 0.0, 0.0, 0.0)  # settings come with each call
        self.force, self.step, self.energy_of = force, step, energy_of

        def init_all(params, keys, R0, mass, species, topo, kT):
            self.compiles += 1
            return jax.vmap(lambda k, r: init(k, r, mass, kT=kT, params=params,
                                              species=species, topo=topo))(keys, R0)

        def saved_frame(params, species, topo, state, save_every, dt, kT, gamma):
            def one_step(i, s):
                return jax.vmap(lambda one: step(one, dt=dt, kT=kT, gamma=gamma, params=params,
                                                 species=species, topo=topo))(s)

            state = jax.lax.fori_loop(0, save_every, one_step, state)

            def one(R, p, mass):
                e = energy_of(R, params, species, topo)
                count = None if census is None else (
                    lambda x: census(params["model"], x, jnp.ones(x.shape[0]))[0])
                return (e, kinetic_temperature(p, mass, KB_KCAL_PER_MOL_K),
                        frame_diagnostics(R, p, e, topo, count))

            e, T, diag = jax.vmap(one)(state.position, state.momentum, state.mass)
            return state, {"R": state.position, "energy": e, "temperature": T,
                           **diag._asdict()}

        def block(params, species, topo, state, n_frames, save_every, dt, kT, gamma):
            self.compiles += 1
            settings = (save_every, dt, kT, gamma)
            shapes = jax.eval_shape(
                lambda s: saved_frame(params, species, topo, s, *settings)[1], state)
            buffers = jax.tree.map(lambda s: jnp.zeros((block_frames, *s.shape), s.dtype),
                                   shapes)

            def body(i, carry):
                state, buffers = carry
                state, out = saved_frame(params, species, topo, state, *settings)
                return state, jax.tree.map(lambda b, o: b.at[i].set(o), buffers, out)

            return jax.lax.fori_loop(0, n_frames, body, (state, buffers))

        self.init = jax.jit(init_all)
        self.block = jax.jit(block)
        self.capacity = (None if census is None else
                         jax.jit(lambda params, R: census(params["model"], R,
                                                          jnp.ones(R.shape[0]))[1]))


@functools.lru_cache(maxsize=16)
def engine(model: ModelSpec, mode: str, block_frames: int) -> Engine:
    """The :class:`Engine` of a model, mode and block size:
    one per process, so that jit compiles once per protein shape."""
    return Engine(model, mode, block_frames)


def resolve_temperature(store, protein: str, ds, temperature: float | None) -> float:
    """The simulation temperature: ``temperature``, else the data's one temperature."""
    if temperature is not None:
        return float(temperature)
    known = sorted({round(float(t), 3) for t in ds.temperature.values if np.isfinite(t)})
    if len(known) == 1:
        return known[0]
    if not known:
        raise ConfigError(f"{store.url}: protein {protein} stores no temperature; give "
                          "--temperature K")
    raise ConfigError(f"{store.url}: protein {protein} has frames at "
                      f"{', '.join(f'{t:g}' for t in known)} K; choose one with --temperature K")


def start_frames(ds, temperature: float, config: SimulateConfig) -> list[int]:
    """Frame indices (of ``store.protein(id)``) the replicas start from: among the frames at
    ``temperature`` (within 0.5 K; all frames when none is), the first or a seeded draw."""
    T = np.asarray(ds.temperature.values, np.float64)
    candidates = np.flatnonzero(np.abs(T - temperature) <= TEMPERATURE_TOLERANCE_K)
    if not len(candidates):
        candidates = np.arange(ds.sizes["frame"])
    if config.start == "first":
        return [int(candidates[0])] * config.n_replicas
    rng = np.random.default_rng(config.seed)
    return [int(i) for i in rng.choice(candidates, config.n_replicas)]


def default_block_frames(n_replicas: int, n_atoms: int) -> int:
    return int(max(1, min(MAX_BLOCK_FRAMES, round((1 << 20) / (n_replicas * n_atoms * 12)))))


#: Document fields a resume must find as the run was started (n_steps may grow).
RESUME_FIELDS = ("protein", "params", "model", "mode", "seed", "temperature", "dt", "friction",
                 "save_every", "n_replicas", "masses", "start", "bond_range")


def _params(params, allow_pickle: bool, model: str | None) -> tuple[ModelParams, str]:
    if isinstance(params, ModelParams):
        return checked(params, "params"), "(in memory)"
    if isinstance(params, str | Path | Location):
        return load_params(params, allow_pickle=allow_pickle, model=model), str(params)
    raise ConfigError(f"params must be a checkpoint path or ModelParams, not "
                      f"{type(params).__name__}")


def _open_output(out: Location, *, resume: bool, overwrite: bool) -> dict | None:
    """The existing trajectory's document (to resume), or None (a new trajectory)."""
    try:
        existing = read_document(out)
    except TrajectoryError:
        if overwrite:
            raise TrajectoryError(f"{out}: exists and is not a protstore trajectory; "
                                  "--overwrite replaces trajectories only") from None
        raise
    if resume:
        if existing is None:
            raise TrajectoryError(f"{out}: no trajectory to resume")
        return existing
    if existing is not None or (out.exists() and out.listdir()):
        if not overwrite:
            raise TrajectoryError(f"{out}: exists; give --resume to continue it or "
                                  "--overwrite to replace it")
        if existing is None:
            raise TrajectoryError(f"{out}: exists and is not a protstore trajectory; "
                                  "--overwrite replaces trajectories only")
        out.remove("", recursive=True)
    return None


def simulate(store, params, protein: str, out, config: SimulateConfig = SimulateConfig(), *,
             model: str | None = None, allow_pickle: bool = False, resume: bool = False,
             overwrite: bool = False, progress: bool = True,
             callback: Callable[[int], None] | None = None,
             storage_options: dict | None = None) -> SimulationResult:
    """Simulate ``protein`` of ``store`` with ``params`` and write the trajectory ``out``.

    ``params``: a checkpoint group path (training, final/, best/, EMA), a ``params.pkl`` with
    ``allow_pickle``, or loaded :class:`~protstore.evaluate.ModelParams`; ``model`` names the
    model as for ``evaluate``. ``out``: a local path or fsspec URL (``storage_options``, else
    the store's); an existing trajectory is refused unless ``resume`` (continue it: the
    stored settings must match ``config``'s, ``n_steps`` may grow) or ``overwrite``.
    ``callback(steps_done)`` is called after each written block. Returns a
    :class:`SimulationResult`; raises :class:`SimulationUnstable` when a replica fails a
    check (``on_unstable="stop"``), leaving the trajectory incomplete up to the last good block.
    """
    if not isinstance(config, SimulateConfig):
        raise ConfigError("config must be a SimulateConfig")
    mp, source = _params(params, allow_pickle, model)
    store.protein_doc(protein)  # an unknown protein: a one-line StoreError
    ds = store.protein(protein, chunks=None)
    temperature = resolve_temperature(store, protein, ds, config.temperature)
    config = config.replace(temperature=temperature)
    out = as_location(out, storage_options if storage_options is not None
                      else store.storage_options)
    existing = _open_output(out, resume=resume, overwrite=overwrite)

    species = np.asarray(ds.species.values, np.int32)
    resid = np.asarray(ds.resid.values, np.int32)
    chain = np.asarray(ds.chain.values, dtype=object)
    n_atoms = len(species)
    topo = build_topology(jnp.asarray(resid), jnp.asarray(chain_codes(chain)),
                          jnp.ones(n_atoms, jnp.float32), jnp.asarray(species))
    mass = internal_masses(species)
    block_frames = (existing["block_frames"] if existing is not None else
                    config.block_frames or default_block_frames(config.n_replicas, n_atoms))
    kT = KB_KCAL_PER_MOL_K * temperature
    eng = engine(mp.model, config.mode, block_frames)
    params_dev = jax.tree.map(jnp.asarray, mp.params)
    capacity = None
    if eng.capacity is not None:
        capacity = int(eng.capacity(params_dev, jnp.asarray(ds.R.values[0])))

    doc = {"format": "protstore_trajectory", "version": TRAJECTORY_VERSION, "protein": protein,
           "store": store.url, "store_version": store.version, "params": source,
           "model": mp.model.to_doc(), "mode": config.mode,
           "seed": config.seed, "temperature": temperature, "dt": config.dt,
           "friction": float(config.friction), "save_every": config.save_every,
           "n_replicas": config.n_replicas, "n_steps": config.n_steps, "steps_done": 0,
           "complete": False, "masses": MASSES_DESCRIPTION, "start": config.start,
           "start_frames": [], "dropped": [], "stopped": None,
           "bond_range": [float(x) for x in config.bond_range], "block_frames": block_frames,
           "protstore_version": __version__,
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if existing is not None:
        for key in RESUME_FIELDS:
            if existing.get(key) != doc[key]:
                raise TrajectoryError(f"{out}: was started with {key}={existing.get(key)!r}, "
                                      f"not {doc[key]!r}; resume with the same settings")
        if config.n_steps < existing["steps_done"]:
            raise TrajectoryError(f"{out}: {existing['steps_done']} steps are done, more than "
                                  f"the {config.n_steps} asked for")
        doc = {**existing, "n_steps": config.n_steps, "stopped": None,
               "complete": existing["steps_done"] == config.n_steps}
        writer, saved = TrajectoryWriter.reopen(out, existing)
        state = BAOABState(jnp.asarray(saved["position"]), jnp.asarray(saved["momentum"]),
                           jnp.asarray(saved["force"]),
                           jnp.broadcast_to(jnp.asarray(mass)[None, :, None],
                                            (config.n_replicas, n_atoms, 1)),
                           jnp.asarray(saved["rng"]))
    else:
        frames = start_frames(ds, temperature, config)
        doc["start_frames"] = frames
        keys = jax.random.split(jax.random.PRNGKey(config.seed), config.n_replicas)
        R0 = jnp.asarray(np.asarray(ds.R.values[frames], np.float32))
        state = eng.init(params_dev, keys, R0, jnp.asarray(mass), jnp.asarray(species), topo,
                         jnp.float32(kT))
        try:
            writer = TrajectoryWriter.create(out, doc, species=species, resid=resid,
                                             chain=chain, n_replicas=config.n_replicas,
                                             block_frames=block_frames,
                                             state=_state_dict(state))
        except OSError as exc:
            raise TrajectoryError(f"{out}: cannot create the trajectory ({_why(exc)})") from None
    return _run(eng, writer, doc, state, params_dev, jnp.asarray(species), topo, config,
                capacity=capacity, progress=progress, callback=callback)


def _state_dict(state: BAOABState) -> dict:
    return {"position": np.asarray(state.position), "momentum": np.asarray(state.momentum),
            "force": np.asarray(state.force), "rng": np.asarray(state.rng)}


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _run(eng: Engine, writer: TrajectoryWriter, doc: dict, state: BAOABState, params, species,
         topo, config: SimulateConfig, *, capacity, progress, callback) -> SimulationResult:
    from ..progress import progress_bar

    out = writer.location
    n_rep, block_frames, save_every = config.n_replicas, writer.block_frames, config.save_every
    dt = config.dt
    alive = np.ones(n_rep, bool)
    for d in doc["dropped"]:
        alive[d["replica"]] = False
    steps_done = doc["steps_done"]
    start_steps = steps_done
    settings = (jnp.int32(save_every), jnp.float32(dt), jnp.float32(KB_KCAL_PER_MOL_K *
                                                                     doc["temperature"]),
                jnp.float32(config.friction))
    t0 = time.perf_counter()
    compile_s = 0.0
    bar = progress_bar(total=config.n_steps, initial=steps_done, unit="step", disable=not progress,
                       desc=f"simulate {doc['protein']} ({n_rep} replicas)",
                       dynamic_ncols=True)
    try:
        first = True
        while steps_done < config.n_steps:
            k = min(block_frames, (config.n_steps - steps_done) // save_every)
            tb = time.perf_counter()
            new_state, frames = eng.block(params, species, topo, state, jnp.int32(k),
                                          *settings)
            frames = jax.device_get(frames)
            if first:
                first = False
                compile_s = time.perf_counter() - tb  # includes the block's own run
            diag = Diagnostics(*(frames[f][:k] for f in Diagnostics._fields))
            failed = failures(diag, alive, bond_range=config.bond_range, capacity=capacity)
            R, energy, temp = (np.array(np.swapaxes(frames[name][:k], 0, 1))
                               for name in ("R", "energy", "temperature"))
            for r, (f, reason) in sorted(failed.items()):
                step = steps_done + (f + 1) * save_every
                event = {"replica": r, "step": step, "reason": reason}
                if config.on_unstable == "stop":
                    doc = {**doc, "stopped": event}
                    writer.write_document(doc)
                    raise SimulationUnstable(
                        f"{out}: replica {r} step {step}: {reason}; the trajectory holds the "
                        f"{steps_done} steps before its block ({remedy(reason)}, or "
                        "--on-unstable drop to go on without the replica)")
                doc = {**doc, "dropped": [*doc["dropped"], event]}
                alive[r] = False
                R[r, f:] = energy[r, f:] = temp[r, f:] = np.nan
            if not alive.all():
                # left-out replicas: NaN frames, and their last good state kept (not integrated on)
                dead = ~alive
                R[dead] = np.nan
                energy[dead] = temp[dead] = np.nan
                keep = jnp.asarray(dead)
                new_state = jax.tree.map(
                    lambda new, old: jnp.where(keep.reshape((-1,) + (1,) * (new.ndim - 1)),
                                               old, new), new_state, state)
            if not alive.any():
                writer.write_document(doc)
                raise SimulationUnstable(f"{out}: every replica became unstable (the last: "
                                         f"{doc['dropped'][-1]['reason']}); "
                                         f"{remedy(doc['dropped'][-1]['reason'])}")
            state = new_state
            steps_done += k * save_every
            frame0 = writer.frames
            times = (np.arange(frame0, frame0 + k) + 1) * save_every * dt
            doc = {**doc, "steps_done": steps_done,
                   "complete": steps_done == config.n_steps}
            try:
                writer.append(R, energy, temp, times, _state_dict(state), steps_done, doc)
            except OSError as exc:
                raise TrajectoryError(f"{out}: cannot write the block ending at step "
                                      f"{steps_done} ({_why(exc)}); the trajectory stays "
                                      "incomplete, --resume continues it") from None
            bar.update(k * save_every)
            if callback is not None:
                callback(steps_done)
        if not doc["complete"]:  # resumed a run whose steps were all done
            doc = {**doc, "complete": True}
            writer.write_document(doc)
    finally:
        bar.close()
    return SimulationResult(out, doc, steps_done - start_steps, time.perf_counter() - t0,
                            compile_s)


__all__ = ["SIM_MODES", "SimulateConfig", "SimulationResult", "SimulationUnstable", "engine",
           "simulate", "start_frames", "resolve_temperature"]
