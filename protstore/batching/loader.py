"""A fast, seeded, resumable batch loader with static shapes per bucket (for JAX).

How an epoch is laid out (all from metadata, before any data is read):

1. Each bucket's samples are grouped into *units*: the split's frames of one protein that lie in
   one Zarr chunk, so a unit is read with one chunk read.
2. Units are shuffled over the whole bucket, then taken W at a time as *windows* (W =
   ``buffer_chunks``, by default the bucket's batch size and at least 16). Within a
   window each unit's frames are shuffled and the units are *interleaved in proportion*: the
   j-th of a unit's n samples gets the key (j + u)/n, u uniform in [0, 1), and the window is
   ordered by key. So consecutive samples come from different chunks, in proportion to their
   sizes, and a batch holds about as many distinct proteins (and runs) as a uniform shuffle of
   the bucket would give (``protein_diversity``; ``benchmarks/bench_batching.py`` measures it),
   while every chunk is still decoded once per epoch. Every sample appears exactly once.
3. A bucket's sample sequence is cut into batches: ``batch_size`` samples, or with
   ``batch_beads`` ``max(1, batch_beads // N_max)`` samples of that bucket, so every step costs
   about the same and each real bead weighs about the same in the loss whatever its bucket;
   the last partial batch is dropped or padded with masked samples (``last``), never silently
   short.
4. Batches of all buckets are ordered ``sequential`` (bucket 0, then 1, ...) or ``interleaved``
   (a seeded shuffle of all batches, so buckets mix in proportion to their frame counts).

Every random choice comes from ``numpy.random.default_rng([seed, epoch, ...])``, so
``loader.epoch(e, start_step=s)`` yields exactly the batches an uninterrupted epoch yields from
step s on, reading only the windows it needs.

How it reads: a window is read into buffers holding every field of its samples, one task per
(protein, chunk, R|F) on a pool of read threads (file reads, the CRC32C, Blosc and the strided
gather all release the GIL), each decoding into the thread's reused scratch buffers. A batch
within one window is a view of its buffers; a window's buffers are reused by a later window
once no batch views them (:func:`_unreferenced`), since fresh buffers of tens of MiB cost page
faults for every window. The window after a batch's last one is read while the batch is
served, and a background thread assembles batches ahead of the consumer (``prefetch``).

Memory: per bucket, the windows the current batch spans and the one after (three at most
with the default W, whose windows hold at least a batch) and three released ones kept for
reuse (an epoch's end releases three, the next epoch's start takes them): 6 windows of W
chunks, each about W x 3.3 MiB x N_max/N (R and F, 24
bytes per bead, and the per-bead fields, 16); and the small arrays of the proteins it opened
(``open_proteins`` at most, opened when a window first needs them): memory does not grow with
the number of proteins in the store.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..errors import ProtstoreError
from ..prefetch import prefetch
from ..store import Store
from ..store.chunks import ChunkReader, Scratch
from .plan import BucketPlan, check_plan
from .sample import BEAD_FIELDS, FIELDS, padded_topology

ORDERS = ("interleaved", "sequential")
# released windows' buffers kept per bucket for reuse (_buffers)
SPARE_WINDOWS = 3


@dataclass(frozen=True)
class LoaderConfig:
    """How batches are made (config as data)."""

    batch_size: int = 32
    batch_beads: int | None = None  # instead of batch_size: max(1, batch_beads // N_max) a bucket
    order: str = "interleaved"
    split: str = "train"
    seed: int = 0
    shuffle: bool = True
    last: str = "drop"  # or "pad": fill the last batch of a bucket with masked samples
    buffer_chunks: int = 0  # units (chunks) per window; 0: max(16, the bucket's batch size)
    prefetch: int = 4
    # chunk reads and decodes in flight (they release the GIL); None: 4 on a local disk, 32 on
    # object storage, where a request waits milliseconds for its first byte
    read_threads: int | None = None
    buckets: tuple[int, ...] | None = None  # only these buckets (None: all)
    open_proteins: int = 512  # opened proteins kept (their readers and per-bead arrays)
    # multi-process training: this process's share of every global batch (None: JAX's
    # process index and count when JAX is in use, else 0 and 1)
    process_index: int | None = None
    process_count: int | None = None


def bucket_batch_size(config: LoaderConfig, n_max: int) -> int:
    """Samples per batch of a bucket padded to ``n_max`` beads: ``config.batch_size``, or
    ``max(1, config.batch_beads // n_max)``."""
    if config.batch_beads is None:
        return config.batch_size
    return max(1, config.batch_beads // n_max)


class _Protein(NamedTuple):
    """One protein's arrays: R, F (whole-chunk readers), per-frame temperature, and per-bead
    arrays padded to its bucket's N_max."""

    R: ChunkReader
    F: ChunkReader
    temperature: np.ndarray
    species: np.ndarray
    resid: np.ndarray
    chain: np.ndarray
    mask: np.ndarray
    n: int


@dataclass(frozen=True)
class _Layout:
    """One bucket's epoch layout: sample sequence and its windows."""

    protein: np.ndarray  # [S] protein index into plan.proteins
    frame: np.ndarray  # [S] frame index in the protein's group
    window_start: np.ndarray  # [W + 1] sequence offsets of windows
    n_batches: int
    bucket: int
    # per batch: (lo, hi, w_lo, w_hi) of this process's share (BatchLoader._ranges)
    ranges: list[tuple[int, int, int, int]] | None = None
    starts: list[int] | None = None  # window_start as Python ints


class BatchLoader:
    """Batches of one plan's split as dicts of NumPy arrays with static shapes per bucket.

    Keys: the fields of :mod:`protstore.batching.sample` with a leading batch axis B (``R``,
    ``F`` [B, N_max, 3]; ``mask``, ``species``, ``resid``, ``chain`` [B, N_max];
    ``protein_index``, ``frame``, ``temperature``, ``sample_mask`` [B]), plus the ints
    ``bucket``, ``epoch`` and ``step``.
    """

    def __init__(self, store: Store, plan: BucketPlan, config: LoaderConfig = LoaderConfig()):
        if config.order not in ORDERS:
            raise ProtstoreError(f"order must be one of {ORDERS}, not {config.order!r}")
        if config.last not in ("drop", "pad"):
            raise ProtstoreError(f"last must be 'drop' or 'pad', not {config.last!r}")
        if config.batch_size < 1:
            raise ProtstoreError(f"batch size must be >= 1, not {config.batch_size}")
        if config.batch_beads is not None and config.batch_beads < 1:
            raise ProtstoreError(f"batch_beads must be >= 1, not {config.batch_beads}")
        if config.buffer_chunks < 0:
            raise ProtstoreError(f"buffer_chunks must be >= 0, not {config.buffer_chunks}")
        if config.read_threads is not None and config.read_threads < 1:
            raise ProtstoreError(f"read_threads must be >= 1, not {config.read_threads}")
        self.process_index, self.process_count = _processes(config)
        check_plan(store, plan)
        self.store, self.plan, self.config = store, plan, config
        self.proteins = plan.proteins
        self._index = {p: i for i, p in enumerate(self.proteins)}
        self.n_max = [b.n_max for b in plan.buckets]
        self._bucket_of = {p: b.index for b in plan.buckets for p in b.proteins}
        # proteins opened (or being opened, on the read pool), least recently used first; at
        # most ``open_proteins`` beyond those of the windows in use
        self._opened: OrderedDict[int, Future] = OrderedDict()
        self._layouts: dict[tuple[int, int], _Layout] = {}  # (bucket, epoch), current epoch only
        self._pool: ThreadPoolExecutor | None = None  # started on the first read
        self._spare: dict[int, list[_Window]] = {}  # released windows per bucket (_buffers)
        self._spare_lock = threading.Lock()
        self._units = [self._bucket_units(b.index) for b in plan.buckets]
        # rows of a window's buffers: its W largest units fit any window of any epoch
        self._capacity = [sum(sorted(len(f) for _, f in units)[-self.window_units(k):])
                          for k, units in enumerate(self._units)]
        for k in range(len(plan.buckets)):
            if self.batch_size(k) % self.process_count:
                raise ProtstoreError(
                    f"the global batch of bucket {k} ({self.batch_size(k)} samples) does not "
                    f"split over {self.process_count} processes: choose a batch size (or "
                    f"batch_beads // N_max) that is a multiple of the process count")

    # ------------------------------------------------------------------ layout (metadata only)
    def _chunk(self, pid: str) -> int:
        return self.store.encoding.frames_per_chunk(self.plan.lengths[pid])

    def _bucket_units(self, k: int) -> list[tuple[int, np.ndarray]]:
        units = []
        for pid in self.plan.buckets[k].proteins:
            frames = self.plan.part_frames(pid, self.config.split)
            if not len(frames):
                continue
            chunk_of = frames // self._chunk(pid)
            for c in np.unique(chunk_of):
                units.append((self._index[pid], frames[chunk_of == c]))
        return units

    def _layout(self, k: int, epoch: int) -> _Layout:
        if (k, epoch) not in self._layouts:
            self._layouts = {key: v for key, v in self._layouts.items() if key[1] == epoch}
            lay = self._make_layout(k, epoch)
            self._layouts[(k, epoch)] = dataclasses.replace(
                lay, ranges=self._ranges(lay), starts=lay.window_start.tolist())
        return self._layouts[(k, epoch)]

    def _ranges(self, lay: _Layout) -> list[tuple[int, int, int, int]]:
        """For every batch j of a layout: the sample range [lo, hi) of this process's share of
        it and the windows [w_lo, w_hi) holding it."""
        B, b = self.batch_size(lay.bucket), self.local_batch_size(lay.bucket)
        S = len(lay.protein)
        lo = np.minimum(np.arange(lay.n_batches) * B + self.process_index * b, S)
        hi = np.minimum(lo + b, S)
        w_lo = np.searchsorted(lay.window_start, lo, side="right") - 1
        w_hi = np.searchsorted(lay.window_start, hi, side="left")
        return [tuple(r) for r in np.stack([lo, hi, w_lo, w_hi], axis=1).tolist()]

    def batch_size(self, k: int) -> int:
        """Samples per global batch of bucket k (:func:`bucket_batch_size`), all processes."""
        return bucket_batch_size(self.config, self.n_max[k])

    def local_batch_size(self, k: int) -> int:
        """Samples per batch of bucket k that this process yields (its share of the global
        batch: ``batch_size(k) // process_count``)."""
        return self.batch_size(k) // self.process_count

    def window_units(self, k: int) -> int:
        """Units (chunks) per window of bucket k."""
        return self.config.buffer_chunks or max(16, self.batch_size(k))

    def _make_layout(self, k: int, epoch: int) -> _Layout:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, epoch, k])
        units = self._units[k]
        W = self.window_units(k)
        order = rng.permutation(len(units)) if cfg.shuffle else np.arange(len(units))
        prot, frame, starts = [], [], [0]
        for w in range(0, len(order), W):
            chosen = [units[u] for u in order[w:w + W]]
            sizes = np.array([len(f) for _, f in chosen])
            p = np.repeat(np.array([i for i, _ in chosen], np.int32), sizes)
            f = np.concatenate([fr for _, fr in chosen]).astype(np.int32)
            if cfg.shuffle:
                perm = _interleaved(sizes, rng)
                p, f = p[perm], f[perm]
            prot.append(p)
            frame.append(f)
            starts.append(starts[-1] + len(p))
        S, B = starts[-1], self.batch_size(k)
        n_batches = S // B if cfg.last == "drop" else -(-S // B)
        empty = np.zeros(0, np.int32)
        return _Layout(np.concatenate(prot) if prot else empty,
                       np.concatenate(frame) if frame else empty, np.array(starts), n_batches,
                       k)

    def schedule(self, epoch: int) -> list[tuple[int, int]]:
        """(bucket, batch number within the bucket) for every step of ``epoch``."""
        chosen = self.config.buckets
        counts = [self._layout(k, epoch).n_batches if chosen is None or k in chosen else 0
                  for k in range(len(self.plan.buckets))]
        steps = [(k, i) for k, n in enumerate(counts) for i in range(n)]
        if self.config.order == "interleaved":
            perm = np.random.default_rng([self.config.seed, epoch, 1 << 30]).permutation(len(steps))
            # keep each bucket's batches in their own order; only the bucket sequence is mixed
            labels = np.array([k for k, _ in steps], dtype=np.int64)[perm]
            seen = [0] * len(counts)
            steps = []
            for k in labels.tolist():
                steps.append((k, seen[k]))
                seen[k] += 1
        return steps

    def steps_per_epoch(self, epoch: int = 0) -> int:
        return len(self.schedule(epoch))

    def real_beads_per_step(self, epoch: int = 0) -> float:
        """Real beads per global batch, averaged over the steps of ``epoch`` (from the layout
        alone; reads no data); 0.0 when the epoch has no steps."""
        lengths = np.array([self.plan.lengths[p] for p in self.proteins], np.int64)
        total = 0
        for k, i in self.schedule(epoch):
            lay, B = self._layout(k, epoch), self.batch_size(k)
            total += int(lengths[lay.protein[i * B:(i + 1) * B]].sum())
        steps = self.steps_per_epoch(epoch)
        return total / steps if steps else 0.0

    def shapes(self) -> dict[int, tuple[int, int]]:
        """Static (batch, N_max) per bucket of the batches this process yields: one
        compilation each."""
        return {k: (self.local_batch_size(k), n) for k, n in enumerate(self.n_max)}

    def protein_diversity(self, epoch: int = 0) -> dict[int, tuple[float, float]]:
        """Per bucket: (mean distinct proteins per full batch of ``epoch``, its expectation under
        a uniform shuffle of the bucket's samples). From the layout alone (reads no data)."""
        out = {}
        for k in range(len(self.plan.buckets)):
            lay, B = self._layout(k, epoch), self.batch_size(k)
            full = (len(lay.protein) // B) * B
            if not full:
                continue
            batches = np.sort(lay.protein[:full].reshape(-1, B), axis=1)
            distinct = (np.diff(batches, axis=1) != 0).sum(axis=1) + 1
            counts = np.bincount(lay.protein)
            out[k] = (float(distinct.mean()), _uniform_distinct(counts[counts > 0], B))
        return out

    # ------------------------------------------------------------------ reading
    def _read_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            threads = self.config.read_threads or (4 if self.store.local else 32)
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="protstore-read")
        return self._pool

    def _open(self, ids) -> dict[int, Future]:
        """Futures of the opened proteins ``ids``, opening those not yet open on the read pool
        (all at once: on object storage each is a request); the least recently used beyond
        ``open_proteins`` are let go."""
        out = {}
        for i in ids:
            i = int(i)
            if i in self._opened:
                self._opened.move_to_end(i)
            else:
                self._opened[i] = self._read_pool().submit(self._open_protein, i)
            out[i] = self._opened[i]
        while len(self._opened) > max(self.config.open_proteins, len(out)):
            self._opened.popitem(last=False)
        return out

    def _open_protein(self, i: int) -> _Protein:
        """Read protein i's small arrays (per bead, per frame) and make its chunk readers."""
        pid = self.proteins[i]
        readers = self.store.protein_readers(pid)
        n_max = self.n_max[self._bucket_of[pid]]
        n = self.plan.lengths[pid]
        topology = padded_topology(readers, n, n_max)
        temperature = readers["temperature"].read_all().astype(np.float32, copy=False)
        return _Protein(readers["R"], readers["F"], temperature, n=n, **topology)

    def _read_window(self, k: int, lay: _Layout, w: int) -> _Window:
        """Start reading window ``w`` into its buffers (:meth:`_buffers`): one task per
        (protein, chunk, R|F) on the read pool, each gathering its samples' frames straight
        into R and F, and one taking the per-bead and per-sample fields of all its samples
        from a small table of its proteins'."""
        lo, hi = lay.starts[w], lay.starts[w + 1]
        prot, frame = lay.protein[lo:hi], lay.frame[lo:hi]
        mine = np.ones(hi - lo, bool)
        if self.process_count > 1:  # only the samples of this process's share of each batch
            B = self.batch_size(k)
            mine = (np.arange(lo, hi) % B) // (B // self.process_count) == self.process_index
        opened = self._open(np.unique(prot[mine]))
        window = _Window(self._buffers(k))
        tasks = []
        for i, opening in opened.items():
            protein = opening.result()
            rows = np.flatnonzero((prot == i) & mine)
            chunk_of = frame[rows] // protein.R.chunk
            for c in np.unique(chunk_of):
                sel = rows[chunk_of == c]
                offset = frame[sel] - c * protein.R.chunk
                for key in ("R", "F"):
                    tasks.append(self._read_pool().submit(
                        _gather, getattr(protein, key), int(c), offset, window.arrays[key], sel,
                        protein.n))
        table, slot, temperature = self._sample_fields(prot, frame, mine, opened)
        tasks.append(self._read_pool().submit(_fill_fields, window.arrays, table, slot,
                                              temperature, prot, frame))
        window.tasks = tasks
        return window

    def _buffers(self, k: int) -> dict[str, np.ndarray]:
        """A window's buffers for bucket k (every field of :data:`.sample.FIELDS`, ``capacity``
        rows: R, F [capacity, N_max, 3], ...): a released window's whose read tasks are done and
        that nothing refers to any more (:func:`_unreferenced`), else new ones. Fresh buffers of
        tens of MiB cost the kernel mapping and zeroing their pages, for every window."""
        with self._spare_lock:
            spare = self._spare.setdefault(k, [])
            for j, window in enumerate(spare):
                if window.done() and _unreferenced(window.arrays):
                    return spare.pop(j).arrays
        capacity = self._capacity[k]
        return {key: np.empty(FIELDS[key].shape((capacity, self.n_max[k]) if key in BEAD_FIELDS
                                                else (capacity,)), FIELDS[key].dtype)
                for key in FIELDS}

    def _release(self, k: int, window: _Window) -> None:
        """Keep a window's buffers for reuse once its batches and read tasks let go of them
        (the ``SPARE_WINDOWS`` most recent of a bucket)."""
        with self._spare_lock:
            spare = self._spare.setdefault(k, [])
            spare.append(window)
            del spare[:-SPARE_WINDOWS]

    def _batches(self, epoch: int, start_step: int) -> Iterator[dict]:
        schedule = self.schedule(epoch)[start_step:]
        caches: dict[int, dict[int, _Window]] = {}
        try:
            for n, (k, j) in enumerate(schedule):
                lay = self._layout(k, epoch)
                cache = caches.setdefault(k, {})
                lo, hi, w_lo, w_hi = lay.ranges[j]
                for w in list(cache):
                    if w < w_lo:  # windows are consumed in order: reuse the finished ones
                        self._release(k, cache.pop(w))
                # the window after this batch's last one is read ahead, on the read pool
                for w in range(w_lo, min(w_hi + 1, len(lay.starts) - 1)):
                    if w not in cache:
                        cache[w] = self._read_window(k, lay, w)
                pieces = [(cache[w].result(), max(lo, lay.starts[w]) - lay.starts[w],
                           min(hi, lay.starts[w + 1]) - lay.starts[w])
                          for w in range(w_lo, w_hi)]
                yield self._batch(k, hi - lo, pieces, epoch, start_step + n)
        finally:
            for k, cache in caches.items():
                for window in cache.values():
                    self._release(k, window)

    def _batch(self, k: int, size: int, pieces: list[tuple[_Window, int, int]], epoch: int,
               step: int) -> dict:
        """A batch of ``size`` samples of bucket k, rows [a, b) of each window in ``pieces``:
        views of the window's buffers when the batch lies in one."""
        if len(pieces) == 1:
            window, a, b = pieces[0]
            batch = {key: window.arrays[key][a:b] for key in FIELDS}
        elif pieces:
            batch = {key: np.concatenate([window.arrays[key][a:b] for window, a, b in pieces])
                     for key in FIELDS}
        else:
            batch = {key: FIELDS[key].fill((0, self.n_max[k]) if key in BEAD_FIELDS else (0,))
                     for key in FIELDS}
        if size < self.local_batch_size(k):  # only with last="pad"
            batch = _pad_batch(batch, self.local_batch_size(k))
        batch.update(bucket=k, epoch=epoch, step=step)
        return batch

    def _sample_fields(self, prot: np.ndarray, frame: np.ndarray, mine: np.ndarray,
                       opened: dict[int, Future]
                       ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """For a window's samples (protein ``prot``, frame ``frame``; only rows ``mine`` are
        set): the table of species, resid, chain, mask [P, N_max] of its P proteins, each
        sample's row in it [W] and each sample's temperature [W]."""
        slot = np.zeros(len(prot), np.intp)
        temperature = np.zeros(len(prot), np.float32)
        rows = np.flatnonzero(mine)
        ids, inverse = np.unique(prot[rows], return_inverse=True)
        proteins = [opened[int(i)].result() for i in ids]
        table = {key: np.stack([getattr(p, key) for p in proteins]) if proteins else None
                 for key in ("species", "resid", "chain", "mask")}
        if proteins:
            slot[rows] = inverse
            sizes = np.array([len(p.temperature) for p in proteins])
            flat = np.concatenate([p.temperature for p in proteins])
            temperature[rows] = flat[(np.cumsum(sizes) - sizes)[inverse] + frame[rows]]
        return table, slot, temperature

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[dict]:
        """The batches of ``epoch`` from ``start_step`` on, assembled in a background thread."""
        return prefetch(self._batches(epoch, start_step), self.config.prefetch,
                        name="protstore-loader")

    def __iter__(self) -> Iterator[dict]:
        return self.epoch(0)


class _Window:
    """A window being read: its buffers (every field of a sample; the first rows in use) and
    the read tasks filling them."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays
        self.tasks: list[Future] = []
        self.ready = False

    def done(self) -> bool:
        """Whether every read task has finished (a released window's may still run: one read
        ahead and never served)."""
        return all(task.done() for task in self.tasks)

    def result(self) -> _Window:
        """The window, once every read task is done (re-raises a task's error)."""
        if not self.ready:
            for task in self.tasks:
                task.result()
            self.ready = True
        return self


def _unreferenced(buffers: dict[str, np.ndarray]) -> bool:
    """Whether nothing but ``buffers`` refers to its arrays: every view of an array (a batch
    handed out, a slice of one, a read task's target) holds a reference to it. numpy's
    ``ndarray.resize`` makes the same check. The count of an array held by a dict alone is
    measured the same way, not assumed: what a call adds differs between Python versions."""
    alone = max(sys.getrefcount(a) for a in {"": np.empty(0)}.values())
    return all(sys.getrefcount(a) <= alone for a in buffers.values())


def _processes(config: LoaderConfig) -> tuple[int, int]:
    """(index, count) of this process among those sharing every global batch."""
    index, count = config.process_index, config.process_count
    if index is None or count is None:
        jax = sys.modules.get("jax")  # a process that never imported JAX runs alone
        index = index if index is not None else (jax.process_index() if jax else 0)
        count = count if count is not None else (jax.process_count() if jax else 1)
    if count < 1 or not 0 <= index < count:
        raise ProtstoreError(f"process_index {index} is not in 0..{count - 1} "
                             f"(process_count {count})")
    return int(index), int(count)


def _interleaved(sizes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation of a window's samples (units of ``sizes`` samples, in order): each unit's
    samples shuffled, then all units interleaved in proportion to their sizes (module
    docstring, step 2)."""
    unit = np.repeat(np.arange(len(sizes)), sizes)
    within = np.lexsort((rng.random(len(unit)), unit))  # each unit's samples, shuffled
    rank = np.arange(len(unit)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    key = (rank + rng.random(len(unit))) / sizes[unit]
    return within[np.argsort(key, kind="stable")]


def _uniform_distinct(counts: np.ndarray, B: int) -> float:
    """Expected distinct proteins in B samples drawn without replacement from a bucket whose
    proteins hold ``counts`` samples: sum over proteins of 1 - C(S - n, B) / C(S, B)."""
    from math import lgamma

    S = int(counts.sum())
    if B >= S:
        return float(len(counts))
    log_total = lgamma(S + 1) - lgamma(B + 1) - lgamma(S - B + 1)
    missing = 0.0
    for n in counts.tolist():
        if S - n >= B:
            missing += np.exp(lgamma(S - n + 1) - lgamma(B + 1) - lgamma(S - n - B + 1)
                              - log_total)
    return float(len(counts) - missing)


def _gather(reader: ChunkReader, c: int, offset: np.ndarray, out: np.ndarray, rows: np.ndarray,
            n: int) -> None:
    """out[rows, :n] = frames ``offset`` of chunk ``c`` (one decode into the thread's scratch
    buffers, one strided copy), and the rows' padding beads (a reused buffer holds an earlier
    window's values there)."""
    scratch = getattr(_thread, "scratch", None)
    if scratch is None:
        scratch = _thread.scratch = Scratch()
    out[rows, :n] = reader.read(c, scratch)[offset]
    if n < out.shape[1]:
        out[rows, n:] = 0.0  # the pad value of R and F


def _fill_fields(arrays: dict[str, np.ndarray], table: dict[str, np.ndarray], slot: np.ndarray,
                 temperature: np.ndarray, protein: np.ndarray, frame: np.ndarray) -> None:
    """A window's per-bead fields from its proteins' ``table`` (each sample's row: ``slot``)
    and its per-sample fields."""
    n = len(slot)
    for key, rows in table.items():
        if rows is not None:
            np.take(rows, slot, axis=0, out=arrays[key][:n])
    arrays["temperature"][:n] = temperature
    arrays["protein_index"][:n] = protein
    arrays["frame"][:n] = frame
    arrays["sample_mask"][:n] = 1.0


_thread = threading.local()  # the read threads' Scratch


def _pad_batch(batch: dict, B: int) -> dict:
    """Fill a short batch up to B samples with padded samples (:data:`FIELDS` pad values)."""
    n = len(batch["sample_mask"])
    out = {}
    for key, value in batch.items():
        pad = np.full((B - n,) + value.shape[1:], FIELDS[key].pad, dtype=value.dtype)
        out[key] = np.concatenate([value, pad])
    return out
