"""An invariant message-passing energy (SchNet-style) on CA pair distances within a cutoff.

    x_i⁰ = embed[species_i]                                   (vocabulary-sized: 22 rows)
    W_ij = MLP(rbf(d_ij)) · f_c(d_ij)                          (Gaussian radial basis, cosine cutoff)
    x_iˡ⁺¹ = x_iˡ + MLP(Σ_j∈nbr(i) W_ij ⊙ (x_jˡ A))             (L interaction layers)
    E = s · Σ_i mask_i · MLP_out(x_i)                           (kcal/mol)

Every hyperparameter that the energy needs but that is not a shape (cutoff, basis width, the
energy scale s) is stored in the parameters under ``"frozen"``, so a parameter set alone defines
the model (checkpoints, EMA results and ``params.pkl`` evaluate without extra configuration).
Parameter shapes never depend on the bucket or the protein set. Only real beads of one segment
(one frame of a packed sample: ``topo.segment``) interact.

Neighbours: the messages run over every pair of real beads within the cutoff, listed once per
unordered pair (i < j) in a compact pair list of static length P = ⌈N K / 2⌉ (jax-md's
neighbour-list idea: a budget instead of K padded slots per bead; the filter W_ij depends on
d_ij alone, so one filter serves both directions of a pair). K (the *capacity*) is sized from
the training data (the most beads any bead has within the cutoff, with a margin;
``max_neighbors`` fixes it instead) and stored as the length of the frozen leaf
``neighbor_slots``. While no bead has more than K beads within the cutoff, a frame has at most
N K / 2 such pairs, so the list holds all of them and the energy is the exact, smooth sum; a
frame beyond it would lose pairs. So every frame is checked: :func:`neighbor_census` gives the
count that training and evaluation compare with K (inside their jitted steps), so an overflow
is an error naming the protein and frame, never a silent truncation (as jax-md's
``did_buffer_overflow``). Earlier versions kept each bead's K nearest beads (a dense [N, K]
list); both give the same energy wherever the census passes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..vocab import N_SPECIES
from .energy import EnergyModel
from .geometry import pair_distances, safe_norm
from .topology import Topology


def _dense(key, n_in: int, n_out: int) -> dict:
    w = jax.random.normal(key, (n_in, n_out), jnp.float32) * np.sqrt(1.0 / n_in)
    return {"w": w, "b": jnp.zeros(n_out, jnp.float32)}


def _apply(layer: dict, x: jnp.ndarray) -> jnp.ndarray:
    return x @ layer["w"] + layer["b"]


def _init(key, *, features: int, layers: int, n_rbf: int, hidden: int, cutoff: float,
          max_neighbors: int, energy_scale: float) -> dict:
    keys = iter(jax.random.split(key, 4 + 5 * layers))
    params = {
        "embed": jax.random.normal(next(keys), (N_SPECIES, features), jnp.float32),
        "out_hidden": _dense(next(keys), features, hidden),
        "out": _dense(next(keys), hidden, 1),
        "frozen": {"cutoff": jnp.float32(cutoff), "energy_scale": jnp.float32(energy_scale),
                   "rbf_centers": jnp.linspace(0.0, cutoff, n_rbf, dtype=jnp.float32),
                   "neighbor_slots": jnp.zeros(max_neighbors, jnp.float32)},
    }
    for layer in range(layers):
        params[f"interaction_{layer}"] = {
            "filter_1": _dense(next(keys), n_rbf, features),
            "filter_2": _dense(next(keys), features, features),
            "input": _dense(next(keys), features, features),
            "update_1": _dense(next(keys), features, features),
            "update_2": _dense(next(keys), features, features),
        }
    # the learned energy starts at exactly zero, so a run's step 0 is the priors alone
    params["out"]["w"] = jnp.zeros_like(params["out"]["w"])
    return params


def network_energy(params: dict, R: jnp.ndarray, species: jnp.ndarray, mask: jnp.ndarray,
                   topo: Topology) -> jnp.ndarray:
    """Energy (kcal/mol) of one frame: R [N, 3] Å, species [N] int, mask [N]."""
    frozen = params["frozen"]
    cutoff = frozen["cutoff"]
    centers = frozen["rbf_centers"]
    real = topo.real
    n = real.shape[0]
    k = min(frozen["neighbor_slots"].shape[0], n - 1)
    budget = max(1, -(-n * k // 2))  # P: every pair within the cutoff while no bead exceeds K
    index = jnp.arange(n)
    upper = (real[:, None] & real[None, :] & (index[:, None] < index[None, :])
             & (topo.segment[:, None] == topo.segment[None, :]))
    d_all = jax.lax.stop_gradient(pair_distances(R, upper))
    within_all = upper & (d_all < cutoff)
    # row-major order: i ascending; slots past the frame's pair count are (0, 0), weighing 0
    i, j = jnp.nonzero(within_all, size=budget, fill_value=0)
    listed = jnp.arange(budget) < jnp.sum(within_all)
    d = safe_norm(R[j] - R[i], listed)  # [P]
    within = listed & (d < cutoff)
    fc = jnp.where(within, 0.5 * (jnp.cos(jnp.pi * d / cutoff) + 1.0), 0.0)
    width = centers[1] - centers[0]
    rbf = jnp.exp(-0.5 * ((d[:, None] - centers) / width) ** 2)  # [P, n_rbf]
    x = params["embed"][species]
    layer = 0
    while f"interaction_{layer}" in params:
        p = params[f"interaction_{layer}"]
        w = _apply(p["filter_2"], jax.nn.silu(_apply(p["filter_1"], rbf))) * fc[:, None]
        h = _apply(p["input"], x)  # [N, F]
        message = (jax.ops.segment_sum(w * h[j], i, n, indices_are_sorted=True)
                   + jax.ops.segment_sum(w * h[i], j, n))  # both directions of each pair
        x = x + _apply(p["update_2"], jax.nn.silu(_apply(p["update_1"], message)))
        layer += 1
    e_bead = _apply(params["out"], jax.nn.silu(_apply(params["out_hidden"], x)))[:, 0]
    return frozen["energy_scale"] * jnp.sum(jnp.where(real, e_bead, 0.0))


def densest(R: jnp.ndarray, mask: jnp.ndarray, cutoff, segment: jnp.ndarray | None = None
            ) -> jnp.ndarray:
    """The most real beads any real bead of one frame R [N, 3] has within ``cutoff`` (Å), in
    its own segment of a packed sample (``segment`` [N] int; None: one frame)."""
    real = mask > 0
    n = real.shape[0]
    neighbour = real[:, None] & real[None, :] & ~jnp.eye(n, dtype=bool)
    if segment is not None:
        neighbour = neighbour & (segment[:, None] == segment[None, :])
    d = pair_distances(R, neighbour)
    return jnp.max(jnp.sum(neighbour & (d < cutoff), axis=1))


def neighbor_census(params: dict, R: jnp.ndarray, mask: jnp.ndarray,
                    segment: jnp.ndarray | None = None) -> tuple:
    """(the most real beads any real bead of R [N, 3] has within the cutoff in its segment, the
    capacity K) for one (packed) sample; the energy is smooth while the first is at most the
    second."""
    n = mask.shape[0]
    return (densest(R, mask, params["frozen"]["cutoff"], segment),
            jnp.int32(min(params["frozen"]["neighbor_slots"].shape[0], n - 1)))


def capacity_for(largest: int) -> int:
    """Neighbour slots for data whose beads have at most ``largest`` neighbours within the
    cutoff: 25% more, rounded up to a multiple of 8 (shapes that compile well), at least 8."""
    return max(8, -(-int(np.ceil(1.25 * largest)) // 8) * 8)


def schnet(features: int = 32, layers: int = 2, n_rbf: int = 16, hidden: int = 32,
           cutoff: float = 10.0, max_neighbors: int | None = None) -> EnergyModel:
    """The default learned energy. ``init(key, stats)`` uses ``stats["force_rms"]``
    (kcal/mol/Å) × 1 Å as the energy scale so outputs start at the data's force scale, and
    sizes the neighbour capacity from ``stats["max_neighbors"](cutoff)`` (the most beads any
    bead of the training data has within ``cutoff``) unless ``max_neighbors`` fixes it. The
    output layer starts at zero: the learned energy is exactly 0 until the first update."""
    for name, value in (("features", features), ("layers", layers), ("n_rbf", n_rbf),
                        ("hidden", hidden),
                        ("max_neighbors", 1 if max_neighbors is None else max_neighbors)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    if n_rbf < 2:
        raise ValueError(f"n_rbf must be at least 2, not {n_rbf}")
    if not isinstance(cutoff, int | float) or not 0 < cutoff < float("inf"):
        raise ValueError(f"cutoff must be a positive number of Å, not {cutoff!r}")

    def init(key, stats: dict) -> dict:
        slots = max_neighbors
        if slots is None:
            census = stats.get("max_neighbors")
            slots = capacity_for(census(cutoff)) if callable(census) else 32
        return _init(key, features=features, layers=layers, n_rbf=n_rbf, hidden=hidden,
                     cutoff=cutoff, max_neighbors=slots,
                     energy_scale=float(stats.get("force_rms", 1.0)))

    return EnergyModel(init=init, energy=network_energy, neighbors=neighbor_census, packing=True)
