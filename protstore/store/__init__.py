"""The store: layout, metadata documents and their schemas, the Store object, locking."""

from .create import create_store
from .layout import Encoding, check_protein_id
from .reader import Store, open_store
from .versions import collect_garbage, store_log

__all__ = ["Encoding", "Store", "check_protein_id", "collect_garbage", "create_store",
           "open_store", "store_log"]
