"""The one-bead-per-residue CG map: bead position = CA, bead force = sum over the residue."""

from __future__ import annotations

import numpy as np

from ..errors import InputError

CA_AGGREGATE = {
    "name": "ca-aggregate",
    "position": "C-alpha atom of the residue",
    "force": "sum of the forces of all atoms of the residue",
}


def residue_starts(chain: np.ndarray, resid: np.ndarray) -> np.ndarray:
    """[n_res] index of each residue's first atom; a residue is a run of equal (chain, resid)."""
    change = (chain[1:] != chain[:-1]) | (resid[1:] != resid[:-1])
    return np.concatenate([[0], np.flatnonzero(change) + 1]).astype(np.int64)


def ca_indices(atom_names: np.ndarray, starts: np.ndarray, where: str) -> np.ndarray:
    """[n_res] index of the single CA atom of each residue (error naming the residue otherwise)."""
    is_ca = np.asarray(atom_names) == "CA"
    counts = np.add.reduceat(is_ca.astype(np.int64), starts)
    bad = np.flatnonzero(counts != 1)
    if len(bad):
        r = int(bad[0])
        raise InputError(f"{where}: residue #{r} (atom {starts[r]}) has {counts[r]} CA atoms; "
                         f"the CA map needs exactly one")
    return np.flatnonzero(is_ca)


def map_block(coords: np.ndarray, forces: np.ndarray, ca: np.ndarray,
              starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All-atom [b, n_atoms, 3] -> beads [b, n_res, 3]: CA positions, summed forces (float32).

    Sums accumulate in float64 so the bead force is the correctly rounded float32 of the sum.
    """
    R = coords[:, ca].astype(np.float32, copy=False)
    F = np.add.reduceat(forces, starts, axis=1, dtype=np.float64).astype(np.float32)
    return R, F
