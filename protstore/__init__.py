"""protstore: a Zarr/xarray data service for coarse-grained protein force-field training."""

from ._version import __version__
from .errors import ProtstoreError
from .store import Encoding, Store, open_store
from .batching import accessor as _accessor  # noqa: F401  (registers the ds.prot accessor)

__all__ = ["Encoding", "ProtstoreError", "Store", "open_store", "__version__"]
