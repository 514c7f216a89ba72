"""A fast, seeded, resumable batch loader with static shapes per bucket (for JAX), whose order
mixes proteins like a uniform shuffle while its decoded data stays within ``buffer_bytes``.

How an epoch is laid out (all from metadata, before any data is read):

1. Each bucket's samples are grouped into *units*: the split's frames of one protein that lie in
   one Zarr chunk, so a unit is read with one chunk read (each chunk is decoded once per epoch).
   A unit's frames, in the order they will be served, are cut into *pages* of ``page_rows``
   frames (about ``PAGES_PER_UNIT`` pages a unit).
2. A *block-level shuffle buffer*: each bucket holds a *pool* of pages in one preallocated
   array (its *slab*, as many pages as its share of ``buffer_bytes`` allows). Units enter the
   pool in a shuffled order, each as soon as enough pages are free. A unit entering at time
   a gets, for each of its frames (shuffled), an independent time a + u, u uniform in [0, 1),
   and its frames are served in time order: every resident unit is served at a rate in
   proportion to its size, all resident units at once, and a page leaves the pool when its
   last frame has been served, making room for the next unit. All frames of the bucket sorted
   by time are the bucket's sample sequence. Over the epoch, the pool holds a near-uniform
   sample of the bucket's units (a quarter of them when the data is four times the budget),
   so a batch holds about as many distinct proteins as a uniform shuffle would, and so do 100
   consecutive batches as long as most proteins have a unit in the pool (each protein spanning
   several chunks). When the bucket fits in its share, every unit enters at time 0 and the
   order is a uniform shuffle of the bucket. ``protein_diversity`` reports both figures
   against a uniform shuffle's expectation; ``benchmarks/bench_stream.py`` measures them.
   Every sample appears exactly once.
3. A bucket's sample sequence is cut into batches: ``batch_size`` samples, or with
   ``batch_beads`` ``max(1, batch_beads // N_max)`` samples of that bucket, so every step costs
   about the same and each real bead weighs about the same in the loss whatever its bucket;
   the last partial batch is dropped or padded with masked samples (``last``), never silently
   short. With ``packing``, a batch's ``B`` samples are *bins* of ``N_max`` beads, each holding
   as many whole frames as fit: the sequence is packed first-fit in its own order, a frame that
   fits no bin left open for the next batch, looking at most ``PACK_WINDOW`` frames ahead
   (so no frame moves far from its place in the sequence). A batch closes when no frame within
   the window fits; the last batch, with ``last="drop"``, is dropped if a bin stayed empty.
4. Batches of all buckets are ordered ``sequential`` (bucket 0, then 1, ...) or ``interleaved``
   (a seeded shuffle of all batches, so buckets mix in proportion to their frame counts).

Every random choice comes from ``numpy.random.default_rng([seed, epoch, ...])``, so
``loader.epoch(e, start_step=s)`` yields exactly the batches an uninterrupted epoch yields from
step s on, reading only the units (and of them only the pages) still needed at step s. The
order depends on the configuration too (batch size, ``buffer_bytes``, ``read_threads``,
``prefetch``, ``open_proteins``: they size the pools), as it does on the plan.

How it reads: a unit is read when a batch first needs it, or earlier (at most ``read_threads``
units ahead, into free pages), by two tasks (R and F) on a pool of read threads (file reads,
the CRC32C, Blosc and the strided gather all release the GIL), each decoding its chunk into the
thread's reused scratch buffers and copying its pages' frames into their slab pages. A batch
is gathered from the slab with one fancy index per field: a copy that the batch owns. A page
is given back after the batch holding its last frame is gathered; a background thread
assembles batches ahead of the consumer (``prefetch``).

Memory (``loader.memory()``, all of it counted against ``buffer_bytes``): the slabs (R and F
padded to N_max, their per-bead fields and temperatures), the read threads' scratch buffers
(two per thread, a chunk each), the batches in flight (``prefetch`` plus two) and the small
arrays of the proteins opened (``open_proteins`` at most). It does not grow with the number of
proteins in the store. An epoch started while another is still being read takes fresh slabs.
"""

from __future__ import annotations

import heapq
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..errors import ConfigError, ProtstoreError
from ..prefetch import prefetch
from ..store import Store
from ..store.chunks import ChunkReader, Scratch
from .plan import BucketPlan, check_plan
from .sample import BEAD_FIELDS, FIELDS, PER_BEAD_WHEN_PACKED, padded_topology

ORDERS = ("interleaved", "sequential")
LASTS = ("drop", "pad")
DEFAULT_BUFFER_BYTES = 2 << 30
PAGES_PER_UNIT = 8  # pages a unit (chunk) is cut into: a page is given back once served
PACK_WINDOW = 64  # frames a packed batch looks ahead for one that fits its bins
DIVERSITY_STEPS = 100  # consecutive batches of a bucket in protein_diversity's second figure
_TOPOLOGY_FIELDS = ("species", "resid", "chain", "mask", "segment")


@dataclass(frozen=True)
class LoaderConfig:
    """How batches are made (config as data).

    buffer_bytes : bound on the loader's decoded-data memory in bytes (``BatchLoader.memory``):
        the bucket pools, read buffers and batches in flight; the larger, the closer the order
        to a uniform shuffle when the data is larger than it (module docstring).
    packing : each of a batch's samples is a bin of ``N_max`` beads holding several whole
        frames (module docstring, step 3; the packed form of :mod:`protstore.batching.sample`):
        the same arrays carry more frames and less padding wherever a bucket's frames are
        shorter than half its ``N_max``. Only for models that take packed samples
        (``EnergyModel.packing``).
    """

    batch_size: int = 32
    batch_beads: int | None = None  # instead of batch_size: max(1, batch_beads // N_max) a bucket
    order: str = "interleaved"
    split: str = "train"
    seed: int = 0
    shuffle: bool = True
    last: str = "drop"  # or "pad": fill the last batch of a bucket with masked samples
    buffer_bytes: int = DEFAULT_BUFFER_BYTES
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
    packing: bool = False

    def __post_init__(self):
        if self.order not in ORDERS:
            raise ConfigError(f"order must be one of {ORDERS}, not {self.order!r}")
        if self.last not in LASTS:
            raise ConfigError(f"last must be one of {LASTS}, not {self.last!r}")
        for name in ("batch_size", "buffer_bytes", "open_proteins"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, not {getattr(self, name)}")
        for name in ("batch_beads", "read_threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.prefetch < 0:
            raise ConfigError(f"prefetch must be >= 0, not {self.prefetch}")


class Diversity(NamedTuple):
    """Distinct proteins in a bucket's batches against a uniform shuffle of its samples
    (:meth:`BatchLoader.protein_diversity`): per batch, and per ``steps`` consecutive batches."""

    batch: float  # mean distinct proteins per full batch
    batch_uniform: float  # its expectation under a uniform shuffle
    steps: float  # mean distinct proteins per `steps` consecutive batches
    steps_uniform: float
    n_steps: int  # consecutive batches in `steps` (DIVERSITY_STEPS, or the bucket's batches)

    @property
    def batch_ratio(self) -> float:
        return self.batch / self.batch_uniform

    @property
    def steps_ratio(self) -> float:
        return self.steps / self.steps_uniform


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
    segment: np.ndarray
    n: int


@dataclass(frozen=True)
class _Layout:
    """One bucket's epoch layout (metadata only): its sample sequence [S], where each sample
    lies in the pool (page, row), when each unit is first needed and each page given back.
    Units are numbered in the order they enter the pool, pages in unit order."""

    protein: np.ndarray  # [S] int32 protein index into plan.proteins
    frame: np.ndarray  # [S] int32 frame index in the protein's group
    page: np.ndarray  # [S] page holding the sample
    row: np.ndarray  # [S] its row in the page
    emitted: np.ndarray  # [S] every unit's frames in serving order, unit after unit
    unit_start: np.ndarray  # [U + 1] each unit's first entry in `emitted`
    unit_pages: np.ndarray  # [U + 1] each unit's first page
    unit_protein: np.ndarray  # [U] protein index
    unit_need: np.ndarray  # [U] first batch holding a sample of the unit (n_batches: none)
    read_order: np.ndarray  # [U] units by unit_need
    page_free: np.ndarray  # [P] the batch after which the page is given back
    n_batches: int
    bucket: int
    cuts: np.ndarray  # [n_batches + 1] each batch's first sample in the sequence (all processes)
    ranges: list[tuple[int, int]]  # per batch: [lo, hi) of this process's share
    # packed layouts only ([S], None otherwise): each sample's bin in its batch (0..B-1, in
    # ascending order within a batch), first bead in the bin, and segment (rank in the bin)
    bin: np.ndarray | None = None
    offset: np.ndarray | None = None
    segment: np.ndarray | None = None

    def peak_pages(self) -> int:
        """The most pages in the pool at any batch, each unit read when first needed (reading
        ahead uses free pages only)."""
        if not self.n_batches:
            return 0
        unit = np.repeat(np.arange(len(self.unit_need)), np.diff(self.unit_pages))
        start = self.unit_need[unit]
        used = start < self.n_batches
        diff = np.zeros(self.n_batches + 1, np.int64)
        np.add.at(diff, start[used], 1)
        np.add.at(diff, self.page_free[used] + 1, -1)
        return int(np.cumsum(diff)[:self.n_batches].max())


class _Pool:
    """A bucket's slab of ``slots`` pages of ``rows`` samples: R, F [slots, rows, N_max, 3],
    the per-bead fields [slots, N_max] (one protein a page), temperature [slots, rows]."""

    def __init__(self, slots: int, rows: int, n_max: int):
        self.R = np.empty((slots, rows, n_max, 3), FIELDS["R"].dtype)
        self.F = np.empty((slots, rows, n_max, 3), FIELDS["F"].dtype)
        self.topology = {key: np.empty((slots, n_max), FIELDS[key].dtype)
                         for key in _TOPOLOGY_FIELDS}
        self.temperature = np.empty((slots, rows), FIELDS["temperature"].dtype)


class BatchLoader:
    """Batches of one plan's split as dicts of NumPy arrays with static shapes per bucket.

    Keys: the fields of :mod:`protstore.batching.sample` with a leading batch axis B (``R``,
    ``F`` [B, N_max, 3]; ``mask``, ``species``, ``resid``, ``chain`` [B, N_max];
    ``protein_index``, ``frame``, ``temperature``, ``sample_mask`` [B]), plus the ints
    ``bucket``, ``epoch`` and ``step``. Every batch owns its arrays.
    """

    def __init__(self, store: Store, plan: BucketPlan, config: LoaderConfig = LoaderConfig()):
        self.process_index, self.process_count = _processes(config)
        check_plan(store, plan)
        self.store, self.plan, self.config = store, plan, config
        self.proteins = plan.proteins
        self._index = {p: i for i, p in enumerate(self.proteins)}
        self._lengths = np.array([plan.lengths[p] for p in self.proteins], np.int64)
        self.n_max = [b.n_max for b in plan.buckets]
        self._bucket_of = {p: b.index for b in plan.buckets for p in b.proteins}
        self.read_threads = config.read_threads or (4 if store.local else 32)
        # proteins opened (or being opened, on the read pool), least recently used first; at
        # most ``open_proteins`` beyond those of the units being read
        self._opened: OrderedDict[int, Future] = OrderedDict()
        self._layouts: dict[tuple[int, int], _Layout] = {}  # (bucket, epoch), current epoch only
        self._pool: ThreadPoolExecutor | None = None  # started on the first read
        self._idle: dict[int, _Pool] = {}  # slabs not in use by an epoch, per bucket
        self._idle_lock = threading.Lock()
        self.peak_pages: dict[int, int] = {}  # the most pages an epoch's pool held, per bucket
        for k in range(len(plan.buckets)):
            if self.batch_size(k) % self.process_count:
                raise ProtstoreError(
                    f"the global batch of bucket {k} ({self.batch_size(k)} samples) does not "
                    f"split over {self.process_count} processes: choose a batch size (or "
                    f"batch_beads // N_max) that is a multiple of the process count")
        self._units = [self._bucket_units(b.index) if self._active(b.index) else []
                       for b in plan.buckets]
        self.page_rows = [max(1, -(-max((len(f) for _, f in u), default=1) // PAGES_PER_UNIT))
                          for u in self._units]
        self._size_pools()

    # ------------------------------------------------------------------ memory
    def _active(self, k: int) -> bool:
        return self.config.buckets is None or k in self.config.buckets

    def _page_bytes(self, k: int) -> int:
        """Bytes of one page of bucket k's slab (:class:`_Pool`)."""
        rows, n_max = self.page_rows[k], self.n_max[k]
        return (rows * n_max * 3 * (FIELDS["R"].dtype.itemsize + FIELDS["F"].dtype.itemsize)
                + n_max * sum(FIELDS[key].dtype.itemsize for key in _TOPOLOGY_FIELDS)
                + rows * FIELDS["temperature"].dtype.itemsize)

    def _fixed_bytes(self) -> dict[str, int]:
        """The memory besides the pools: read scratch, batches in flight, opened proteins."""
        active = [k for k in range(len(self.n_max)) if self._units[k]]
        pids = [p for k in active for p in self.plan.buckets[k].proteins]
        chunk = max((min(self._chunk(p), self.plan.frames[p]) * self.plan.lengths[p] * 12
                     for p in pids), default=0)
        per_bead = set(BEAD_FIELDS) | (set(PER_BEAD_WHEN_PACKED) if self.config.packing else set())
        sample = {k: sum(f.dtype.itemsize * (self.n_max[k] * (3 if "xyz" in f.dims else 1)
                                             if key in per_bead else 1)
                         for key, f in FIELDS.items()) for k in active}
        # the global batch (a bound on this process's share): every process sizes its pools,
        # hence its order, alike
        batch = max((self.batch_size(k) * sample[k] for k in active), default=0)
        topology = sum(FIELDS[key].dtype.itemsize for key in _TOPOLOGY_FIELDS)
        protein = max((self.plan.frames[p] * FIELDS["temperature"].dtype.itemsize
                       + self.n_max[self._bucket_of[p]] * topology for p in pids), default=0)
        return {"read_scratch": 2 * self.read_threads * chunk,
                "batches": (max(self.config.prefetch, 0) + 2) * batch,
                "proteins": min(self.config.open_proteins, len(pids)) * protein}

    def _size_pools(self) -> None:
        """Pages per bucket pool (``self.slots``): what is left of ``buffer_bytes`` after the
        fixed parts, the same fraction of every bucket's data (each holding at least three
        units, or all of it)."""
        budget = self.config.buffer_bytes
        fixed = self._fixed_bytes()
        left = budget - sum(fixed.values())
        total = {k: sum(-(-len(f) // self.page_rows[k]) for _, f in u)
                 for k, u in enumerate(self._units) if u}
        biggest = {k: max(-(-len(f) // self.page_rows[k]) for _, f in self._units[k])
                   for k in total}
        # at least 3 units' pages each (or the whole bucket), the rest in proportion to data
        base = {k: min(total[k], 3 * biggest[k]) for k in total}
        left -= sum(base[k] * self._page_bytes(k) for k in total)
        if left < 0:
            raise ProtstoreError(
                f"buffer_bytes={budget} is too small: with its read buffers, batches in flight "
                f"and opened proteins ({sum(fixed.values())} bytes) the bucket pools need at "
                f"least {budget - left} bytes (3 chunks' frames a bucket)")
        extra = sum((total[k] - base[k]) * self._page_bytes(k) for k in total)
        fraction = min(1.0, left / extra) if extra else 1.0
        self.slots = [0] * len(self.n_max)
        for k in total:
            self.slots[k] = base[k] + int(fraction * (total[k] - base[k]))
        self._fixed = fixed

    def memory(self) -> dict[str, int]:
        """The loader's decoded-data memory in bytes, as it counts it against
        ``buffer_bytes``: ``pools`` (the bucket slabs), ``read_scratch``, ``batches`` (in
        flight), ``proteins`` (opened ones' small arrays), their ``total``, and
        ``buffer_bytes``. Each figure is a bound: what an epoch at most holds."""
        pools = sum(s * self._page_bytes(k) for k, s in enumerate(self.slots))
        out = {"pools": pools, **self._fixed}
        out["total"] = sum(out.values())
        out["buffer_bytes"] = self.config.buffer_bytes
        return out

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
            self._layouts[(k, epoch)] = self._make_layout(k, epoch)
        return self._layouts[(k, epoch)]

    def batch_size(self, k: int) -> int:
        """Samples per global batch of bucket k (:func:`bucket_batch_size`), all processes."""
        return bucket_batch_size(self.config, self.n_max[k])

    def local_batch_size(self, k: int) -> int:
        """Samples per batch of bucket k that this process yields (its share of the global
        batch: ``batch_size(k) // process_count``)."""
        return self.batch_size(k) // self.process_count

    def _make_layout(self, k: int, epoch: int) -> _Layout:
        """Bucket k's layout in ``epoch``: the shuffle buffer of the module docstring (step 2),
        its pool ``self.slots[k]`` pages."""
        cfg, units, rows, slots = self.config, self._units[k], self.page_rows[k], self.slots[k]
        rng = np.random.default_rng([cfg.seed, epoch, k])
        order = _spread(np.array([p for p, _ in units], np.int64), rng) if cfg.shuffle else \
            np.arange(len(units))
        sizes = np.array([len(units[u][1]) for u in order], np.int64)
        S, U, B = int(sizes.sum()), len(units), self.batch_size(k)
        unit_start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        unit_of = np.repeat(np.arange(U), sizes)
        rank = np.arange(S) - unit_start[unit_of]
        emitted = (np.concatenate([units[u][1] for u in order]) if U else np.zeros(0)
                   ).astype(np.int32)
        n_pages = -(-sizes // rows)
        unit_pages = np.concatenate([[0], np.cumsum(n_pages)]).astype(np.int64)
        page_unit = np.repeat(np.arange(U), n_pages)
        q = np.arange(int(unit_pages[-1])) - unit_pages[page_unit]
        last = unit_start[page_unit] + np.minimum((q + 1) * rows, sizes[page_unit]) - 1
        if cfg.shuffle:
            emitted = emitted[np.lexsort((rng.random(S), unit_of))]  # each unit's frames shuffled
            offset = np.sort(rng.random(S) + unit_of) - unit_of  # serving times, in order
            cap = int(unit_pages[-1]) if slots >= unit_pages[-1] else slots - 2 * int(
                n_pages.max())
        else:
            offset, cap = (rank + 0.5) / np.maximum(sizes[unit_of], 1), None
        for _ in range(20):
            if cap is not None and U and cap < n_pages.max():
                break
            admit = _admit(n_pages, offset[last], cap) if cap is not None else np.arange(U)
            seq = np.argsort(admit[unit_of] + offset, kind="stable")
            proteins = np.repeat(np.array([units[u][0] for u in order], np.int32), sizes)
            packed = (pack_sequence(self._lengths[proteins[seq]], B, self.n_max[k], cfg.last)
                      if cfg.packing else None)
            if packed is None:
                n_batches = S // B if cfg.last == "drop" else -(-S // B)
                cuts = np.minimum(np.arange(n_batches + 1) * B, S)
            else:
                seq, cuts = seq[packed.order], packed.cuts
                n_batches = len(cuts) - 1
            position = np.empty(S, np.int64)
            position[seq] = np.arange(S)
            # the batch serving each emitted frame (n_batches: dropped)
            batch_of = np.searchsorted(cuts, position, side="right") - 1
            batch_of[position >= cuts[-1]] = n_batches
            page_first = unit_start[page_unit] + q * rows
            need = (np.minimum.reduceat(batch_of, unit_start[:-1]) if U
                    else np.zeros(0, np.int64))
            page_last = (np.maximum.reduceat(np.where(batch_of < n_batches, batch_of, -1),
                                             page_first) if len(page_first)
                         else np.zeros(0, np.int64))
            page_last = np.where(page_last < 0, n_batches, page_last)
            lay = _Layout(
                protein=proteins[seq],
                frame=emitted[seq], page=(unit_pages[unit_of] + rank // rows)[seq],
                row=(rank % rows)[seq], emitted=emitted, unit_start=unit_start,
                unit_pages=unit_pages, unit_protein=np.array([units[u][0] for u in order],
                                                             np.int64),
                unit_need=need, read_order=np.argsort(need, kind="stable"),
                page_free=np.minimum(page_last, max(n_batches - 1, 0)),
                n_batches=n_batches, bucket=k, cuts=cuts,
                ranges=self._ranges(k, cuts, None if packed is None else packed.bin),
                **({} if packed is None else {"bin": packed.bin, "offset": packed.offset,
                                              "segment": packed.segment}))
            peak = lay.peak_pages()
            if peak <= slots:
                return lay
            if cap is None:
                break
            cap -= peak - slots
        raise ProtstoreError(
            f"buffer_bytes={cfg.buffer_bytes} is too small for bucket {k} (N_max "
            f"{self.n_max[k]}): its batches need more than the {slots} pages of "
            f"{rows} frames its share holds; raise buffer_bytes or lower the batch size")

    def _ranges(self, k: int, cuts: np.ndarray, bins: np.ndarray | None
                ) -> list[tuple[int, int]]:
        """For every batch of bucket k (its samples ``cuts[j]:cuts[j + 1]``, in bins ``bins``
        [S] when packed, else one sample a bin): the sample range [lo, hi) of this process's
        share, the bins ``process_index * b`` to ``(process_index + 1) * b``."""
        b, n = self.local_batch_size(k), len(cuts) - 1
        p = self.process_index
        if bins is None:
            lo = np.minimum(cuts[:-1] + p * b, cuts[1:])
            return list(zip(lo.tolist(), np.minimum(lo + b, cuts[1:]).tolist()))
        key = np.repeat(np.arange(n), np.diff(cuts)) * self.batch_size(k) + bins[:cuts[-1]]
        first = np.arange(n) * self.batch_size(k) + p * b
        lo = np.searchsorted(key, first, side="left")
        hi = np.searchsorted(key, first + b, side="left")
        return list(zip(lo.tolist(), hi.tolist()))

    def schedule(self, epoch: int) -> list[tuple[int, int]]:
        """(bucket, batch number within the bucket) for every step of ``epoch``."""
        counts = [self._layout(k, epoch).n_batches if self._active(k) else 0
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
        total = 0
        for k, i in self.schedule(epoch):
            lay = self._layout(k, epoch)
            total += int(self._lengths[lay.protein[lay.cuts[i]:lay.cuts[i + 1]]].sum())
        steps = self.steps_per_epoch(epoch)
        return total / steps if steps else 0.0

    def shapes(self) -> dict[int, tuple[int, int]]:
        """Static (batch, N_max) per bucket of the batches this process yields: one
        compilation each."""
        return {k: (self.local_batch_size(k), n) for k, n in enumerate(self.n_max)}

    def protein_diversity(self, epoch: int = 0, steps: int = DIVERSITY_STEPS
                          ) -> dict[int, Diversity]:
        """Per bucket with a full batch: distinct proteins per global batch and per ``steps``
        consecutive batches of ``epoch``, each with its expectation under a uniform shuffle of
        the bucket's samples (:class:`Diversity`). From the layout alone (reads no data)."""
        out = {}
        for k in range(len(self.plan.buckets)):
            if self._active(k):
                lay = self._layout(k, epoch)
                figures = sequence_diversity(lay.protein, self.batch_size(k), steps,
                                             cuts=lay.cuts if self.config.packing else None)
                if figures is not None:
                    out[k] = figures
        return out

    # ------------------------------------------------------------------ reading
    def _read_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.read_threads, thread_name_prefix="protstore-read")
        return self._pool

    def _open(self, i: int) -> Future:
        """The future of opened protein ``i``, opening it on the read pool unless open; the
        least recently used beyond ``open_proteins`` are let go (a read task holds its own)."""
        if i in self._opened:
            self._opened.move_to_end(i)
        else:
            self._opened[i] = self._read_pool().submit(self._open_protein, i)
        future = self._opened[i]
        while len(self._opened) > max(self.config.open_proteins, 1):
            self._opened.popitem(last=False)
        return future

    def _open_protein(self, i: int) -> _Protein:
        """Read protein i's small arrays (per bead, per frame) and make its chunk readers."""
        pid = self.proteins[i]
        readers = self.store.protein_readers(pid)
        n_max = self.n_max[self._bucket_of[pid]]
        n = self.plan.lengths[pid]
        topology = padded_topology(readers, n, n_max)
        temperature = readers["temperature"].read_all().astype(np.float32, copy=False)
        return _Protein(readers["R"], readers["F"], temperature, n=n, **topology)

    def _take_pool(self, k: int) -> _Pool:
        """Bucket k's slab, or a new one while another epoch holds it."""
        with self._idle_lock:
            pool = self._idle.pop(k, None)
        return pool or _Pool(self.slots[k], self.page_rows[k], self.n_max[k])

    def _give_pool(self, k: int, pool: _Pool) -> None:
        with self._idle_lock:
            self._idle.setdefault(k, pool)

    def _batches(self, epoch: int, start_step: int) -> Iterator[dict]:
        schedule = self.schedule(epoch)[start_step:]
        streams: dict[int, _Stream] = {}
        try:
            for n, (k, j) in enumerate(schedule):
                if k not in streams:
                    streams[k] = _Stream(self, self._layout(k, epoch), j)
                batch = streams[k].batch(j)
                if len(batch["sample_mask"]) < self.local_batch_size(k):  # only last="pad"
                    batch = _pad_batch(batch, self.local_batch_size(k))
                batch.update(bucket=k, epoch=epoch, step=start_step + n)
                yield batch
        finally:
            for stream in streams.values():
                stream.close()

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[dict]:
        """The batches of ``epoch`` from ``start_step`` on, assembled in a background thread."""
        return prefetch(self._batches(epoch, start_step), self.config.prefetch,
                        name="protstore-loader")

    def __iter__(self) -> Iterator[dict]:
        return self.epoch(0)


class _Stream:
    """One epoch's reading of one bucket from its batch ``j0`` on: the units read into the
    pool's free pages, the batches gathered from it, the pages given back."""

    def __init__(self, loader: BatchLoader, lay: _Layout, j0: int):
        self.loader, self.lay, self.k = loader, lay, lay.bucket
        self.pool = loader._take_pool(self.k)
        self.free = list(range(loader.slots[self.k]))[::-1]
        self.slot = np.full(len(lay.page_free), -1, np.intp)
        self.tasks: dict[int, list[Future]] = {}
        self.read = self.waited = 0  # positions in lay.read_order
        self.by_free = np.argsort(lay.page_free, kind="stable")
        self.ends = lay.page_free[self.by_free].tolist()  # pages' last batches, in order
        self.freed = int(np.searchsorted(lay.page_free[self.by_free], j0, side="left"))
        self.peak = 0

    def batch(self, j: int) -> dict:
        lay, order, need = self.lay, self.lay.read_order, self.lay.unit_need
        while self.read < len(order) and need[order[self.read]] <= j:  # needed now
            self._submit(int(order[self.read]), j)
            self.read += 1
        ahead = self.read + self.loader.read_threads
        while self.read < min(len(order), ahead) and need[order[self.read]] < lay.n_batches:
            u = int(order[self.read])
            if lay.unit_pages[u + 1] - lay.unit_pages[u] > len(self.free):
                break
            self._submit(u, j)
            self.read += 1
        while self.waited < self.read and need[order[self.waited]] <= j:
            for task in self.tasks.pop(int(order[self.waited]), ()):
                task.result()
            self.waited += 1
        lo, hi = lay.ranges[j]
        slot, row, pool = self.slot[lay.page[lo:hi]], lay.row[lo:hi], self.pool
        if lay.bin is None:
            batch = {"R": pool.R[slot, row], "F": pool.F[slot, row],
                     **{key: pool.topology[key][slot] for key in _TOPOLOGY_FIELDS},
                     "temperature": pool.temperature[slot, row],
                     "protein_index": lay.protein[lo:hi].copy(),
                     "frame": lay.frame[lo:hi].copy(),
                     "sample_mask": np.ones(hi - lo, FIELDS["sample_mask"].dtype)}
        else:
            batch = self._packed(lo, hi, slot, row)
        ends = self.ends
        while self.freed < len(ends) and ends[self.freed] <= j:  # served: give back
            page = self.by_free[self.freed]
            if self.slot[page] >= 0:
                self.free.append(int(self.slot[page]))
                self.slot[page] = -1
            self.freed += 1
        return batch

    def _packed(self, lo: int, hi: int, slot: np.ndarray, row: np.ndarray) -> dict:
        """A batch's packed samples (this process's bins): samples lo..hi of the sequence, each
        copied into its bin at its offset, one fancy index per field."""
        lay, pool, loader = self.lay, self.pool, self.loader
        first_bin = loader.process_index * loader.local_batch_size(self.k)
        n = loader._lengths[lay.protein[lo:hi]]
        sample = np.repeat(np.arange(hi - lo), n)  # [T] each real bead's sample
        bead = np.arange(len(sample)) - np.repeat(np.cumsum(n) - n, n)  # its bead in the frame
        to_bin = lay.bin[lo:hi][sample] - first_bin
        to_bead = lay.offset[lo:hi][sample] + bead
        src_slot, src_row = slot[sample], row[sample]
        b, n_max = loader.local_batch_size(self.k), loader.n_max[self.k]
        out = {key: FIELDS[key].fill((b, n_max)) for key in
               ("R", "F", *_TOPOLOGY_FIELDS, *PER_BEAD_WHEN_PACKED)}
        out["R"][to_bin, to_bead] = pool.R[src_slot, src_row, bead]
        out["F"][to_bin, to_bead] = pool.F[src_slot, src_row, bead]
        for key in ("species", "resid", "chain", "mask"):
            out[key][to_bin, to_bead] = pool.topology[key][src_slot, bead]
        out["segment"][to_bin, to_bead] = lay.segment[lo:hi][sample]
        out["temperature"][to_bin, to_bead] = pool.temperature[src_slot, src_row]
        out["protein_index"][to_bin, to_bead] = lay.protein[lo:hi][sample]
        out["frame"][to_bin, to_bead] = lay.frame[lo:hi][sample]
        used = np.zeros(b, FIELDS["sample_mask"].dtype)
        used[np.unique(to_bin)] = 1.0
        # a process's share of a last, short batch: its bins up to the last one used
        n_bins = int(to_bin.max()) + 1 if len(to_bin) else 0
        return {key: value[:n_bins] for key, value in
                {**out, "sample_mask": used}.items()}

    def _submit(self, u: int, j: int) -> None:
        """Read unit u into free pages: those of its pages still to be served at batch j."""
        lay = self.lay
        pages = np.arange(lay.unit_pages[u], lay.unit_pages[u + 1])
        live = pages[lay.page_free[pages] >= j]
        if not len(live):
            return
        if len(live) > len(self.free):
            raise ProtstoreError(f"internal: bucket {self.k}'s pool overflows at batch {j}")
        self.slot[live] = [self.free.pop() for _ in live]
        self.peak = max(self.peak, self.loader.slots[self.k] - len(self.free))
        frames = lay.emitted[lay.unit_start[u]:lay.unit_start[u + 1]]
        page = lay.unit_pages[u] + np.arange(len(frames)) // self.loader.page_rows[self.k]
        keep = self.slot[page] >= 0
        rows = (np.arange(len(frames)) % self.loader.page_rows[self.k])[keep]
        opening = self.loader._open(int(lay.unit_protein[u]))
        pool = self.loader._read_pool()
        self.tasks[u] = [pool.submit(_read_unit, opening, key, frames[keep], self.slot[page[keep]],
                                     rows, self.pool) for key in ("R", "F")]

    def close(self) -> None:
        """Wait for the reads still running (drop those not started) and give the slab back."""
        pending = [task for tasks in self.tasks.values() for task in tasks]
        for task in pending:
            task.cancel()
        for task in pending:
            if not task.cancelled():
                try:
                    task.result()
                except Exception:  # noqa: BLE001 - the epoch is over; its consumer saw enough
                    pass
        self.loader.peak_pages[self.k] = max(self.loader.peak_pages.get(self.k, 0), self.peak)
        self.loader._give_pool(self.k, self.pool)


def _read_unit(opening: Future, key: str, frames: np.ndarray, slot: np.ndarray,
               row: np.ndarray, pool: _Pool) -> None:
    """Decode the chunk(s) holding ``frames`` of a protein's R or F (``key``) into the thread's
    scratch buffers and copy frame i to ``pool.<key>[slot[i], row[i]]``, its padding beads to
    0; with R, the pages' per-bead fields and temperatures too."""
    protein: _Protein = opening.result()
    reader: ChunkReader = getattr(protein, key)
    out, n = getattr(pool, key), protein.n
    scratch = getattr(_thread, "scratch", None)
    if scratch is None:
        scratch = _thread.scratch = Scratch()
    chunk_of = frames // reader.chunk
    for c in np.unique(chunk_of):
        sel = np.flatnonzero(chunk_of == c)
        out[slot[sel], row[sel], :n] = reader.read(int(c), scratch)[frames[sel] - c * reader.chunk]
    if n < out.shape[2]:
        out[slot, row, n:] = 0.0  # the pad value of R and F
    if key == "R":
        for field in _TOPOLOGY_FIELDS:
            pool.topology[field][slot] = getattr(protein, field)
        pool.temperature[slot, row] = protein.temperature[frames]


_thread = threading.local()  # the read threads' Scratch


def _spread(protein: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An order of units (of proteins ``protein`` [U]) in which each protein's units, shuffled,
    are spread evenly: the j-th of a protein's c units gets the key (j + u)/c, u uniform in
    [0, 1), and units are ordered by key. Any stretch of the order (the pool) then holds each
    protein's units in proportion to its count, not a random number of them."""
    group = np.unique(protein, return_inverse=True)[1]
    within = np.lexsort((rng.random(len(protein)), group))  # by protein, shuffled in each
    count = np.bincount(group)
    rank = np.arange(len(protein)) - (np.cumsum(count) - count)[group[within]]
    key = (rank + rng.random(len(protein))) / count[group[within]]
    return within[np.argsort(key, kind="stable")]


def _admit(n_pages: np.ndarray, page_end: np.ndarray, cap: int) -> np.ndarray:
    """The shuffle buffer's entry times: units (``n_pages`` pages each, in order) enter a pool
    of ``cap`` pages as soon as it has room; a page leaves at its unit's entry time plus
    ``page_end`` (its last frame's serving offset, in [0, 1)). Returns each unit's entry time."""
    admit = np.zeros(len(n_pages))
    ends: list[float] = []
    used, t, first = 0, 0.0, 0
    page_end = page_end.tolist()
    for u, n in enumerate(n_pages.tolist()):
        while used + n > cap:
            t = heapq.heappop(ends)
            used -= 1
        admit[u] = t
        used += n
        for end in page_end[first:first + n]:
            heapq.heappush(ends, t + end)
        first += n
    return admit


class Packed(NamedTuple):
    """A packed cut of a sample sequence (:func:`pack_sequence`)."""

    order: np.ndarray  # [S] the packed sequence as positions in the original one
    cuts: np.ndarray  # [n_batches + 1] each batch's first sample in the packed sequence
    bin: np.ndarray  # [S] each sample's bin in its batch, ascending within a batch
    offset: np.ndarray  # [S] its first bead in the bin
    segment: np.ndarray  # [S] its rank in the bin


def pack_sequence(lengths: np.ndarray, B: int, capacity: int, last: str = "pad",
                  window: int = PACK_WINDOW) -> Packed:
    """Pack a sequence of frames of ``lengths`` [S] beads into batches of ``B`` bins of
    ``capacity`` beads: first-fit in sequence order, a frame that fits no bin waiting (at most
    ``window`` frames skipped a batch) for the next batch, whose bins it tries first. Every
    frame is in exactly one batch; with ``last="drop"`` the final batch is dropped (its frames
    at the end of ``order``, beyond ``cuts[-1]``) when a bin stayed empty. Metadata only: the
    same lengths always give the same packing."""
    L = np.asarray(lengths, np.int64).tolist()
    S = len(L)
    if any(n > capacity for n in L):
        raise ProtstoreError(f"internal: a frame of {max(L)} beads does not fit a bin of "
                             f"{capacity}")
    shortest = min(L, default=1)
    order, bins, offsets, segments, cuts = [], [], [], [], [0]
    waiting: list[int] = []  # skipped frames, in sequence order
    nxt = 0
    while waiting or nxt < S:
        free, count = [capacity] * B, [0] * B
        placed: list[tuple[int, int, int, int]] = []  # (bin, segment, frame, offset)
        skipped: list[int] = []
        top = capacity  # the most free beads of any bin

        def take(i: int) -> bool:
            nonlocal top
            n = L[i]
            if n > top:
                return False
            for b in range(B):
                if free[b] >= n:
                    placed.append((b, count[b], i, capacity - free[b]))
                    free[b] -= n
                    count[b] += 1
                    if free[b] + n == top:
                        top = max(free)
                    return True
            return False

        for i in waiting:
            if not take(i):
                skipped.append(i)
        while nxt < S and len(skipped) < window and top >= shortest:
            if not take(nxt):
                skipped.append(nxt)
            nxt += 1
        waiting = skipped
        placed.sort()
        for b, seg, i, off in placed:
            order.append(i)
            bins.append(b)
            offsets.append(off)
            segments.append(seg)
        cuts.append(len(order))
    if last == "drop" and len(cuts) > 1:
        final = bins[cuts[-2]:cuts[-1]]
        if len(set(final)) < B:
            cuts.pop()
    return Packed(np.asarray(order, np.int64), np.asarray(cuts, np.int64),
                  np.asarray(bins, np.int32), np.asarray(offsets, np.int32),
                  np.asarray(segments, np.int32))


def sequence_diversity(protein: np.ndarray, B: int, steps: int = DIVERSITY_STEPS,
                       cuts: np.ndarray | None = None) -> Diversity | None:
    """:class:`Diversity` of a bucket's sample sequence of protein indices [S] cut into batches
    of B (or, packed, at ``cuts``): distinct proteins per full batch, and per ``steps``
    consecutive full batches (whole blocks; all the batches when there are fewer), each
    against a uniform shuffle's expectation for as many samples. None without a full batch."""
    if cuts is None:
        n = len(protein) // B
        cuts = np.arange(n + 1) * B
    cuts = np.asarray(cuts, np.int64)
    n = len(cuts) - 1
    if not n or cuts[-1] == 0:
        return None
    counts = np.bincount(protein)
    counts = counts[counts > 0]
    sizes = np.diff(cuts)
    distinct = [len(np.unique(protein[a:b])) for a, b in zip(cuts[:-1], cuts[1:])]
    uniform = {m: _uniform_distinct(counts, int(m)) for m in np.unique(sizes).tolist()}
    H = min(steps, n)
    blocks = [len(np.unique(protein[cuts[i]:cuts[i + H]])) for i in range(0, n - H + 1, H)]
    block_uniform = [_uniform_distinct(counts, int(cuts[i + H] - cuts[i]))
                     for i in range(0, n - H + 1, H)]
    return Diversity(float(np.mean(distinct)), float(np.mean([uniform[m] for m in sizes])),
                     float(np.mean(blocks)), float(np.mean(block_uniform)), H)


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


def _pad_batch(batch: dict, B: int) -> dict:
    """Fill a short batch up to B samples with padded samples (:data:`FIELDS` pad values)."""
    n = len(batch["sample_mask"])
    out = {}
    for key, value in batch.items():
        pad = np.full((B - n,) + value.shape[1:], FIELDS[key].pad, dtype=value.dtype)
        out[key] = np.concatenate([value, pad])
    return out
