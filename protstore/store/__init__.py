"""The store: layout, metadata documents and their schemas, the Store object, locking."""

from .layout import Encoding
from .store import Store, check_protein_id, create_store, open_store

__all__ = ["Encoding", "Store", "check_protein_id", "create_store", "open_store"]
