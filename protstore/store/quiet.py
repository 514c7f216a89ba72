"""Silence zarr's user warnings (by category) around protstore's own zarr calls.

zarr warns that consolidated metadata is not yet part of the v3 spec, and that the store's
private entries (``.staging``, ``.lock``) are not Zarr nodes; protstore writes both on purpose.
Only ``zarr.errors.ZarrUserWarning`` is silenced, only inside the ``with`` block: the user's
own warning filters are left as they are.
"""

from __future__ import annotations

import contextlib
import warnings

from zarr.errors import ZarrUserWarning


@contextlib.contextmanager
def quiet_zarr():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ZarrUserWarning)
        yield
