"""Fault injection: what protstore does under kills, concurrent writers, bit flips and a full
disk. Prints the table tried / handled / lost (docs/performance.md keeps the latest).

    python benchmarks/bench_faults.py [--kills 10] [--train-kills 3] [--writers 6] [--flips 40]
        [--checkpoint-flips 200] [--catalog-flips 200] [--only TEXT]

- **kill -9 during ingest**: a child process ingests one mdCATH-layout file into a fresh
  store and is killed at a random moment; the store must validate and a re-run must give the
  protein bit for bit as an uninterrupted ingest does ("lost" otherwise).
- **kill -9 during training**: a child trains (checkpoints every 3 steps) and is killed at a
  random moment; ``--resume`` must finish with final params equal to an uninterrupted run.
- **concurrent ingest into a new store**: several processes ingest (some the same files, ids
  with dots among them) into a store none of them has created; every process must end with
  exit 0 or a one-line error, and the store must hold every protein, valid.
- **bit flips**: one random bit of a random chunk of a stored array is flipped; reading the
  protein and ``validate`` must both report it ("lost": served as data).
- **disk full**: ingest into a store on a 20 MiB tmpfs (needs root; skipped otherwise) until
  the disk is full; every failure must be a one-line error and the store must stay valid.
- **bit flips in a checkpoint**: one random bit of a random file of a checkpoint (chunks and
  its ``zarr.json`` documents); reading it must raise a CheckpointError or give exactly what
  was written ("lost": other parameters, attributes or optimizer state served).
- **bit flips in a catalog segment**: one random bit of the store's catalog segment; every
  protein document read must equal what was committed, and the damage must be named (on read
  and by ``validate``) whenever the segment's content changed.
- **edited ``zarr.json``**: a protein's consolidated metadata edited to another data type, byte
  order, transpose or shape; reading must refuse it and ``validate`` must report it.
- **overwrite killed before its catalog entry**: the new group is in place but the catalog
  still holds the old document; readers must use the group's, ``validate`` must report it and
  ``--repair`` must make the catalog right.
- **kill -9 during an ``--overwrite``**: every store version committed before it must still
  read its data bit for bit (``open_store(url, version=V)``), and the store as it is now must
  hold the old or the new protein whole.
- **kill -9 during ``gc``**: every version ``log`` still lists must open and read exactly the
  data it read before, or be refused with a one-line StoreError; the kept ones must read.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import protstore  # noqa: E402
from helpers import write_mdcath  # noqa: E402
from protstore.store.verify import verify_store  # noqa: E402


def _child(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))


INGEST = """
    import sys
    import protstore
    from protstore.ingest import ingest
    ingest(sys.argv[2:], protstore.open_store(sys.argv[1], mode="a"), progress=False,
           log=lambda m: None)
"""


def _valid(path: Path) -> bool:
    return not [f for f in verify_store(protstore.open_store(path)) if f.level == "error"]


def kills_during_ingest(tmp: Path, trials: int, rng: random.Random) -> tuple[int, int, int]:
    source = tmp / "kill.h5"
    write_mdcath(source, domain="kill.me", frames=400, runs=((320, 0), (320, 1), (348, 0)),
                 resnames=("MET", "ALA", "GLY", "LYS", "LEU") * 8)
    ref = tmp / "ref.zarr"
    _child(INGEST, str(ref), str(source)).wait()
    expect = protstore.open_store(ref).protein("kill.me", chunks=None).load()
    t0 = time.perf_counter()
    _child(INGEST, str(tmp / "timing.zarr"), str(source)).wait()
    full = time.perf_counter() - t0
    handled = lost = 0
    for i in range(trials):
        store = tmp / f"k{i}.zarr"
        child = _child(INGEST, str(store), str(source))
        time.sleep(rng.uniform(0.0, full))
        child.send_signal(signal.SIGKILL)
        child.wait()
        ok = not store.exists() or not (store / "zarr.json").exists() or _valid(store)
        _child(INGEST, str(store), str(source)).wait()  # the re-run
        got = protstore.open_store(store).protein("kill.me", chunks=None).load()
        if ok and got.identical(expect) and _valid(store):
            handled += 1
        else:
            lost += 1
    return trials, handled, lost


TRAIN = """
    import sys
    import protstore
    from protstore.train import TrainConfig, train
    store = protstore.open_store(sys.argv[1])
    resume = sys.argv[3] == "resume"
    train(store, store.plan("p"), sys.argv[2], None if resume else TrainConfig.from_dict(
        {"epochs": 2, "batch_size": 8, "checkpoint_every_steps": 3}), resume=resume,
        progress=False, echo=lambda m: None)
"""


def kills_during_training(tmp: Path, trials: int, rng: random.Random) -> tuple[int, int, int]:
    from protstore.batching import plan_from_store, save_plan
    from protstore.checkpoints import read_checkpoint
    from protstore.demo import DemoConfig, make_demo_dataset
    from protstore.ingest import ingest

    files = make_demo_dataset(tmp / "train-data", DemoConfig(
        lengths=(16, 30), two_chain=(), temperatures=(320,), replicas=1, frames=60,
        corrupt=False, predecessor_length=0, seed=3), progress=False)
    store = protstore.open_store(tmp / "train.zarr", mode="a")
    ingest(files, store, progress=False, log=lambda m: None)
    save_plan(store, plan_from_store(store, name="p", n_buckets=1, split="frame",
                                     val_fraction=0.25, block_frames=10))
    t0 = time.perf_counter()
    _child(TRAIN, str(tmp / "train.zarr"), str(tmp / "ref-run"), "new").wait()
    full = time.perf_counter() - t0
    expect = read_checkpoint(tmp / "ref-run" / "final").params
    handled = lost = 0
    import jax
    for i in range(trials):
        run = tmp / f"run{i}"
        child = _child(TRAIN, str(tmp / "train.zarr"), str(run), "new")
        time.sleep(rng.uniform(0.3 * full, full))
        child.send_signal(signal.SIGKILL)
        child.wait()
        resumed = _child(TRAIN, str(tmp / "train.zarr"), str(run), "resume")
        resumed.wait()
        try:
            got = read_checkpoint(run / "final").params
            same = all(np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in
                       zip(jax.tree.leaves(expect), jax.tree.leaves(got)))
        except Exception:  # noqa: BLE001 - no final params: lost
            same = False
        handled, lost = (handled + 1, lost) if same else (handled, lost + 1)
    return trials, handled, lost


def concurrent_writers(tmp: Path, writers: int) -> tuple[int, int, int]:
    files = []
    for i, domain in enumerate(("a.1", "b.2", "c3")):
        write_mdcath(tmp / f"w{i}.h5", domain=domain, frames=60, seed=i)
        files.append(str(tmp / f"w{i}.h5"))
    store = tmp / "shared.zarr"
    children = [_child(INGEST, str(store), *files[i % 3:], *files[:i % 3])
                for i in range(writers)]
    clean = 0
    for child in children:
        _, err = child.communicate()
        clean += child.returncode == 0 or len(err.strip().splitlines()) == 1
    s = protstore.open_store(store)
    whole = s.proteins == ["a.1", "b.2", "c3"] and _valid(store)
    handled = clean if whole else 0
    return writers, handled, writers - handled


def bit_flips(tmp: Path, trials: int, rng: random.Random) -> tuple[int, int, int]:
    from protstore.ingest import ingest

    write_mdcath(tmp / "flip.h5", domain="flip", frames=200)
    path = tmp / "flip.zarr"
    ingest([tmp / "flip.h5"], protstore.open_store(path, mode="a"), progress=False,
           log=lambda m: None)
    chunks = sorted(p for p in (path / "proteins" / "flip").rglob("c/*") if p.is_file()) + \
        sorted(p for p in (path / "proteins" / "flip").rglob("c/*/*/*") if p.is_file())
    handled = lost = 0
    for _ in range(trials):
        chunk = rng.choice(chunks)
        original = chunk.read_bytes()
        data = bytearray(original)
        bit = rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
        chunk.write_bytes(bytes(data))
        try:
            protstore.open_store(path).protein("flip", chunks=None).load()
            read_caught = False
        except protstore.ProtstoreError:
            read_caught = True
        validate_caught = not _valid(path)
        handled, lost = (handled + 1, lost) if read_caught and validate_caught \
            else (handled, lost + 1)
        chunk.write_bytes(original)
    return trials, handled, lost


def _ingested(tmp: Path, names=("a1",), frames: int = 24) -> Path:
    from protstore.ingest import ingest

    for seed, name in enumerate(names):
        write_mdcath(tmp / f"{name}.h5", domain=name, frames=frames, seed=seed)
    path = tmp / "s.zarr"
    ingest([tmp / f"{n}.h5" for n in names], protstore.open_store(path, mode="a"),
           progress=False, log=lambda m: None)
    return path


def _flip(path: Path, rng: random.Random) -> bytes:
    original = path.read_bytes()
    data = bytearray(original)
    bit = rng.randrange(len(data) * 8)
    data[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))
    return original


def checkpoint_flips(tmp: Path, trials: int, rng: random.Random) -> tuple[int, int, int]:
    import jax

    from protstore.checkpoints import read_checkpoint, write_checkpoint

    params = {"net": {"w": np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8),
                      "b": np.arange(8, dtype=np.float32)}, "scale": np.float32(0.5)}
    opt = (np.full(3, 0.25), {"m": np.ones(8, np.float32)})
    path = tmp / "ck"
    write_checkpoint(path, params, {"kind": "checkpoint", "step": 40, "epoch": 1,
                                    "model": {"factory": "x:y", "options": {}},
                                    "val_rmse": 1.25}, opt_state=opt)
    truth = read_checkpoint(path, opt_template=opt)
    files = sorted(p for p in path.rglob("*") if p.is_file())

    def same(a, b):
        la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
        return len(la) == len(lb) and all(np.asarray(x).dtype == np.asarray(y).dtype and
                                          np.array_equal(x, y) for x, y in zip(la, lb))
    handled = lost = 0
    for _ in range(trials):
        target = rng.choice(files)
        original = _flip(target, rng)
        try:
            ck = read_checkpoint(path, opt_template=opt)
            ok = ck.attrs == truth.attrs and same(ck.params, truth.params) and \
                same(ck.opt_state, truth.opt_state)
        except protstore.ProtstoreError:
            ok = True
        handled, lost = (handled + 1, lost) if ok else (handled, lost + 1)
        target.write_bytes(original)
    return trials, handled, lost


def catalog_flips(tmp: Path, trials: int, rng: random.Random) -> tuple[int, int, int]:
    import warnings

    from protstore.errors import CatalogWarning

    path = _ingested(tmp, names=("a1",))
    truth = protstore.open_store(path).protein_doc("a1")
    (segment,) = sorted((path / "catalog").glob("*.json"))
    handled = lost = 0
    for _ in range(trials):
        original = _flip(segment, rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CatalogWarning)
            store = protstore.open_store(path)
            right = store.proteins == ["a1"] and store.protein_doc("a1") == truth
            named = segment.name in store.catalog_damage and not _valid(path)
        handled, lost = (handled + 1, lost) if right and named else (handled, lost + 1)
        segment.write_bytes(original)
    return trials, handled, lost


def edited_metadata(tmp: Path) -> tuple[int, int, int]:
    import json

    path = _ingested(tmp)
    group = path / "proteins" / "a1" / "zarr.json"
    clean = group.read_text()

    def dtype(r): r["data_type"] = "int32"
    def endian(r): next(c for c in r["codecs"] if c["name"] == "bytes")["configuration"]["endian"] = "big"  # noqa: E501
    def transpose(r): r["codecs"].insert(0, {"name": "transpose", "configuration": {"order": [2, 1, 0]}})  # noqa: E501
    def shape(r): r["shape"][0] -= 1
    handled = 0
    edits = (dtype, endian, transpose, shape)
    for edit in edits:
        meta = json.loads(clean)
        edit(meta["consolidated_metadata"]["metadata"]["R"])
        group.write_text(json.dumps(meta))
        try:
            protstore.open_store(path).protein("a1", chunks=None).load()
            refused = False
        except protstore.ProtstoreError:
            refused = True
        handled += refused and not _valid(path)
        group.write_text(clean)
    return len(edits), handled, len(edits) - handled


def stale_catalog(tmp: Path) -> tuple[int, int, int]:
    import warnings

    from protstore.errors import CatalogWarning
    from protstore.ingest import IngestOptions, ingest

    path = _ingested(tmp)
    before = set((path / "catalog").glob("*.json"))
    write_mdcath(tmp / "a1_new.h5", domain="a1", frames=10, seed=7)
    ingest([tmp / "a1_new.h5"], protstore.open_store(path, mode="a"),
           IngestOptions(overwrite=True), progress=False, log=lambda m: None)
    frames = protstore.open_store(path).protein_doc("a1")["n_frames"]
    for p in set((path / "catalog").glob("*.json")) - before:
        p.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CatalogWarning)
        read = protstore.open_store(path).protein("a1", chunks=None).sizes["frame"] == frames
        reported = not _valid(path)
        protstore.open_store(path, mode="r+").rebuild_catalog()
    repaired = protstore.open_store(path).protein_doc("a1")["n_frames"] == frames and _valid(path)
    handled = int(read and reported and repaired)
    return 1, handled, 1 - handled


GC = """
    import sys
    import protstore
    from protstore.store.versions import collect_garbage
    collect_garbage(protstore.open_store(sys.argv[1], mode="r+"), keep=1, dry_run=False)
"""


def _generations(tmp: Path, overwrites: int) -> tuple[Path, dict]:
    """A store of a1 (and b1) whose a1 was overwritten ``overwrites`` times; version -> a1's R
    as that version reads it."""
    from protstore.ingest import IngestOptions, ingest

    path = _ingested(tmp, names=("a1", "b1"))
    seen = {}
    for i in range(overwrites + 1):
        store = protstore.open_store(path)
        seen[store.version] = store.protein("a1", chunks=None).R.values.copy()
        if i < overwrites:
            write_mdcath(tmp / f"a1_{i}.h5", domain="a1", frames=20 + 4 * i, seed=10 + i)
            ingest([tmp / f"a1_{i}.h5"], protstore.open_store(path, mode="r+"),
                   IngestOptions(overwrite=True), progress=False, log=lambda m: None)
    return path, seen


def _versions_read_as_before(path: Path, seen: dict, *, may_be_gone: bool) -> bool:
    from protstore.errors import StoreError

    for version, R in seen.items():
        try:
            got = protstore.open_store(path, version=version).protein("a1", chunks=None).R.values
        except StoreError:
            if not may_be_gone:
                return False
            continue
        if got.tobytes() != R.tobytes():
            return False
    return True


def _version_trials(tmp: Path, trials: int, overwrites: int):
    """(trial, its directory, a store of :func:`_generations`, what its versions read)."""
    for i in range(trials):
        d = tmp / f"t{i}"
        d.mkdir()
        yield (i, d, *_generations(d, overwrites))


def kills_during_overwrite(tmp: Path, trials: int, rng: random.Random) -> tuple[int, int, int]:
    handled = lost = 0
    for _, d, path, seen in _version_trials(tmp, trials, 1):
        write_mdcath(d / "new.h5", domain="a1", frames=400, seed=99,
                     resnames=("MET", "ALA", "GLY", "LYS", "LEU") * 8)
        child = _child(INGEST.replace('mode="a")', 'mode="a"), IngestOptions(overwrite=True)')
                       .replace("from protstore.ingest import ingest",
                                "from protstore.ingest import IngestOptions, ingest"),
                       str(path), str(d / "new.h5"))
        time.sleep(rng.uniform(0.5, 4.0))
        child.send_signal(signal.SIGKILL)
        child.wait()
        protstore.open_store(path, mode="r+").recover_staging()
        now = protstore.open_store(path).protein("a1", chunks=None).R.values.tobytes()
        _child(INGEST, str(d / "ref.zarr"), str(d / "new.h5")).wait()  # the new copy, whole
        new = protstore.open_store(d / "ref.zarr").protein("a1", chunks=None).R.values.tobytes()
        whole = now in (list(seen.values())[-1].tobytes(), new)
        before = _versions_read_as_before(path, seen, may_be_gone=False)
        valid = _valid(path)
        if whole and before and valid:
            handled += 1
        else:
            lost += 1
            print(f"overwrite kill not handled: a1 old or new whole {whole}, earlier versions "
                  f"as before {before}, valid {valid}", file=sys.stderr)
    return trials, handled, lost


def kills_during_gc(tmp: Path, trials: int, rng: random.Random) -> tuple[int, int, int]:
    handled = lost = 0
    for i, d, path, seen in _version_trials(tmp, trials, 4):
        newest = list(seen)[-1]
        if i == 0:  # how long a whole gc takes, process start included, on a copy
            shutil.copytree(path, d / "timing.zarr")
            t0 = time.perf_counter()
            _child(GC, str(d / "timing.zarr")).wait()
            full = time.perf_counter() - t0
        t0 = time.perf_counter()
        child = _child(GC, str(path))
        time.sleep(rng.uniform(0.5 * full, full))  # the first half is mostly Python starting
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed_after = time.perf_counter() - t0
        ok = _versions_read_as_before(path, seen, may_be_gone=True) and _valid(path) \
            and _versions_read_as_before(path, {newest: seen[newest]}, may_be_gone=False)
        _child(GC, str(path)).wait()  # gc again finishes the job
        ok = ok and _versions_read_as_before(path, {newest: seen[newest]}, may_be_gone=False)
        if ok:
            handled += 1
        else:
            lost += 1
            print(f"gc killed after {killed_after:.2f} s not handled", file=sys.stderr)
    return trials, handled, lost


def disk_full(tmp: Path) -> tuple[int, int, int] | None:
    mount = tmp / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)],
                      capture_output=True).returncode:
        return None
    try:
        files = []
        for i in range(8):
            write_mdcath(tmp / f"big{i}.h5", domain=f"big{i}", frames=900, seed=i,
                         resnames=("ALA", "GLY", "LEU") * 20)
            files.append(str(tmp / f"big{i}.h5"))
        result = subprocess.run([sys.executable, "-m", "protstore.cli", "ingest", *files,
                                 "--store", str(mount / "s.zarr"), "--no-progress"],
                                capture_output=True, text=True,
                                env=dict(os.environ, PYTHONPATH=str(REPO)))
        lines = [x for x in result.stderr.splitlines() if x.strip()]
        one_line = "Traceback" not in result.stderr and all(
            x.startswith(("error:", "protstore:")) for x in lines)
        staging = mount / "s.zarr" / ".staging"
        clean = not staging.exists() or not any(staging.iterdir())
        valid = _valid(mount / "s.zarr")
        handled = int(result.returncode == 1 and one_line and clean and valid)
        if not handled:
            print(f"disk full not handled: rc {result.returncode}, one-line {one_line}, staging "
                  f"clean {clean}, valid {valid}\n{result.stderr[-2000:]}", file=sys.stderr)
        return 1, handled, 1 - handled
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--train-kills", type=int, default=3)
    parser.add_argument("--writers", type=int, default=6)
    parser.add_argument("--flips", type=int, default=40)
    parser.add_argument("--checkpoint-flips", type=int, default=200)
    parser.add_argument("--catalog-flips", type=int, default=200)
    parser.add_argument("--version-kills", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", metavar="TEXT", help="run only the faults whose name has TEXT")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, run in (
                ("kill -9 during ingest, then re-run", lambda d: kills_during_ingest(
                    d, args.kills, rng)),
                ("kill -9 during training, then --resume", lambda d: kills_during_training(
                    d, args.train_kills, rng)),
                ("concurrent ingests into a new store (ids with dots)",
                 lambda d: concurrent_writers(d, args.writers)),
                ("one flipped bit in a chunk", lambda d: bit_flips(d, args.flips, rng)),
                ("disk full (20 MiB tmpfs) during ingest", disk_full),
                ("one flipped bit in a checkpoint (chunks and documents)",
                 lambda d: checkpoint_flips(d, args.checkpoint_flips, rng)),
                ("one flipped bit in a catalog segment",
                 lambda d: catalog_flips(d, args.catalog_flips, rng)),
                ("a protein's zarr.json edited (dtype, byte order, transpose, shape)",
                 edited_metadata),
                ("an overwrite killed before its catalog entry", stale_catalog),
                ("kill -9 during an --overwrite: every earlier version still reads",
                 lambda d: kills_during_overwrite(d, args.version_kills, rng)),
                ("kill -9 during gc: versions read as before or are refused",
                 lambda d: kills_during_gc(d, args.version_kills, rng))):
            if args.only and args.only not in name:
                continue
            d = tmp / name.split()[0]
            d.mkdir(exist_ok=True)
            t0 = time.perf_counter()
            result = run(d)
            rows.append((name, result, time.perf_counter() - t0))
            shutil.rmtree(d, ignore_errors=True)
    print("| fault | tried | handled | lost | seconds |\n|---|---|---|---|---|")
    for name, result, seconds in rows:
        if result is None:
            print(f"| {name} | skipped (not permitted here) | | | |")
        else:
            print(f"| {name} | {result[0]} | {result[1]} | {result[2]} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
