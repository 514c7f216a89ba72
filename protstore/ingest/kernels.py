"""Compiled loops (numba) for the few passes over all-atom frames that NumPy has no fast call for.

Imported only when a source needs them (numba is slow to import). Each kernel compiles once per
argument type into numba's on-disk cache, so later processes load it instead.
"""

from __future__ import annotations

import numba
import numpy as np


def _njit(fn):
    try:
        return numba.njit(nogil=True, cache=True)(fn)
    except RuntimeError:  # no writable cache directory: compile in each process instead
        return numba.njit(nogil=True)(fn)


@_njit
def segment_sums(values, starts, out):
    """Sums of ``values`` [b, n, 3] over the atom runs beginning at ``starts`` [m] (the last one
    runs to n), accumulated in float64 in atom order, into ``out`` [b, m, 3] (rounded to its
    dtype). Releases the GIL. ``values`` must be in native byte order."""
    b, n, _ = values.shape
    m = starts.shape[0]
    for f in range(b):
        for r in range(m):
            end = starts[r + 1] if r + 1 < m else n
            x = 0.0
            y = 0.0
            z = 0.0
            for a in range(starts[r], end):
                x += np.float64(values[f, a, 0])
                y += np.float64(values[f, a, 1])
                z += np.float64(values[f, a, 2])
            out[f, r, 0] = x
            out[f, r, 1] = y
            out[f, r, 2] = z
