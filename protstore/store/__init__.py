"""The store: layout, metadata documents and their schemas, the Store object, locking."""

from .create import create_store
from .layout import Encoding, check_protein_id
from .reader import Store, open_store

__all__ = ["Encoding", "Store", "check_protein_id", "create_store", "open_store"]
