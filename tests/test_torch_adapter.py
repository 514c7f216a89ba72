"""protstore.torch: the BatchLoader as a torch IterableDataset (skipped without torch)."""

import collections
import pickle
import subprocess
import sys

import numpy as np
import pytest

from protstore.batching import BatchLoader, LoaderConfig

torch = pytest.importorskip("torch")

from protstore.torch import ProtstoreIterableDataset  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402



@pytest.fixture(scope="module")
def workers():
    """DataLoader options for 2 workers started by a fork server (which pickles the dataset),
    not forked from this process, where JAX may run threads (a forked child of a multithreaded
    process can deadlock). The server imports protstore.torch once; each worker forks from it."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["protstore.torch"])
    return {"num_workers": 2, "multiprocessing_context": context}

KEYS = ("R", "F", "mask", "species", "resid", "chain", "protein_index", "frame",
        "temperature", "sample_mask")


def _expected(plan, split="train"):
    return collections.Counter((i, int(f)) for i, p in enumerate(plan.proteins)
                               for f in plan.split.frames(p, plan.frames[p], split))


@pytest.mark.slow
def test_every_training_frame_once_per_epoch_over_two_workers(train_store, workers):
    plan = train_store.plan("p")
    config = LoaderConfig(batch_size=8, last="pad", seed=4)
    data = ProtstoreIterableDataset(train_store.url, "p", config)
    data.set_epoch(1)
    items = list(DataLoader(data, batch_size=None, **workers))
    assert {item["shard"] for item in items} == {0, 1}
    seen = collections.Counter()
    for item in items:
        real = item["sample_mask"] > 0
        seen.update(zip(item["protein_index"][real].tolist(), item["frame"][real].tolist()))
    assert seen == _expected(plan)  # every training frame, each exactly once
    # each item is a worker's share of a global batch: the loader's own batch of that shard
    for shard in (0, 1):
        mine = [item for item in items if item["shard"] == shard]
        loader = BatchLoader(train_store, plan, LoaderConfig(
            batch_size=8, last="pad", seed=4, process_index=shard, process_count=2))
        batches = list(loader.epoch(1))
        assert len(mine) == len(batches) == loader.steps_per_epoch(1)
        for item, batch in zip(sorted(mine, key=lambda i: i["step"]), batches):
            assert (item["bucket"], item["epoch"], item["step"]) == \
                (batch["bucket"], 1, batch["step"])
            for key in KEYS:
                assert isinstance(item[key], torch.Tensor)
                assert item[key].numpy().dtype == batch[key].dtype
                np.testing.assert_array_equal(item[key].numpy(), batch[key])


@pytest.mark.slow
def test_ranks_and_workers_share_the_global_batch(train_store, workers):
    """Rank 1 of 2, two workers: shards 2 and 3 of 4, each the loader's batches of its shard."""
    plan = train_store.plan("p")
    data = ProtstoreIterableDataset(train_store, plan, LoaderConfig(batch_size=8, last="pad"),
                                    rank=1, world_size=2)
    items = list(DataLoader(data, batch_size=None, **workers))
    assert {item["shard"] for item in items} == {2, 3}
    for shard in (2, 3):
        loader = BatchLoader(train_store, plan, LoaderConfig(
            batch_size=8, last="pad", process_index=shard, process_count=4))
        mine = sorted((i for i in items if i["shard"] == shard), key=lambda i: i["step"])
        batches = list(loader.epoch(0))
        assert len(mine) == len(batches) and mine[0]["R"].shape[0] == 2  # 8 over 4 shards
        for item, batch in zip(mine, batches):
            np.testing.assert_array_equal(item["frame"].numpy(), batch["frame"])
            np.testing.assert_array_equal(item["R"].numpy(), batch["R"])


def test_dataset_pickles_without_its_store(train_store):
    data = ProtstoreIterableDataset(train_store, "p", LoaderConfig(batch_size=4))
    again = pickle.loads(pickle.dumps(data))
    assert "_store" not in again.__dict__ and again.url == train_store.url
    first = next(iter(again))
    np.testing.assert_array_equal(first["R"].numpy(), next(iter(data))["R"].numpy())


def test_graphs_hold_the_real_beads(train_store):
    pytest.importorskip("torch_geometric")
    plan = train_store.plan("p")
    config = LoaderConfig(batch_size=4, last="pad", order="sequential")
    graphs = next(iter(ProtstoreIterableDataset(train_store, plan, config, graphs=True)))
    batch = next(iter(BatchLoader(train_store, plan, config).epoch(0)))
    real = batch["sample_mask"] > 0
    assert graphs.num_graphs == int(real.sum())
    mask = batch["mask"][real] > 0
    np.testing.assert_array_equal(graphs.pos.numpy(), batch["R"][real][mask])
    np.testing.assert_array_equal(graphs.neg_dy.numpy(), batch["F"][real][mask])
    np.testing.assert_array_equal(graphs.z.numpy(), batch["species"][real][mask])
    assert graphs.z.dtype == torch.long
    np.testing.assert_array_equal(graphs.batch.numpy(), np.nonzero(mask)[0])
    np.testing.assert_array_equal(graphs.frame.numpy(), batch["frame"][real])


class PairForces(torch.nn.Module):
    """F_i = sum_j w(d_ij) (r_i - r_j) / d_ij over real j != i, w a two-layer MLP of d."""

    def __init__(self, hidden=16):
        super().__init__()
        self.w = torch.nn.Sequential(torch.nn.Linear(1, hidden), torch.nn.Tanh(),
                                     torch.nn.Linear(hidden, 1))

    def forward(self, R, mask):
        diff = R[:, :, None] - R[:, None, :]  # [B, N, N, 3]
        pair = mask[:, :, None] * mask[:, None, :] * (1 - torch.eye(R.shape[1]))
        d = torch.sqrt((diff ** 2).sum(-1) + (1 - pair))  # 1 where not a pair: no 0/0
        w = self.w(d[..., None] / 10.0)[..., 0] * pair
        return (w[..., None] * diff / d[..., None]).sum(2)


def test_a_toy_torch_model_trains(train_store):
    torch.manual_seed(0)
    model = PairForces()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = ProtstoreIterableDataset(train_store, "p", LoaderConfig(batch_size=8, seed=1))
    losses = []
    for epoch in range(3):
        data.set_epoch(epoch)
        for batch in DataLoader(data, batch_size=None):
            mask = batch["mask"] * batch["sample_mask"][:, None]
            err = (model(batch["R"], batch["mask"]) - batch["F"]) ** 2 * mask[..., None]
            loss = err.sum() / (3 * mask.sum())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert len(losses) >= 20 and np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3]), losses


def test_sizes_that_do_not_split_are_refused(train_store):
    from protstore.errors import ProtstoreError

    data = ProtstoreIterableDataset(train_store, "p", LoaderConfig(batch_size=5), world_size=2,
                                    rank=0)
    with pytest.raises(ProtstoreError, match="multiple of the process count"):
        next(iter(data))


@pytest.mark.slow
def test_importing_protstore_never_imports_torch():
    code = ("import sys, protstore, protstore.cli, protstore.batching, protstore.export, "
            "protstore.train; protstore.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'torch_geometric') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
