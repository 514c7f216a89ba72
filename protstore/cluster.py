"""Connecting to a dask.distributed cluster (ingest and evaluation run their tasks there)."""

from __future__ import annotations

from .errors import ProtstoreError


def connect(address: str):
    """A ``dask.distributed.Client`` of the scheduler at ``address``, or a one-line error."""
    from distributed import Client

    try:
        return Client(address, timeout="10s")
    except OSError as exc:
        raise ProtstoreError(f"cannot reach dask scheduler {address} ({exc})") from None
