import collections
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import protstore
from protstore.batching import BatchLoader, LoaderConfig, make_plan, save_plan
from protstore.batching.export import export_npz
from protstore.ingest import IngestOptions, ingest
from protstore.vocab import PAD_ID


@pytest.fixture(scope="module")
def plan(demo_store):
    p = make_plan(demo_store.lengths().to_dict(), demo_store.summary()["n_frames"].to_dict(),
                  name="views", boundaries=[15], split="frame", val_fraction=0.25, seed=2)
    save_plan(demo_store, p, overwrite=True)
    return p


def test_view_is_padded_and_correct(demo_store, plan):
    view = demo_store.bucket("views", 1, "all")
    n_max = plan.buckets[1].n_max
    assert view.sizes == {"sample": sum(plan.frames[p] for p in plan.buckets[1].proteins),
                          "atom": n_max, "xyz": 3}
    for pid in plan.buckets[1].proteins:
        ref = demo_store.protein(pid).load()
        sel = view.where(view.protein == pid, drop=True).load()
        n = ref.sizes["atom"]
        np.testing.assert_array_equal(sel.R.values[:, :n], ref.R.values)
        np.testing.assert_array_equal(sel.F.values[:, :n], ref.F.values)
        assert (sel.R.values[:, n:] == 0).all() and (sel.mask.values[:, n:] == 0).all()
        assert (sel.mask.values[:, :n] == 1).all()
        assert (sel.species.values[:, n:] == PAD_ID).all()
        np.testing.assert_array_equal(sel.species.values[0, :n], ref.species.values)
        np.testing.assert_array_equal(sel.temperature.values, ref.temperature.values)


def test_view_is_lazy_and_reads_only_needed_chunks(demo_store, plan, frame_chunk_reads):
    view = demo_store.bucket("views", 1, "train")
    assert frame_chunk_reads == []  # building the view reads no R/F chunk
    view.R.isel(sample=0).values
    assert len(frame_chunk_reads) == 1  # one chunk of one protein


def test_split_views_partition_the_samples(demo_store, plan):
    tr = demo_store.bucket("views", 0, "train")
    va = demo_store.bucket("views", 0, "val")
    key = lambda v: set(zip(v.protein.values.tolist(), v.frame.values.tolist()))
    assert not key(tr) & key(va)
    assert len(key(tr)) + len(key(va)) == plan.buckets[0].n_frames


def test_accessor_pad_and_unpad(demo_store):
    ds = demo_store.protein(demo_store.proteins[0])
    padded = ds.prot.pad_to(40)
    assert padded.sizes["atom"] == 40 and int(padded.prot.n_real.values) == 12
    back = padded.prot.unpad()
    np.testing.assert_array_equal(back.R.values, ds.R.values)


@pytest.mark.parametrize("order", ["interleaved", "sequential"])
def test_every_sample_once_per_epoch(demo_store, plan, order):
    loader = BatchLoader(demo_store, plan, LoaderConfig(batch_size=7, order=order,
                                                        last="pad"))
    seen = collections.Counter()
    buckets = []
    for batch in loader.epoch(0):
        assert batch["R"].shape == (7, loader.n_max[batch["bucket"]], 3)
        real = batch["sample_mask"] > 0
        seen.update(zip(batch["protein_index"][real].tolist(), batch["frame"][real].tolist()))
        assert (batch["mask"][~real] == 0).all()
        buckets.append(batch["bucket"])
    expected = sum(len(plan.split.frames(p, plan.frames[p], "train")) for p in plan.proteins)
    assert len(seen) == expected and set(seen.values()) == {1}
    if order == "sequential":
        assert buckets == sorted(buckets)


def test_batches_hold_the_right_data(demo_store, plan):
    from protstore.store.layout import chain_codes
    loader = BatchLoader(demo_store, plan, LoaderConfig(batch_size=5, seed=4))
    for batch in list(loader.epoch(1))[:4]:
        for i in range(5):
            pid = plan.proteins[batch["protein_index"][i]]
            ref = demo_store.protein(pid)
            n, f = ref.sizes["atom"], batch["frame"][i]
            np.testing.assert_array_equal(batch["R"][i, :n], ref.R.values[f])
            np.testing.assert_array_equal(batch["F"][i, :n], ref.F.values[f])
            np.testing.assert_array_equal(batch["species"][i, :n], ref.species.values)
            np.testing.assert_array_equal(batch["chain"][i, :n], chain_codes(ref.chain.values))
            assert (batch["chain"][i, n:] == -1).all()
            assert batch["temperature"][i] == ref.temperature.values[f]


@pytest.mark.parametrize("last", ["drop", "pad"])
def test_a_loader_batch_equals_the_view_at_its_samples(demo_store, plan, last):
    from protstore.batching.sample import FIELDS

    views = {k: demo_store.bucket("views", k, "train") for k in range(len(plan.buckets))}
    loader = BatchLoader(demo_store, plan, LoaderConfig(batch_size=6, seed=9, last=last))
    checked = 0
    for batch in loader.epoch(2):
        view = views[batch["bucket"]]
        real = batch["sample_mask"] > 0
        index = {(int(p), int(f)): s for s, (p, f) in enumerate(zip(
            view.protein_index.values, view.frame.values))}
        samples = [index[(int(p), int(f))] for p, f in
                   zip(batch["protein_index"][real], batch["frame"][real])]
        at = view.isel(sample=samples)
        for key in ("R", "F", "mask", "species", "resid", "chain", "temperature",
                    "protein_index", "frame"):
            expected = at[key].values
            assert batch[key].dtype == FIELDS[key].dtype == expected.dtype, key
            np.testing.assert_array_equal(batch[key][real], expected, err_msg=key)
            if (~real).any():  # padded samples hold the pad values
                assert (batch[key][~real] == FIELDS[key].pad).all(), key
        checked += int(real.sum())
    total = sum(len(plan.split.frames(p, plan.frames[p], "train")) for p in plan.proteins)
    if last == "pad":
        assert checked == total
    else:  # each bucket drops fewer than a batch
        assert total - len(plan.buckets) * 5 <= checked <= total


def test_drop_last_never_short(demo_store, plan):
    loader = BatchLoader(demo_store, plan, LoaderConfig(batch_size=8, last="drop"))
    assert all(b["R"].shape[0] == 8 and b["sample_mask"].all() for b in loader.epoch(0))


def test_deterministic_and_resumable(demo_store, plan):
    cfg = LoaderConfig(batch_size=6, seed=11)
    a = list(BatchLoader(demo_store, plan, cfg).epoch(3))
    b = list(BatchLoader(demo_store, plan, cfg).epoch(3))
    resumed = list(BatchLoader(demo_store, plan, cfg).epoch(3, start_step=4))
    assert len(a) == len(b) and len(resumed) == len(a) - 4
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["R"], y["R"])
    for x, y in zip(a[4:], resumed):
        assert x["step"] == y["step"]
        np.testing.assert_array_equal(x["R"], y["R"])
        np.testing.assert_array_equal(x["frame"], y["frame"])
    other = list(BatchLoader(demo_store, plan, cfg).epoch(4))
    assert any(not np.array_equal(x["frame"], y["frame"]) for x, y in zip(a, other))


def test_one_compiled_shape_per_bucket(demo_store, plan):
    traces = []

    @jax.jit
    def f(R, mask):
        traces.append(R.shape)
        return jnp.sum(R * mask[..., None])

    loader = BatchLoader(demo_store, plan, LoaderConfig(batch_size=4, last="pad"))
    for _ in range(2):
        for batch in loader.epoch(0):
            f(batch["R"], batch["mask"])
    assert len(traces) == len(plan.buckets) == len(set(traces))


def test_export_npz_round_trips_through_ingest(demo_store, plan, tmp_path):
    paths = export_npz(demo_store, plan, tmp_path / "npz")
    assert [p.name for p in paths] == [f"bucket_N{b.n_max:04d}.npz" for b in plan.buckets]
    with np.load(paths[-1]) as d:  # two proteins of different lengths: padded
        assert d["species"].min() == -1 and d["resid"].min() == -1
    store = protstore.open_store(tmp_path / "re.zarr", mode="a")
    report = ingest(paths, store, IngestOptions(), progress=False, log=lambda m: None)
    assert sorted(report.written) == sorted(plan.proteins)
    for pid in plan.proteins:
        np.testing.assert_array_equal(store.protein(pid).R.values,
                                      demo_store.protein(pid).R.values)


def _small_chunk_protein(tmp_path, transpose=True, frames=23):
    """A store of one 5-bead protein "p" in chunks of 17 frames; returns (zarr group, R)."""
    rng = np.random.default_rng(0)
    R = rng.normal(scale=0.1, size=(frames, 5, 3)).astype(np.float32)
    R[..., 0] += 3.8 * np.arange(5, dtype=np.float32)
    F = rng.normal(scale=10.0, size=(frames, 5, 3)).astype(np.float32)
    np.savez(tmp_path / "p.npz", R=R, F=F, resname=np.array(["ALA", "GLY", "HSD", "CYS", "TRP"]))
    protstore.store.create_store(tmp_path / "s.zarr",
                                 protstore.Encoding(chunk_bytes=1024, transpose=transpose))
    report = ingest([tmp_path / "p.npz"], protstore.open_store(tmp_path / "s.zarr", mode="a"),
                    progress=False, log=lambda m: None)
    assert report.written == ["p"] and not report.excluded
    return protstore.open_store(tmp_path / "s.zarr").protein_group("p"), R


@pytest.mark.parametrize("transpose", [True, False])
def test_chunk_reader_matches_zarr_bit_for_bit(tmp_path, transpose):
    from protstore.store.chunks import ChunkReader, Scratch

    group, R = _small_chunk_protein(tmp_path, transpose)  # 23 frames: a partial last chunk
    for name in ("R", "F", "species", "resid", "chain", "temperature"):
        reader = ChunkReader(group[name])
        assert reader.direct is not None  # the store's own layout takes the fast path
        ref, got = group[name][:], reader.read_all()
        if name == "chain":  # label codes: read_all gives their labels
            labels = group[name].attrs["protstore_labels"]
            assert ref.dtype == np.int32 and list(got) == [labels[i] for i in ref]
            assert reader.read(0).tobytes() == ref.tobytes()  # the codes, bit for bit
        else:
            assert got.dtype == ref.dtype and got.tobytes() == ref.tobytes()
    reader = ChunkReader(group["R"])
    assert reader.chunk < 23 and reader.read(23 // reader.chunk).shape[0] == 23 % reader.chunk
    n_chunks = -(-23 // reader.chunk)
    np.testing.assert_array_equal(np.concatenate([reader.read(c) for c in range(n_chunks)]), R)
    scratch = Scratch()  # read and decoded into reused buffers: the same values
    for c in range(n_chunks):
        np.testing.assert_array_equal(reader.read(c, scratch), R[c * reader.chunk:][:reader.chunk])
    with pytest.raises(IndexError):
        reader.read(n_chunks)


def test_lazy_frames_indexes_like_numpy(tmp_path):
    from protstore.store.chunks import ChunkReader
    from protstore.store.lazy import LazyFrames

    group, _ = _small_chunk_protein(tmp_path, frames=60)
    lazy, ref = LazyFrames(ChunkReader(group["F"])), group["F"][:]
    chunk = group["F"].chunks[0]
    assert ref.shape[0] > 3 * chunk  # keys below span several chunks
    picks = np.random.default_rng(1).choice(60, 25, replace=False)
    keys = [slice(None), slice(chunk - 3, 2 * chunk + 5), slice(10, 5), 7, -1, picks,
            np.sort(picks), [2, 0, 1], [chunk, chunk - 1, 0], (slice(3, chunk + 4), 2),
            (picks, slice(None), 2), (slice(0, 10, 2),), np.arange(60) < 5, (picks[:2], [0, 1])]
    for key in keys:
        got, want = lazy[key], ref[key]
        assert got.shape == want.shape and np.array_equal(got, want), key


def test_protein_without_dask_indexes_like_xarray_on_the_zarr_group(tmp_path):
    import xarray as xr

    _small_chunk_protein(tmp_path, frames=60)
    store = protstore.open_store(tmp_path / "s.zarr")
    lazy = store.protein("p", chunks=None)
    ref = xr.open_zarr(tmp_path / "s.zarr", group="proteins/p", consolidated=False).load()
    ref = ref.prot.decode_labels()  # the label codes (format 3) as Store.protein gives them
    assert lazy.R.chunks is None and not lazy.F.variable._in_memory  # no dask; nothing read
    chunk = store.protein_group("p")["R"].chunks[0]
    picks = np.random.default_rng(2).choice(60, 9, replace=False)
    samples = xr.DataArray([[4, 1], [0, 2]], dims=("s", "t"))
    keys = [{}, {"frame": 5}, {"frame": slice(chunk - 2, 2 * chunk + 3)}, {"frame": picks},
            {"frame": slice(50, 3, -4)}, {"atom": [3, 0]}, {"frame": 7, "xyz": [2, 0]},
            {"frame": picks, "atom": [4, 1]}, {"atom": 2, "xyz": [1, 2]},
            {"frame": 9, "atom": [0, 4], "xyz": 1}, {"frame": samples, "atom": samples},
            {"frame": picks[:2], "atom": slice(1, 4), "xyz": [2, 1, 0]}]
    for key in keys:
        for name in ("R", "F"):
            got, want = lazy[name].isel(key), ref[name].isel(key)
            assert got.dims == want.dims and got.values.tobytes() == want.values.tobytes(), key
    loaded = lazy.load()
    assert loaded.R.variable._in_memory and loaded.identical(ref.assign_attrs(loaded.attrs))
    with pytest.raises(protstore.errors.StoreError, match="chunks must be"):
        store.protein("p", chunks={"frame": 10})


def test_chunk_reader_falls_back_to_zarr(tmp_path):
    import zarr

    from protstore.store.chunks import ChunkReader

    data = np.arange(40, dtype=np.float32).reshape(10, 4)
    gz = zarr.create_array(tmp_path / "gzip.zarr", shape=data.shape, chunks=(3, 4),
                           dtype="float32", compressors=[zarr.codecs.GzipCodec()])
    gz[:] = data
    mem = zarr.create_array(zarr.storage.MemoryStore(), shape=data.shape, chunks=(3, 4),
                            dtype="float32")
    mem[:] = data
    unwritten = zarr.create_array(tmp_path / "empty.zarr", shape=data.shape, chunks=(3, 4),
                                  dtype="float32", fill_value=7.0)
    for array in (gz, mem):
        reader = ChunkReader(array)
        assert reader.direct is None
        np.testing.assert_array_equal(reader.read_all(), data)
    reader = ChunkReader(unwritten)
    assert reader.direct is not None
    with pytest.raises(protstore.errors.ChunkError, match="chunk 3: chunk file missing"):
        reader.read(3)


@pytest.mark.parametrize("kind", ["crc32c", "big-endian", "v2-keys", "zstd", "no-transpose",
                                  "strings"])
def test_direct_path_reads_and_writes_what_zarr_does(tmp_path, kind):
    import zarr

    from protstore.store.chunks import ChunkReader, ChunkWriter

    data = np.random.default_rng(0).normal(size=(10, 4, 3)).astype(np.float32)
    kwargs = {"filters": [zarr.codecs.TransposeCodec(order=(1, 2, 0))],
              "compressors": [zarr.codecs.BloscCodec(cname="zstd", clevel=2)]}
    if kind == "crc32c":
        kwargs["compressors"] = kwargs["compressors"] + [zarr.codecs.Crc32cCodec()]
    elif kind == "big-endian":
        kwargs["serializer"] = zarr.codecs.BytesCodec(endian="big")
    elif kind == "v2-keys":
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "."}
    elif kind == "zstd":
        kwargs["compressors"] = [zarr.codecs.ZstdCodec(level=3, checksum=True)]
    elif kind == "no-transpose":
        del kwargs["filters"]
    elif kind == "strings":
        data = np.array([f"s{i}" for i in range(10)], dtype=object)
        del kwargs["filters"]
    shape, chunks = data.shape, (3, *data.shape[1:])
    dtype = str if kind == "strings" else "float32"
    by_zarr = zarr.create_array(tmp_path / "a.zarr", shape=shape, chunks=chunks, dtype=dtype,
                                **kwargs)
    by_zarr[:] = data
    direct = zarr.create_array(tmp_path / "b.zarr", shape=shape, chunks=chunks, dtype=dtype,
                               **kwargs)
    writer = ChunkWriter(direct)
    assert writer.direct is not None
    for c in range(4):
        writer.write(c, data[3 * c:3 * c + 3])
    for array in (by_zarr, direct):
        reader = ChunkReader(array)
        assert reader.direct is not None
        np.testing.assert_array_equal(reader.read_all(), data)
        np.testing.assert_array_equal(reader.read(3), data[9:])
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "b.zarr")[:], data)


def test_direct_path_leaves_sharded_and_unknown_layouts_to_zarr(tmp_path, monkeypatch):
    import zarr

    from protstore.store import chunks
    from protstore.store.chunks import ChunkReader, ChunkWriter

    data = np.arange(60, dtype=np.float32).reshape(20, 3)
    sharded = zarr.create_array(tmp_path / "s.zarr", shape=data.shape, chunks=(2, 3),
                                shards=(4, 3), dtype="float32")
    writer = ChunkWriter(sharded)
    assert writer.direct is None
    for c in range(10):
        writer.write(c, data[2 * c:2 * c + 2])
    np.testing.assert_array_equal(ChunkReader(sharded).read_all(), data)
    plain = zarr.create_array(tmp_path / "p.zarr", shape=data.shape, chunks=(4, 3),
                              dtype="float32")
    plain[:] = data

    def broken(array):
        raise KeyError("a field this version does not know")

    monkeypatch.setattr(chunks, "_recognise", broken)
    reader = ChunkReader(plain)
    assert reader.direct is None
    np.testing.assert_array_equal(reader.read(1), data[4:8])


@pytest.fixture(scope="module")
def multichunk(tmp_path_factory):
    """12 small proteins of 160 frames (2 temperatures x 2 replicas) in 1 KiB chunks: each
    protein spans about 10 chunks, as an mdCATH protein spans many."""
    from helpers import write_mdcath

    tmp = tmp_path_factory.mktemp("multichunk")
    protstore.store.create_store(tmp / "s.zarr", protstore.Encoding(chunk_bytes=1024))
    store = protstore.open_store(tmp / "s.zarr", mode="a")
    files = []
    for i in range(12):
        write_mdcath(tmp / f"p{i}.h5", domain=f"p{i:02d}", frames=40, seed=i,
                     runs=((320, 0), (320, 1), (348, 0), (348, 1)))
        files.append(tmp / f"p{i}.h5")
    ingest(files, store, progress=False, log=lambda m: None)
    plan = make_plan(store.lengths().to_dict(), store.summary()["n_frames"].to_dict(),
                     name="mc", n_buckets=1, split="none")
    save_plan(store, plan)
    return protstore.open_store(tmp / "s.zarr"), plan


def test_batches_are_as_diverse_as_a_uniform_shuffle(multichunk):
    from protstore.batching.loader import _uniform_distinct

    store, plan = multichunk
    reader = store.protein_readers(plan.proteins[0])["R"]
    assert 160 / reader.chunk >= 5  # every protein spans several chunks
    loader = BatchLoader(store, plan, LoaderConfig(batch_size=8, seed=3, buffer_bytes=150_000))
    assert loader.slots[0] < 0.5 * loader._layout(0, 0).unit_pages[-1]  # data > 2x the pool
    for epoch in range(3):
        ((got, uniform, *_),) = loader.protein_diversity(epoch).values()
        assert got >= 0.9 * uniform, (epoch, got, uniform)
        # runs: distinct (protein, temperature) per batch against a uniform shuffle
        runs, counts = [], {}
        for batch in loader.epoch(epoch):
            key = list(zip(batch["protein_index"].tolist(), batch["temperature"].tolist()))
            runs.append(len(set(key)))
            for k in key:
                counts[k] = counts.get(k, 0) + 1
        expect = _uniform_distinct(np.array(list(counts.values())), 8)
        assert np.mean(runs) >= 0.9 * expect, (np.mean(runs), expect)


def test_bead_budgets_size_each_bucket_and_weigh_beads_alike(demo_store, plan):
    loader = BatchLoader(demo_store, plan, LoaderConfig(batch_beads=200, last="drop"))
    sizes = {k: loader.batch_size(k) for k in range(len(plan.buckets))}
    assert sizes == {k: max(1, 200 // b.n_max) for k, b in enumerate(plan.buckets)}
    assert loader.shapes() == {k: (sizes[k], b.n_max) for k, b in enumerate(plan.buckets)}
    padded = []
    for batch in loader.epoch(0):
        k = batch["bucket"]
        assert batch["R"].shape == (sizes[k], plan.buckets[k].n_max, 3)
        padded.append(batch["R"].shape[0] * batch["R"].shape[1])
    # every step holds the same number of bead slots up to the rounding of 200 // N_max
    assert max(padded) <= 200 and min(padded) > 200 - max(b.n_max for b in plan.buckets)


def test_frame_split_holds_out_blocks_of_runs_and_reports_leakage(multichunk):
    from protstore.batching import plan_from_store

    store, _ = multichunk
    doc = store.protein_doc(store.proteins[0])
    assert [(r["temperature"], r["replica"], r["n_frames"]) for r in doc["runs"]] == \
        [(320.0, 0, 40), (320.0, 1, 40), (348.0, 0, 40), (348.0, 1, 40)]
    plan = plan_from_store(store, name="blocks", split="frame", val_fraction=0.25,
                           block_frames=20)
    assert plan.split.runs[store.proteins[0]] == [40, 40, 40, 40]
    assert plan.split.val_leakage <= 0.1  # 2 of 20 frames per block at most
    assert "next to a training frame" in plan.table()
    for pid in plan.proteins:
        val = plan.split.frames(pid, 160, "val")
        assert len(val) == 40
        # held out in whole blocks inside runs: no block crosses a run boundary
        starts = val[np.flatnonzero(np.diff(np.r_[-2, val]) != 1)]
        assert all((s % 40) % 20 == 0 for s in starts)
    single = make_plan(plan.lengths, plan.frames, split="frame", val_fraction=0.25,
                       runs=plan.split.runs, block_frames=1)
    assert single.split.val_leakage > 0.5  # single frames: most have a training neighbour
    save_plan(protstore.open_store(store.url, mode="r+"), plan)
    assert protstore.open_store(store.url).plan("blocks") == plan


@pytest.mark.parametrize("last", ["drop", "pad"])
def test_process_shares_together_are_the_single_process_epoch(multichunk, last):
    store, plan = multichunk
    base = dict(batch_size=6, seed=4, last=last, buffer_bytes=1 << 20)
    whole = list(BatchLoader(store, plan, LoaderConfig(**base)).epoch(1))
    shares = [list(BatchLoader(store, plan, LoaderConfig(**base, process_index=i,
                                                         process_count=3)).epoch(1))
              for i in range(3)]
    assert [len(s) for s in shares] == [len(whole)] * 3  # steps stay aligned
    for step, batch in enumerate(whole):
        parts = [s[step] for s in shares]
        assert {p["bucket"] for p in parts} == {batch["bucket"]}
        assert all(len(p["sample_mask"]) == 2 for p in parts)  # the global batch split in 3
        for key in ("R", "F", "mask", "species", "resid", "chain", "protein_index", "frame",
                    "temperature", "sample_mask"):
            assert np.array_equal(np.concatenate([p[key] for p in parts]), batch[key]), key
    with pytest.raises(protstore.errors.ProtstoreError, match="does not split over 4"):
        BatchLoader(store, plan, LoaderConfig(batch_size=6, process_index=0, process_count=4))


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    """8 proteins of 3 to 8 beads in one bucket, 80 frames each in 1 KiB chunks: padded rows
    of every width, 3 to 8 chunks per protein; with each protein's data as loaded."""
    from helpers import write_mdcath

    tmp = tmp_path_factory.mktemp("varied")
    protstore.store.create_store(tmp / "s.zarr", protstore.Encoding(chunk_bytes=1024))
    store = protstore.open_store(tmp / "s.zarr", mode="a")
    names = ("MET", "HSD", "ALA", "GLY", "LYS", "SER", "THR", "VAL")
    files = []
    for i in range(8):
        write_mdcath(tmp / f"p{i}.h5", domain=f"p{i}", resnames=names[:3 + i % 6],
                     frames=40, seed=i, runs=((320, 0), (348, 0)))
        files.append(tmp / f"p{i}.h5")
    ingest(files, store, progress=False, log=lambda m: None)
    plan = make_plan(store.lengths().to_dict(), store.summary()["n_frames"].to_dict(),
                     n_buckets=1, split="none")
    ref = {i: store.protein(pid).load() for i, pid in enumerate(plan.proteins)}
    return store, plan, ref


def _check_batch(batch, ref):
    """Every sample of a batch holds its protein's frame, and the pad values past its beads."""
    for i, (p, f) in enumerate(zip(batch["protein_index"], batch["frame"])):
        ds = ref[int(p)]
        n = ds.sizes["atom"]
        np.testing.assert_array_equal(batch["R"][i, :n], ds.R.values[f])
        np.testing.assert_array_equal(batch["F"][i, :n], ds.F.values[f])
        assert (batch["R"][i, n:] == 0).all() and (batch["F"][i, n:] == 0).all()
        np.testing.assert_array_equal(batch["species"][i, :n], ds.species.values)
        assert (batch["species"][i, n:] == PAD_ID).all()
        assert (batch["mask"][i, :n] == 1).all() and (batch["mask"][i, n:] == 0).all()
        assert batch["temperature"][i] == ds.temperature.values[f]


def test_batches_own_their_memory_while_pool_pages_are_reused(varied):
    """Pool pages are given back and refilled within an epoch: every batch holds its samples'
    data and pad values (a refilled page held a longer protein before), batches kept by the
    consumer never change, and none is a view of the pool."""
    store, plan, ref = varied
    loader = BatchLoader(store, plan, LoaderConfig(batch_size=4, seed=4, buffer_bytes=60_000,
                                                   prefetch=1))
    pages = int(loader._layout(0, 0).unit_pages[-1])
    held = []
    for epoch in range(3):
        for step, batch in enumerate(loader.epoch(epoch)):
            _check_batch(batch, ref)
            assert all(v.base is None or v.base.size == v.size for k, v in batch.items()
                       if isinstance(v, np.ndarray)), "a batch must own its arrays"
            if step % 25 == 0:
                held.append((batch, {k: np.copy(v) for k, v in batch.items()}))
    assert loader.peak_pages[0] <= loader.slots[0] < pages / 2  # pages were reused
    for batch, copy in held:
        for key, value in copy.items():
            np.testing.assert_array_equal(batch[key], value, err_msg=key)


def test_a_unit_still_being_read_is_waited_for_when_an_epoch_ends_early(varied, monkeypatch):
    """An epoch left after one batch has reads in flight into its pool: the next epoch takes
    the pool only once they are done, so they cannot overwrite its pages."""
    import threading
    import time

    from protstore.batching import loader as loader_module

    store, plan, ref = varied
    read, calls, late_done = loader_module._read_unit, [], threading.Event()

    def slow_read(*args):
        calls.append(1)
        if len(calls) == 3:  # a unit read ahead lands late
            time.sleep(0.5)
            read(*args)
            late_done.set()
        else:
            read(*args)

    monkeypatch.setattr(loader_module, "_read_unit", slow_read)
    loader = BatchLoader(store, plan, LoaderConfig(batch_size=4, seed=4, buffer_bytes=100_000,
                                                   read_threads=2, prefetch=0))
    epoch = loader.epoch(0)
    next(epoch)
    epoch.close()
    assert late_done.is_set()  # close waited for it
    for batch in loader.epoch(1):
        _check_batch(batch, ref)


def test_a_store_path_with_braces(tmp_path):
    from protstore.store.chunks import ChunkReader, Scratch

    (tmp_path / "run{1}").mkdir()
    group, R = _small_chunk_protein(tmp_path / "run{1}")
    reader = ChunkReader(group["R"])
    assert reader.direct is not None
    np.testing.assert_array_equal(reader.read_all(), R)
    np.testing.assert_array_equal(reader.read(0, Scratch()), R[:reader.chunk])


def test_a_chunk_of_the_wrong_size_is_an_error_with_scratch_too(tmp_path):
    from protstore.errors import ChunkError
    from protstore.store.chunks import ChunkReader, Scratch, _with_crc32c

    group, R = _small_chunk_protein(tmp_path)
    reader = ChunkReader(group["R"])
    layout = reader.direct
    half = np.ascontiguousarray(R[:reader.chunk // 2].transpose(layout.order))
    Path(layout.path(0)).write_bytes(_with_crc32c(layout.compressor.encode(half)))
    for scratch in (None, Scratch()):
        with pytest.raises(ChunkError, match="chunk 0: corrupt chunk"):
            reader.read(0, scratch)


def test_bead_weighting_makes_every_bead_of_an_epoch_weigh_the_same(demo_store, plan):
    """The default loss weighting: a step's loss is its squared errors over the epoch's mean
    real beads per step, so the epoch's summed losses are its pooled MSE over real beads (a
    bead of a short protein weighs what a bead of a long one does)."""
    import jax.numpy as jnp

    from protstore.train.step import force_loss

    loader = BatchLoader(demo_store, plan, LoaderConfig(batch_size=4, last="pad"))
    real = [int((b["mask"].astype(bool) & b["sample_mask"].astype(bool)[:, None]).sum())
            for b in loader.epoch(0)]
    assert loader.real_beads_per_step(0) == pytest.approx(np.mean(real))
    assert len(set(real)) > 2  # batches of very different sizes
    # an "energy" whose forces are zero: the squared error is |F_ref|^2
    zero = lambda params, R, species, mask, topo: jnp.sum(R * 0.0)  # noqa: E731
    bead, frame = force_loss(zero, loader.real_beads_per_step(0)), force_loss(zero)
    batches = list(loader.epoch(0))
    sq = [float(frame(None, b)[1][0]) for b in batches]
    pooled = sum(sq) / (3 * sum(real))
    assert np.mean([float(bead(None, b)[0]) for b in batches]) == pytest.approx(pooled, rel=1e-5)
    assert np.mean([float(frame(None, b)[0]) for b in batches]) != pytest.approx(pooled, rel=1e-2)
