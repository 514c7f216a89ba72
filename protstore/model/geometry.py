"""NaN-safe CG geometry for one frame: distances, bond angles, dihedrals (Å, radians).

Padded beads sit at the origin, so their distances are zero and their angles undefined. Every
function takes a mask of the terms that exist and substitutes harmless values *before* any
square root, division or arctan2, so neither values nor gradients of masked terms are NaN
(``jnp.where`` after the fact is not enough: the gradient of sqrt at 0 is inf and 0 * inf = NaN).
"""

from __future__ import annotations

import jax.numpy as jnp


def safe_norm(v: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
    """|v| over the last axis where ``valid``, 0 elsewhere; v [..., 3], valid [...] bool."""
    r2 = jnp.sum(v * v, axis=-1)
    ok = valid & (r2 > 0)
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, r2, 1.0)), 0.0)


def pair_distances(R: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
    """[N, N] distances between beads of R [N, 3] where ``valid`` [N, N] (0 elsewhere)."""
    return safe_norm(R[:, None, :] - R[None, :, :], valid)


def bond_lengths(R: jnp.ndarray, bond: jnp.ndarray) -> jnp.ndarray:
    """[N-1] |R[i+1] - R[i]| where ``bond`` [N-1] bool."""
    return safe_norm(R[1:] - R[:-1], bond)


def _cosines(R: jnp.ndarray, angle: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(cos θ [N-2], defined [N-2]): cos θ from the dot product where both bonds have a length."""
    u, v = R[:-2] - R[1:-1], R[2:] - R[1:-1]
    den = safe_norm(u, angle) * safe_norm(v, angle)
    ok = angle & (den > 0)
    return jnp.sum(u * v, axis=-1) / jnp.where(ok, den, 1.0), ok


def bond_cosines(R: jnp.ndarray, angle: jnp.ndarray) -> jnp.ndarray:
    """[N-2] cos θ of the angle at bead i+1 between beads i, i+1, i+2 (-1..1) where ``angle``
    [N-2] bool (0 elsewhere). No arccos: smooth in R everywhere, a straight chain (θ = π)
    included."""
    cos, ok = _cosines(R, angle)
    return jnp.where(ok, cos, 0.0)


def bond_angles(R: jnp.ndarray, angle: jnp.ndarray) -> jnp.ndarray:
    """[N-2] angle at bead i+1 between beads i, i+1, i+2 (0..π) where ``angle`` [N-2] bool.
    Its gradient stops just inside 0 and π (arccos has an infinite slope at ±1): an energy that
    must be smooth there is a function of :func:`bond_cosines` instead."""
    cos, ok = _cosines(R, angle)
    return jnp.where(ok, jnp.arccos(jnp.clip(cos, -1.0 + 1e-6, 1.0 - 1e-6)), 0.0)


def dihedral_angles(R: jnp.ndarray, dihedral: jnp.ndarray) -> jnp.ndarray:
    """[N-3] dihedral of beads i..i+3 (-π..π, IUPAC sign) where ``dihedral`` [N-3] bool."""
    b0, b1, b2 = R[1:-2] - R[:-3], R[2:-1] - R[1:-2], R[3:] - R[2:-1]
    n1, n2 = jnp.cross(b0, b1), jnp.cross(b1, b2)
    x = jnp.sum(n1 * n2, axis=-1)
    y = safe_norm(b1, dihedral) * jnp.sum(b0 * n2, axis=-1)
    ok = dihedral & ((x * x + y * y) > 1e-12)
    return jnp.where(ok, jnp.arctan2(jnp.where(ok, y, 0.0), jnp.where(ok, x, 1.0)), 0.0)
