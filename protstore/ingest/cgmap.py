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


def ca_positions(coords: np.ndarray, ca: np.ndarray) -> np.ndarray:
    """All-atom [b, n_atoms, 3] -> bead positions [b, n_res, 3] float32: the CA atoms."""
    return np.take(coords, ca, axis=1).astype(np.float32, copy=False)  # 8x faster than [:, ca]


def residue_force_sums(forces: np.ndarray, starts: np.ndarray,
                       out: np.ndarray | None = None) -> np.ndarray:
    """All-atom [b, n_atoms, 3] -> bead forces [b, n_res, 3] float32 (into ``out`` if given).

    Sums accumulate in float64, so a bead force is the float32 rounding of the exact sum
    (float64 holds the sum of a residue's float32 forces exactly unless their magnitudes span
    more than ~2^29). A compiled loop (:func:`~protstore.ingest.kernels.segment_sums`), faster
    than NumPy's ``add.reduceat`` on a float64 copy (docs/performance.md).
    """
    from .kernels import segment_sums  # numba: imported only when forces are mapped

    if out is None:
        out = np.empty((forces.shape[0], len(starts), 3), np.float32)
    if forces.dtype not in (np.float32, np.float64):  # the kernel's types; exact for float16
        forces = forces.astype(np.float64)            # and big-endian (a few files at most)
    segment_sums(forces, np.asarray(starts, np.int64), out)
    return out
