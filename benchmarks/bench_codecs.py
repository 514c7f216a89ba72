"""Codec choice for R and F: compression ratio and single-core speed of lossless options.

Prints a Markdown table. Data: CG R and F like ``bench_store.py`` makes them (137 beads, a
random-walk chain wobbling 0.1 Å between frames; forces the sum of 15 Gaussian atom forces), in
chunks of ~1 MiB as the store writes them. "T" is the frame-last transpose of
``Encoding(transpose=True)``.

    python benchmarks/bench_codecs.py [--residues 137] [--frames 638]
"""

from __future__ import annotations

import argparse
import time

import numcodecs.blosc
import numpy as np
from numcodecs import Blosc

numcodecs.blosc.use_threads = False  # one core per chunk, as inside zarr's thread pool


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--residues", type=int, default=137)
    ap.add_argument("--frames", type=int, default=638, help="frames per chunk (1 MiB at 137)")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    data = cg_chunk(args.residues, args.frames)
    print("| codec | T | ratio R | ratio F | ratio R+F | encode MB/s | decode MB/s |")
    print("|---|---|---|---|---|---|---|")
    for cname, shuffle, level in [("zstd", Blosc.SHUFFLE, 3), ("zstd", Blosc.BITSHUFFLE, 1),
                                  ("zstd", Blosc.BITSHUFFLE, 3), ("zstd", Blosc.BITSHUFFLE, 5),
                                  ("zstd", Blosc.BITSHUFFLE, 9), ("lz4", Blosc.SHUFFLE, 5),
                                  ("lz4", Blosc.BITSHUFFLE, 5)]:
        codec = Blosc(cname=cname, clevel=level, shuffle=shuffle)
        for transpose in (False, True):
            raw = stored = t_enc = t_dec = 0
            ratio = {}
            for name, a in data.items():
                a = np.ascontiguousarray(a.transpose(1, 2, 0)) if transpose else a
                enc = codec.encode(a)
                assert np.array_equal(np.frombuffer(codec.decode(enc), np.float32), a.ravel())
                ratio[name] = a.nbytes / len(enc)
                raw, stored = raw + a.nbytes, stored + len(enc)
                t_enc += per_call(lambda: codec.encode(a), max(1, args.repeat // 4))
                t_dec += per_call(lambda: codec.decode(enc), args.repeat)
            shuffle_name = {Blosc.SHUFFLE: "byte", Blosc.BITSHUFFLE: "bit"}[shuffle]
            print(f"| blosc {cname}-{level} {shuffle_name}-shuffle "
                  f"| {'yes' if transpose else 'no'} | {ratio['R']:.3f} | {ratio['F']:.3f} | {raw / stored:.3f} "
                  f"| {raw / t_enc / 1e6:.0f} | {raw / t_dec / 1e6:.0f} |")


if __name__ == "__main__":
    main()
