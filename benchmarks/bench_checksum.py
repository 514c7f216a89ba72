"""What the per-chunk CRC32C costs on read: the same R array (137 beads x 6,400 frames, ~1 MiB
chunks, the store's default encoding) written with and without ``Encoding(checksum=...)``, and
read chunk by chunk through the direct chunk path, one after another and on the codec pool.
Best of 15; prints a Markdown table (docs/performance.md keeps the latest).

    python benchmarks/bench_checksum.py
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from protstore.pools import codec_pool
from protstore.store.chunks import ChunkReader
from protstore.store.layout import Encoding


def main() -> None:
    n, T = 137, 6400
    rng = np.random.default_rng(0)
    R = (np.cumsum(rng.normal(scale=0.1, size=(T, n, 3)), axis=0)
         + rng.normal(scale=10, size=(1, n, 3))).astype(np.float32)
    best = {}
    with tempfile.TemporaryDirectory() as tmp:
        for checksum in (False, True):
            enc = Encoding(checksum=checksum)
            chunk = enc.frames_per_chunk(n)
            path = Path(tmp) / f"crc_{checksum}.zarr"
            array = zarr.create_array(path, shape=R.shape, chunks=(chunk, n, 3), dtype="float32",
                                      fill_value=np.nan, **enc.codecs_for_vectors(R[:chunk]))
            array[:] = R
            reader = ChunkReader(zarr.open_array(path, mode="r"))
            assert reader.direct is not None and reader.direct.crc32c == checksum
            reads = {
                "one chunk after another": lambda: [reader.read(c)
                                                    for c in range(reader.n_chunks)],
                "on the codec pool": lambda: [f.result() for f in [
                    codec_pool().submit(reader.read, c) for c in range(reader.n_chunks)]]}
            for name, read in reads.items():
                read()
                times = []
                gc.disable()
                for _ in range(15):
                    t = time.perf_counter()
                    read()
                    times.append(time.perf_counter() - t)
                gc.enable()
                best[(checksum, name)] = min(times)
    print(f"{R.nbytes / 2**20:.0f} MiB of R, {reader.n_chunks} chunks\n")
    print("| read | without CRC32C | with CRC32C | cost |\n|---|---|---|---|")
    for name in ("one chunk after another", "on the codec pool"):
        a, b = best[(False, name)], best[(True, name)]
        print(f"| {name} | {a * 1e3:.1f} ms | {b * 1e3:.1f} ms | {100 * (b / a - 1):+.1f}% |")


if __name__ == "__main__":
    main()
