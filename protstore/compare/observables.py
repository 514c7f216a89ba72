"""Per-frame structural observables of CG frames R [F, N, 3] (Å): pure functions, NumPy out.

Bonds, angles and dihedrals follow :mod:`protstore.model.topology` (bonded = consecutive beads
of the same chain whose resids differ by one) and are computed with the geometry helpers of
:mod:`protstore.model.geometry`, frame by frame under ``jax.vmap``. Everything else is NumPy in
float64.

Definitions (the ones ``protstore compare`` states in its outputs):

- ``rg``: radius of gyration, mass-unweighted (every bead weight 1), over all beads.
- ``rmsd``: RMSD over all beads to a reference frame after optimal superposition (translation
  to the centroids, then the Kabsch rotation; proper rotations only, no reflection).
- ``q``: fraction of native contacts of Best, Hummer & Eaton, PNAS 110, 17874 (2013),
  ``Q(X) = 1/|S| Σ_(i,j)∈S 1 / (1 + exp(β (r_ij(X) - λ r0_ij)))``, adapted to one bead per
  residue: the native pairs S are the bead pairs of the native frame closer than
  :data:`Q_CUTOFF` (8 Å) that are not within :data:`Q_MIN_SEPARATION` (3) residues of each
  other along one chain (same chain and |Δresid| > 3, or different chains); β = 5 Å⁻¹ and
  λ = 1.5 (the paper's value for coarse-grained models).
- ``end_to_end``: distance between the first and the last bead of the first chain (the chain
  of bead 0), in bead order.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from ..structure import radius_of_gyration  # noqa: F401  (an observable compared)

Q_CUTOFF = 8.0  # Å: native contact when closer in the native frame
Q_MIN_SEPARATION = 3  # along one chain, pairs with |Δresid| <= this are never contacts
Q_BETA = 5.0  # 1/Å
Q_LAMBDA = 1.5
BLOCK = 4096  # frames per vmapped block (bounds memory on long trajectories)
BLOCK_VALUES = 1 << 22  # values of the widest per-frame intermediate in one block of frames


def labels(values) -> np.ndarray:
    """[N] the per-bead labels ``values`` (chain ids of any dtype, NumPy's StringDType
    included) as Python strings in an object array, for comparisons."""
    return np.array([str(v) for v in np.asarray(values).tolist()], dtype=object)


class Terms(NamedTuple):
    """Index arrays of the bonded terms of one protein (bead i of each term)."""

    bond: np.ndarray  # [n_bonds] beads i, i+1
    angle: np.ndarray  # [n_angles] beads i, i+1, i+2
    dihedral: np.ndarray  # [n_dihedrals] beads i .. i+3


def terms(resid, chain) -> Terms:
    """The bonds, angles and dihedrals of a protein with ``resid`` [N] and ``chain`` [N] (any
    labels; compared for equality), as :func:`~protstore.model.topology.build_topology`
    defines them."""
    import jax.numpy as jnp

    from ..model.topology import build_topology

    codes = np.unique(labels(chain).astype(str), return_inverse=True)[1]
    resid = np.asarray(resid, dtype=np.int64)
    topo = build_topology(jnp.asarray(resid), jnp.asarray(codes), jnp.ones(len(resid)))
    return Terms(*(np.flatnonzero(np.asarray(m)) for m in (topo.bond, topo.angle,
                                                            topo.dihedral)))


@functools.cache
def _vmapped(name: str):
    """The geometry helper ``name`` over frames, compiled (once per padded block size)."""
    import jax

    from ..model import geometry

    return jax.jit(jax.vmap(getattr(geometry, name), in_axes=(0, None)))


def _geometry(name: str, R: np.ndarray, index: np.ndarray, width: int) -> np.ndarray:
    """[F, len(index)] values of geometry helper ``name`` at the terms ``index`` of R [F, N, 3],
    in blocks of frames padded to a power of two (few compilations for any F)."""
    import jax.numpy as jnp

    F, n = R.shape[:2]
    mask = np.zeros(max(n - width, 0), bool)
    mask[index] = True
    mask = jnp.asarray(mask)
    out = []
    for lo in range(0, F, BLOCK):
        block = np.asarray(R[lo:lo + BLOCK], np.float32)
        size = min(BLOCK, max(64, 1 << (len(block) - 1).bit_length()))
        padded = np.zeros((size, n, 3), np.float32)  # padding frames: harmless zeros
        padded[:len(block)] = block
        out.append(np.asarray(_vmapped(name)(jnp.asarray(padded), mask))[:len(block)])
    values = np.concatenate(out) if out else np.zeros((0, len(mask)))
    return values[:, index].astype(np.float64)


def bond_lengths(R: np.ndarray, t: Terms) -> np.ndarray:
    """[F, n_bonds] bond lengths (Å) of R [F, N, 3]."""
    return _geometry("bond_lengths", R, t.bond, 1)


def bond_angles(R: np.ndarray, t: Terms) -> np.ndarray:
    """[F, n_angles] bond angles (radians, 0..π) at the middle bead of each angle."""
    return _geometry("bond_angles", R, t.angle, 2)


def dihedral_angles(R: np.ndarray, t: Terms) -> np.ndarray:
    """[F, n_dihedrals] dihedral angles (radians, -π..π, IUPAC sign)."""
    return _geometry("dihedral_angles", R, t.dihedral, 3)


def kabsch_rmsd(R: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """[F] RMSD (Å) of each frame of R [F, N, 3] to ``ref`` [N, 3] after optimal
    superposition (centroids, then the best proper rotation)."""
    X = np.asarray(R, np.float64)
    X = X - X.mean(axis=-2, keepdims=True)
    Y = np.asarray(ref, np.float64)
    Y = Y - Y.mean(axis=0)
    H = np.einsum("fni,nj->fij", X, Y)  # [F, 3, 3] covariance
    U, S, Vt = np.linalg.svd(H)
    sign = np.sign(np.linalg.det(U @ Vt))  # -1: the best orthogonal map is a reflection
    S[:, -1] *= sign
    # min_R |X R - Y|² = |X|² + |Y|² - 2 tr(S') (S' with the reflection removed)
    sq = np.sum(X * X, axis=(-2, -1)) + np.sum(Y * Y) - 2 * S.sum(axis=-1)
    return np.sqrt(np.maximum(sq, 0.0) / X.shape[-2])


def native_contacts(native: np.ndarray, resid, chain, *, cutoff: float = Q_CUTOFF,
                    min_separation: int = Q_MIN_SEPARATION) -> tuple[np.ndarray, np.ndarray]:
    """The native pairs of ``native`` [N, 3] (see the module docstring): (pairs [S, 2] bead
    indices i < j, r0 [S] their native distances in Å)."""
    native = np.asarray(native, np.float64)
    resid = np.asarray(resid, np.int64)
    chain = labels(chain)
    i, j = np.triu_indices(len(native), k=1)
    r0 = np.linalg.norm(native[i] - native[j], axis=-1)
    far_along = (chain[i] != chain[j]) | (np.abs(resid[i] - resid[j]) > min_separation)
    keep = far_along & (r0 < cutoff)
    return np.stack([i[keep], j[keep]], axis=1), r0[keep]


def fraction_native_contacts(R: np.ndarray, pairs: np.ndarray, r0: np.ndarray, *,
                             beta: float = Q_BETA, lam: float = Q_LAMBDA) -> np.ndarray:
    """[F] Q of R [F, N, 3] over native ``pairs`` [S, 2] with native distances ``r0`` [S] (Å);
    needs at least one pair."""
    R = np.asarray(R, np.float64)
    r = np.linalg.norm(R[:, pairs[:, 0]] - R[:, pairs[:, 1]], axis=-1)
    # 1 / (1 + exp(x)) written so that a large x gives 0, not an overflow warning
    return np.mean(0.5 * (1.0 - np.tanh(0.5 * beta * (r - lam * r0))), axis=-1)


def end_to_end(R: np.ndarray, chain) -> np.ndarray:
    """[F] distance (Å) between the first and the last bead of the chain of bead 0."""
    chain = labels(chain)
    last = np.flatnonzero(chain == chain[0])[-1]
    R = np.asarray(R, np.float64)
    return np.linalg.norm(R[:, last] - R[:, 0], axis=-1)


def pair_features(n_atoms: int, resid, chain, *, max_pairs: int = 300) -> np.ndarray:
    """[P, 2] bead pairs whose distances are the TICA features: the pairs not within 2 bonds
    along a chain (as the Q pairs, separation > 2), every k-th of them in (i, j) order so that
    at most ``max_pairs`` remain."""
    resid = np.asarray(resid, np.int64)
    chain = labels(chain)
    i, j = np.triu_indices(n_atoms, k=1)
    keep = (chain[i] != chain[j]) | (np.abs(resid[i] - resid[j]) > 2)
    pairs = np.stack([i[keep], j[keep]], axis=1)
    step = max(1, -(-len(pairs) // max_pairs))
    return pairs[::step]


def pair_distances(R: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """[F, P] distances (Å) of the bead ``pairs`` [P, 2] in R [F, N, 3]."""
    R = np.asarray(R, np.float64)
    return np.linalg.norm(R[:, pairs[:, 0]] - R[:, pairs[:, 1]], axis=-1)


def in_blocks(fn, R: np.ndarray, width: int) -> dict[str, np.ndarray]:
    """``fn(block) -> {name: [f, ...]}`` over blocks of frames of R [F, N, 3] (F >= 1), each
    block about :data:`BLOCK_VALUES` values of the widest intermediate (``width`` values per
    frame), concatenated along the frames: memory bounded on long trajectories."""
    step = max(1, BLOCK_VALUES // max(1, int(width)))
    parts = [fn(R[i:i + step]) for i in range(0, len(R), step)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
