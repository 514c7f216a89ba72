"""The "true" CG world behind the demo data: a species-aware CA model and a Langevin integrator.

It only generates data (it plays the role of all-atom MD); protstore's own force field never
imports it. Energy in kcal/mol, positions in Å, time in ps, mass in amu.

    E = Σ_bonds ½ k_b (r - r0)²  +  Σ_angles ½ k_θ (θ - θ0)²  +  Σ_dihedrals Σ_n k_n (1 + cos(nφ - γ_n))
      + Σ_{pairs} [ ε_rep (σ/r)^12  -  ε_ab exp(-(r - r_att)² / (2 w²)) ]

Pairs are beads of one chain at least 3 apart, or of different chains; ε_ab = sqrt(h_a h_b) from
a per-species hydrophobicity h, so forces depend on residue type.
"""

from __future__ import annotations

from dataclasses import dataclass
import jax
import jax.numpy as jnp
import numpy as np

from ..units import KB_KCAL_PER_MOL_K
from ..vocab import STANDARD_RESIDUES

AMU_A2_PER_PS2 = 418.4  # (kcal/mol/Å) / amu -> Å/ps²
KB = KB_KCAL_PER_MOL_K

#: Per-species attraction strength h (kcal/mol), hydrophobic residues high.
HYDROPHOBICITY = dict(zip(STANDARD_RESIDUES, [
    0.50, 0.10, 0.10, 0.05, 0.60, 0.10, 0.05, 0.30, 0.20, 0.90,
    0.90, 0.05, 0.70, 0.85, 0.30, 0.15, 0.20, 0.60, 0.45, 0.85,
]))  # fmt: skip


@dataclass(frozen=True)
class WorldParams:
    k_bond: float = 100.0
    r0: float = 3.8
    r0_cis: float = 2.9  # a cis-peptide bond (X-Pro): its CA-CA distance
    k_angle: float = 10.0
    theta0: float = 1.75
    dihedral_k: tuple[float, ...] = (0.6, 0.0, 0.3)
    dihedral_gamma: tuple[float, ...] = (0.9, 0.0, 0.0)
    eps_rep: float = 0.3
    sigma: float = 4.0
    r_att: float = 6.0
    w_att: float = 1.0
    attraction: float = 3.0  # multiplies every ε_ab: species-specific forces for a network to learn
    mass: float = 110.0
    friction: float = 5.0  # 1/ps
    dt: float = 0.01  # ps


@dataclass(frozen=True)
class Topology:
    """Index arrays of one protein: bonds [B,2], angles [A,3], dihedrals [D,4], pairs [P,2];
    ``cis`` [B] marks the cis-peptide bonds."""

    bonds: np.ndarray
    angles: np.ndarray
    dihedrals: np.ndarray
    pairs: np.ndarray
    cis: np.ndarray

    @classmethod
    def from_chains(cls, chain_ids: np.ndarray, cis_before: np.ndarray | None = None
                    ) -> "Topology":
        """``cis_before`` [n] bool: the bond from bead i-1 to bead i is a cis-peptide."""
        n = len(chain_ids)
        runs = lambda k: np.array([np.arange(i, i + k) for i in range(n - k + 1)
                                   if (chain_ids[i:i + k] == chain_ids[i]).all()],
                                  dtype=np.int32).reshape(-1, k)
        i, j = np.triu_indices(n, 1)
        far = (chain_ids[i] != chain_ids[j]) | (j - i >= 3)
        bonds = runs(2)
        cis = np.zeros(n, bool) if cis_before is None else np.asarray(cis_before, bool)
        return cls(bonds, runs(3), runs(4), np.stack([i[far], j[far]], 1).astype(np.int32),
                   cis[bonds[:, 1]])


def _angle(a, b, c):
    u, v = a - b, c - b
    cos = jnp.sum(u * v, -1) / (jnp.linalg.norm(u, axis=-1) * jnp.linalg.norm(v, axis=-1))
    return jnp.arccos(jnp.clip(cos, -0.999999, 0.999999))


def _dihedral(a, b, c, d):
    b0, b1, b2 = a - b, c - b, d - c
    b1n = b1 / jnp.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - jnp.sum(b0 * b1n, -1, keepdims=True) * b1n
    w = b2 - jnp.sum(b2 * b1n, -1, keepdims=True) * b1n
    x = jnp.sum(v * w, -1)
    y = jnp.sum(jnp.cross(b1n, v) * w, -1)
    return jnp.arctan2(y, x)


def energy(R, h, topo: Topology, p: WorldParams):
    """Total energy (kcal/mol) of positions R [N, 3] with per-bead hydrophobicity h [N]."""
    b = topo.bonds
    r = jnp.linalg.norm(R[b[:, 1]] - R[b[:, 0]], axis=-1)
    r0 = jnp.where(jnp.asarray(topo.cis), p.r0_cis, p.r0)
    e = 0.5 * p.k_bond * jnp.sum((r - r0) ** 2)
    a = topo.angles
    if len(a):
        th = _angle(R[a[:, 0]], R[a[:, 1]], R[a[:, 2]])
        e += 0.5 * p.k_angle * jnp.sum((th - p.theta0) ** 2)
    d = topo.dihedrals
    if len(d):
        phi = _dihedral(R[d[:, 0]], R[d[:, 1]], R[d[:, 2]], R[d[:, 3]])
        for n, (k, g) in enumerate(zip(p.dihedral_k, p.dihedral_gamma), start=1):
            e += k * jnp.sum(1 + jnp.cos(n * phi - g))
    q = topo.pairs
    if len(q):
        rp = jnp.linalg.norm(R[q[:, 1]] - R[q[:, 0]], axis=-1)
        eps = p.attraction * jnp.sqrt(h[q[:, 0]] * h[q[:, 1]])
        e += jnp.sum(p.eps_rep * (p.sigma / rp) ** 12
                     - eps * jnp.exp(-((rp - p.r_att) ** 2) / (2 * p.w_att ** 2)))
    return e


def helix(n: int, r0: float = 3.8) -> np.ndarray:
    """[n, 3] CA trace of an ideal α-helix (100° per residue, 1.5 Å rise) with bond length r0."""
    t = np.deg2rad(100.0) * np.arange(n)
    rise = 1.5
    radius = np.sqrt((r0 ** 2 - rise ** 2) / (2 - 2 * np.cos(np.deg2rad(100.0))))
    return np.stack([radius * np.cos(t), radius * np.sin(t), rise * np.arange(n)], 1)


def make_simulator(h: np.ndarray, topo: Topology, p: WorldParams, stride: int):
    """``run(R, V, F, keys, kT) -> (R, V, F)``: ``stride`` BAOAB Langevin steps, jitted.

    Batched over independent runs: R, V, F [B, N, 3], keys [B, 2], kT [B] (kcal/mol). F is
    the exact force at R (kcal/mol/Å); pass ``force(R)`` for the first call.
    """
    h = jnp.asarray(h)
    force = jax.grad(lambda R: -energy(R, h, topo, p))
    c1 = np.exp(-p.friction * p.dt)
    acc = AMU_A2_PER_PS2 / p.mass

    def one_run(R, V, F, key, kT):
        c2 = jnp.sqrt((1 - c1 ** 2) * kT * AMU_A2_PER_PS2 / p.mass)

        def step(_, state):
            R, V, F, key = state
            key, sub = jax.random.split(key)
            V = V + 0.5 * p.dt * acc * F
            R = R + 0.5 * p.dt * V
            V = c1 * V + c2 * jax.random.normal(sub, V.shape)
            R = R + 0.5 * p.dt * V
            F = force(R)
            V = V + 0.5 * p.dt * acc * F
            return R, V, F, key

        R, V, F, _ = jax.lax.fori_loop(0, stride, step, (R, V, F, key))
        return R, V, F

    return jax.jit(jax.vmap(one_run)), jax.jit(jax.vmap(force))
