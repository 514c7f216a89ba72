"""protstore: a Zarr/xarray data service for coarse-grained protein force-field training."""

__version__ = "0.4.0"

from .errors import ProtstoreError  # noqa: E402
from .store import Encoding, Store, open_store  # noqa: E402

__all__ = ["Encoding", "ProtstoreError", "Store", "open_store", "__version__"]
