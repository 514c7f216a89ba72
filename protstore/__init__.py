"""protstore: a Zarr/xarray data service for coarse-grained protein force-field training."""

__version__ = "0.6.1"

from .errors import ProtstoreError  # noqa: E402
from .store import Encoding, Store, open_store  # noqa: E402
from .batching import accessor as _accessor  # noqa: E402,F401  (registers the ds.prot accessor)

__all__ = ["Encoding", "ProtstoreError", "Store", "open_store", "__version__"]
