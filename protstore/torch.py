"""PyTorch data adapter (``pip install 'protstore[torch]'``): protstore's
:class:`~protstore.batching.BatchLoader` as a ``torch.utils.data.IterableDataset``.

::

    from torch.utils.data import DataLoader
    from protstore.batching import LoaderConfig
    from protstore.torch import ProtstoreIterableDataset

    data = ProtstoreIterableDataset("store.zarr", "plan", LoaderConfig(batch_size=32))
    loader = DataLoader(data, batch_size=None, num_workers=2)   # the dataset yields batches
    for epoch in range(10):
        data.set_epoch(epoch)
        for batch in loader:
            batch["R"], batch["F"], batch["mask"], batch["species"]   # torch tensors

Each item is one batch of the loader, its NumPy arrays as tensors of the same dtype and shape
(``R``, ``F`` [B, N_max, 3] float32 Å and kcal/mol/Å; ``mask``, ``species``, ``resid``,
``chain``, ``segment`` [B, N_max]; ``protein_index``, ``frame``, ``temperature``,
``sample_mask`` [B], or [B, N_max] with ``LoaderConfig(packing=True)``) plus
the ints ``bucket``, ``epoch``, ``step`` and ``shard``; with ``graphs=True`` a
``torch_geometric.data.Batch`` of one ``Data`` per real sample instead (its real beads only).

Sharding uses the loader's own: the data-loader workers of all ranks are its processes
(``process_index = rank * num_workers + worker_id``, ``process_count = world_size *
num_workers``; the rank and world size of ``torch.distributed`` when it is initialised), so
``LoaderConfig.batch_size`` (or ``batch_beads``) is the *global* batch, each item is one
worker's contiguous share of it, every frame of the split is yielded exactly once per epoch
over all workers and ranks, every worker yields the same number of items, and each reads only
the chunks its shares need. The global batch must split evenly over the workers and ranks.

The dataset holds the store's URL, its storage options, the plan and the config (it pickles,
so it works with ``spawn`` and ``forkserver`` workers) and opens the store in the process that
iterates it. ``set_epoch`` reaches workers that are started per epoch (``persistent_workers``
off, DataLoader's default).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

try:
    import torch
    from torch.utils.data import IterableDataset, get_worker_info
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("protstore.torch needs PyTorch: pip install 'protstore[torch]'") from exc

from .batching.loader import BatchLoader, LoaderConfig
from .batching.plan import BucketPlan
from .batching.sample import FIELDS
from .errors import ConfigError
from .store import Store, open_store

__all__ = ["ProtstoreIterableDataset", "batch_to_graphs", "batch_to_tensors", "shard"]


def shard(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(index, count) of the process iterating now among all data-loader workers of all
    ranks; ``rank``/``world_size`` default to ``torch.distributed``'s when it is initialised,
    else 0 and 1."""
    dist = torch.distributed
    if rank is None or world_size is None:
        initialised = dist.is_available() and dist.is_initialized()
        rank = rank if rank is not None else (dist.get_rank() if initialised else 0)
        world_size = world_size if world_size is not None else (
            dist.get_world_size() if initialised else 1)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in 0..{world_size - 1} (world size {world_size})")
    info = get_worker_info()
    workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
    return rank * workers + worker, world_size * workers


def batch_to_tensors(batch: dict) -> dict:
    """A loader batch with its arrays as tensors (no copy: they share the arrays' memory, which
    the loader does not reuse while a tensor holds them); the ints stay ints."""
    return {key: torch.from_numpy(value) if key in FIELDS else value
            for key, value in batch.items()}


def batch_to_graphs(batch: dict):
    """A loader batch as a ``torch_geometric.data.Batch`` of one ``Data`` per frame (per
    real sample; per segment of a packed sample): ``pos`` [n, 3] Å, ``z`` [n] int64 species
    ids, ``neg_dy`` [n, 3] kcal/mol/Å (torchmd-net's names), ``resid``, ``chain`` [n], and per
    graph ``protein_index``, ``frame``, ``temperature``; the real beads only (padding and
    padded samples dropped); no edges."""
    from torch_geometric.data import Batch, Data

    graphs = []
    packed = batch["protein_index"].ndim == 2
    for i in torch.nonzero(torch.as_tensor(batch["sample_mask"]) > 0).flatten().tolist():
        segment = torch.as_tensor(batch["segment"][i])
        for s in range(int(segment.max()) + 1):
            real = segment == s
            pick = lambda key: torch.as_tensor(batch[key][i])[real]  # noqa: E731
            first = int(torch.nonzero(real)[0]) if packed else ()
            graphs.append(Data(pos=pick("R"), z=pick("species").long(), neg_dy=pick("F"),
                               resid=pick("resid"), chain=pick("chain"),
                               protein_index=int(batch["protein_index"][i][first]),
                               frame=int(batch["frame"][i][first]),
                               temperature=float(batch["temperature"][i][first])))
    out = Batch.from_data_list(graphs)
    # torch_geometric shifts every attribute named *index* by the nodes before it (it takes
    # them for node indices): put the protein indices back
    out.protein_index = torch.tensor([g.protein_index for g in graphs], dtype=torch.long)
    out.bucket, out.epoch, out.step = batch["bucket"], batch["epoch"], batch["step"]
    return out


class ProtstoreIterableDataset(IterableDataset):
    """The batches of ``plan``'s ``config.split`` in ``store`` (a Store or its URL; ``plan`` a
    BucketPlan or its name) for epoch :meth:`set_epoch` (module docstring). ``rank`` and
    ``world_size`` override ``torch.distributed``'s; ``graphs`` yields torch_geometric
    batches (needs torch_geometric)."""

    def __init__(self, store: Store | str, plan: BucketPlan | str,
                 config: LoaderConfig = LoaderConfig(), *, epoch: int = 0,
                 rank: int | None = None, world_size: int | None = None,
                 graphs: bool = False, storage_options: dict | None = None):
        super().__init__()
        if graphs:
            try:
                import torch_geometric  # noqa: F401
            except ImportError:
                raise ConfigError("graphs=True needs torch_geometric "
                                  "(pip install 'protstore[torch]')") from None
        opened = store if isinstance(store, Store) else open_store(
            store, storage_options=storage_options)
        self.url, self.storage_options = opened.url, opened.storage_options
        self.plan = opened.plan(plan) if isinstance(plan, str) else plan
        self.config, self.epoch = config, epoch
        self.rank, self.world_size, self.graphs = rank, world_size, graphs
        self._store = opened  # dropped when pickled: each process opens its own

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "_store"}

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration yields (its shuffle, as ``loader.epoch(epoch)``)."""
        self.epoch = epoch

    def loader(self) -> BatchLoader:
        """The BatchLoader of the process iterating now: this worker's shard."""
        store = self.__dict__.get("_store") or open_store(self.url,
                                                          storage_options=self.storage_options)
        index, count = shard(self.rank, self.world_size)
        return BatchLoader(store, self.plan, dataclasses.replace(
            self.config, process_index=index, process_count=count))

    def __iter__(self) -> Iterator:
        loader = self.loader()
        for batch in loader.epoch(self.epoch):
            batch["shard"] = loader.process_index
            yield batch_to_graphs(batch) if self.graphs else batch_to_tensors(batch)
