"""xarray's backend for protstore: ``xr.open_dataset(STORE, engine="protstore", group=ID)``.

The idiom of xarray users opens one protein of a store as :meth:`Store.protein` does: residue
names and chain labels as strings (decoded from the store's label codes), R and F lazily indexed
(``chunks=...`` makes them dask arrays, as for any xarray backend), the protein document in
``attrs`` and read through the catalog, never by listing the store.
"""

from __future__ import annotations

import os

import xarray as xr
from xarray.backends import BackendEntrypoint

from ..errors import StoreError
from .layout import PROTEINS, STORE_DOC
from .reader import open_store


def _protein_id(group: str | None, url: str) -> str:
    if not group:
        raise StoreError(f"{url}: name the protein: xr.open_dataset(STORE, engine='protstore', "
                         f"group='proteins/<id>')")
    head, _, rest = group.strip("/").partition("/")
    return rest if head == PROTEINS and rest else group.strip("/")


class ProtstoreBackendEntrypoint(BackendEntrypoint):
    """``engine="protstore"``: one protein of a protstore as an ``xr.Dataset``."""

    description = "One protein of a protstore (a Zarr v3 store of CG protein data)"
    url = "https://github.com/protstore/protstore"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "group", "storage_options")

    def open_dataset(self, filename_or_obj, *, drop_variables=None, group: str | None = None,
                     storage_options: dict | None = None) -> xr.Dataset:
        url = os.fspath(filename_or_obj)
        store = open_store(url, storage_options=storage_options)
        ds = store.protein(_protein_id(group, url), chunks=None)
        return ds.drop_vars(drop_variables or [], errors="ignore")

    def guess_can_open(self, filename_or_obj) -> bool:
        try:
            path = os.fspath(filename_or_obj)
        except TypeError:
            return False
        root = os.path.join(path, "zarr.json")
        if "://" in path or not os.path.isfile(root):
            return False
        with open(root, "rb") as fh:
            return f'"{STORE_DOC}"'.encode() in fh.read(1 << 16)
