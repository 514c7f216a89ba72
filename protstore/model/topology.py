"""CG topology of one padded frame, from bead order, ``resid``, ``chain`` and the mask.

Two beads are bonded when they are consecutive in bead order, both real, on the same chain, and
their resids differ by exactly one (a resid gap or a chain change breaks the chain: no fake
bonds). A bond into a proline is an X-Pro peptide, the one kind that is cis in real proteins
(~5% of them, CA-CA ~2.9 Å instead of 3.8): the bond prior gives those a double well. Angles
and dihedrals are runs of 2 and 3 consecutive bonds. Non-bonded pairs are all
pairs of real beads except those joined by one or two bonds, which is |i - j| >= 3 within a
continuous chain and includes beads across chain breaks.

A *packed* sample holds several frames (of one protein or of several) one after another, told
apart by ``segment`` (0, 1, ... per frame; -1 on padding): no term joins beads of different
segments, so the energy of a packed sample is the sum of its frames' energies.

All terms are masks over fixed-size arrays (shapes depend only on N_max), so one compiled
function serves every protein of a bucket; works under ``jax.vmap``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from ..vocab import SPECIES_ID

PRO_ID = SPECIES_ID["PRO"]


def one_segment(mask: jnp.ndarray) -> jnp.ndarray:
    """The ``segment`` of unpacked samples: 0 on real beads, -1 on padding (mask [..., N])."""
    return jnp.where(mask > 0, 0, -1).astype(jnp.int32)


class Topology(NamedTuple):
    """Masks (bool) of the terms of one frame with N_max beads."""

    bond: jnp.ndarray  # [N-1]: beads i, i+1 bonded
    prolyl: jnp.ndarray  # [N-1]: bonded, and bead i+1 is a proline (an X-Pro peptide, cis or trans)
    angle: jnp.ndarray  # [N-2]: beads i, i+1, i+2
    dihedral: jnp.ndarray  # [N-3]: beads i .. i+3
    pair: jnp.ndarray  # [N, N]: non-bonded pair i < j (upper triangle)
    real: jnp.ndarray  # [N]: real beads
    segment: jnp.ndarray  # [N] int: the frame of a packed sample each bead is in (-1 padding)


def build_topology(resid: jnp.ndarray, chain: jnp.ndarray, mask: jnp.ndarray,
                   species: jnp.ndarray | None = None,
                   segment: jnp.ndarray | None = None) -> Topology:
    """Topology from resid [N] int, chain [N] int, mask [N] (1 real, 0 padded), to know
    the X-Pro bonds (which may be cis) species [N] int, and for a packed sample segment [N] int
    (None: one frame, segment 0)."""
    real = mask > 0
    segment = one_segment(mask) if segment is None else segment
    same = segment[:-1] == segment[1:]
    bond = (real[:-1] & real[1:] & same & (chain[:-1] == chain[1:])
            & (resid[1:] == resid[:-1] + 1))
    prolyl = bond & (species[1:] == PRO_ID) if species is not None else jnp.zeros_like(bond)
    angle = bond[:-1] & bond[1:]
    dihedral = angle[:-1] & bond[2:]
    n = real.shape[0]
    i = jnp.arange(n)[:, None]
    j = jnp.arange(n)[None, :]
    sep = j - i
    one_bond = (sep == 1) & jnp.pad(bond, (0, 1))[:, None]
    two_bonds = (sep == 2) & jnp.pad(angle, (0, 2))[:, None]
    pair = ((sep > 0) & real[:, None] & real[None, :] & (segment[:, None] == segment[None, :])
            & ~one_bond & ~two_bonds)
    return Topology(bond, prolyl, angle, dihedral, pair, real, segment)
