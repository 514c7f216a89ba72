"""Codec choice for R and F: compression ratio and single-core speed of lossless options.

Prints two Markdown tables:

1. Synthetic CG R and F like ``bench_store.py`` makes them (137 beads, a random-walk chain
   wobbling 0.1 Å between frames, so frames are strongly correlated; forces the sum of 15
   Gaussian atom forces), one chunk of ~1 MiB, with encode and decode speed.
2. Every R and F chunk of ``make demo``'s store (``--store``; Langevin dynamics saved far
   apart, so frames are decorrelated), ratio only, including ``shuffle="auto"`` (the better of
   byte- and bit-shuffle per array, decided on its first chunk, as protstore stores it).

"T" is the frame-last transpose of ``Encoding(transpose=True)``.

    python benchmarks/bench_codecs.py [--residues 137] [--frames 638]
        [--store demo-output/store.zarr]
"""

from __future__ import annotations

import argparse
import time

import numcodecs.blosc
import numpy as np
from numcodecs import Blosc

from _demo import demo_store
from protstore.store.layout import Encoding

numcodecs.blosc.use_threads = False  # one core per chunk, as inside zarr's thread pool
SHUFFLE_NAME = {Blosc.SHUFFLE: "byte", Blosc.BITSHUFFLE: "bit"}
KIB = 1024
# (compressor, shuffle, level, Blosc block bytes; 0 = Blosc's automatic size, 128 KiB here)
CODECS = [("zstd", Blosc.SHUFFLE, 3, 0), ("zstd", Blosc.BITSHUFFLE, 1, 0),
          ("zstd", Blosc.BITSHUFFLE, 3, 0), ("zstd", Blosc.BITSHUFFLE, 5, 0),
          ("zstd", Blosc.BITSHUFFLE, 9, 0), ("zstd", Blosc.BITSHUFFLE, 2, 64 * KIB),
          ("zstd", Blosc.BITSHUFFLE, 2, 128 * KIB), ("zstd", Blosc.BITSHUFFLE, 2, 256 * KIB),
          ("zstd", Blosc.BITSHUFFLE, 1, 256 * KIB), ("lz4", Blosc.SHUFFLE, 5, 0),
          ("lz4", Blosc.BITSHUFFLE, 5, 0)]


def label(cname: str, shuffle, level: int, block: int) -> str:
    shuffle = shuffle if shuffle == "auto" else SHUFFLE_NAME[shuffle]
    return (f"blosc {cname}-{level} {shuffle}-shuffle"
            + (f", {block // KIB} KiB blocks" if block else ""))


def cg_chunk(n_res: int, frames: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    steps = rng.normal(size=(n_res, 3))
    ca = np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=1, keepdims=True), axis=0)
    return {"R": (ca + rng.normal(scale=0.1, size=(frames, n_res, 3))).astype(np.float32),
            "F": rng.normal(scale=15.0 * np.sqrt(15), size=(frames, n_res, 3)).astype(np.float32)}


def per_call(fn, repeat: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def stored(chunk: np.ndarray, transpose: bool) -> np.ndarray:
    return np.ascontiguousarray(chunk.transpose(1, 2, 0)) if transpose else chunk


def synthetic_table(args) -> None:
    data = cg_chunk(args.residues, args.frames)
    print(f"\n### 1. synthetic smooth trajectory ({args.residues} beads, {args.frames} frames)\n")
    print("| codec | T | ratio R | ratio F | ratio R+F | encode MB/s | decode MB/s |")
    print("|---|---|---|---|---|---|---|")
    for cname, shuffle, level, block in CODECS:
        codec = Blosc(cname=cname, clevel=level, shuffle=shuffle, blocksize=block)
        for transpose in (False, True):
            raw = size = t_enc = t_dec = 0
            ratio = {}
            for name, a in data.items():
                a = stored(a, transpose)
                enc = codec.encode(a)
                assert np.array_equal(np.frombuffer(codec.decode(enc), np.float32), a.ravel())
                ratio[name] = a.nbytes / len(enc)
                raw, size = raw + a.nbytes, size + len(enc)
                t_enc += per_call(lambda: codec.encode(a), max(1, args.repeat // 4))
                t_dec += per_call(lambda: codec.decode(enc), args.repeat)
            print(f"| {label(cname, shuffle, level, block)} "
                  f"| {'yes' if transpose else 'no'} | {ratio['R']:.3f} | {ratio['F']:.3f} "
                  f"| {raw / size:.3f} | {raw / t_enc / 1e6:.0f} | {raw / t_dec / 1e6:.0f} |")


def store_table(path: str) -> None:
    store = demo_store(path)
    arrays = [(name, store.protein_group(pid)[name]) for pid in store.proteins for name in "RF"]
    chunks = [(name, [a[lo:lo + a.chunks[0]] for lo in range(0, a.shape[0], a.chunks[0])])
              for name, a in arrays]
    print(f"\n### 2. `make demo`'s store ({len(store.proteins)} proteins, all R and F chunks)\n")
    print("| codec (transposed) | ratio R | ratio F | ratio R+F |")
    print("|---|---|---|---|")
    default = Encoding()
    for cname, shuffle, level, block in [*CODECS, ("zstd", "auto", 3, 0),
                                         (default.cname, "auto", default.clevel,
                                          default.block_bytes)]:
        candidates = [Blosc.SHUFFLE, Blosc.BITSHUFFLE] if shuffle == "auto" else [shuffle]
        codecs = [Blosc(cname=cname, clevel=level, shuffle=s, blocksize=block)
                  for s in candidates]
        raw, size = {"R": 0, "F": 0}, {"R": 0, "F": 0}
        for name, parts in chunks:
            parts = [stored(p, True) for p in parts]
            # "auto": the codec whose first chunk is smallest compresses the whole array
            codec = min(codecs, key=lambda c: len(c.encode(parts[0])))
            raw[name] += sum(p.nbytes for p in parts)
            size[name] += sum(len(codec.encode(p)) for p in parts)
        print(f"| {label(cname, shuffle, level, block)} | {raw['R'] / size['R']:.3f} "
              f"| {raw['F'] / size['F']:.3f} | {sum(raw.values()) / sum(size.values()):.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--residues", type=int, default=137)
    ap.add_argument("--frames", type=int, default=638, help="frames per chunk (1 MiB at 137)")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--store", default="demo-output/store.zarr",
                    help="make demo's store (generated there if missing)")
    args = ap.parse_args()
    synthetic_table(args)
    store_table(args.store)


if __name__ == "__main__":
    main()
