"""Plain xarray's idiom and a CLI ingest at mdCATH's size: ``xr.open_zarr(STORE,
group="proteins/<id>")`` of one protein, and what a ``protstore ingest`` of one file costs in a
store of 5,398 proteins beyond the same ingest into an empty store. Prints a table
(docs/performance.md keeps the latest).

    python benchmarks/bench_open.py [--proteins 5398] [--work DIR]

The store is made cheaply: one tiny protein (5 residues, 4 frames) is ingested, then copied
under new ids (its group document patched, the chunk files hard-linked) and the copies listed
in the catalog in one segment: what thousands of ingests leave behind, in about a minute.
Times are medians (in this process, warm; the CLI in child processes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import protstore  # noqa: E402
from helpers import write_mdcath  # noqa: E402
from protstore.ingest import ingest  # noqa: E402
from protstore.store.catalog import append_segment  # noqa: E402
from protstore.location import Location  # noqa: E402
from protstore.store import create_store  # noqa: E402
from bench_scale import _median  # noqa: E402


def build(store: Path, work: Path, n: int) -> str:
    """A store of ``n`` copies of one tiny protein; returns the template's id."""
    write_mdcath(work / "t0.h5", domain="t0", frames=2, runs=((320, 0), (348, 0)))
    ingest([work / "t0.h5"], protstore.open_store(store, mode="a"), progress=False,
           log=lambda m: None)
    src = store / "proteins" / "t0"
    meta = json.loads((src / "zarr.json").read_text())
    entries = {}
    for k in range(1, n):
        pid = f"d{k:05d}"
        dest = store / "proteins" / pid
        shutil.copytree(src, dest, copy_function=os.link)
        (dest / "zarr.json").unlink()  # the one file that differs: written, not linked
        doc = dict(meta["attributes"]["protstore_protein"], protein_id=pid)
        (dest / "zarr.json").write_text(json.dumps(
            {**meta, "attributes": {**meta["attributes"], "protstore_protein": doc}}))
        entries[pid] = doc
    append_segment(Location(store), entries)
    return "t0"


def _cli_ingest(path: Path, store: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "protstore.cli", "ingest", str(path), "--store",
                    str(store), "--no-progress"], check=True, capture_output=True,
                   env=dict(os.environ, PYTHONPATH=str(REPO)))
    return time.perf_counter() - t0


FIRST_CALL = """
import sys, time, warnings
import xarray as xr
warnings.simplefilter("ignore")
t0 = time.perf_counter()
xr.open_zarr(sys.argv[1], group=sys.argv[2])
print(time.perf_counter() - t0)
"""


def open_figures(store: Path, pid: str, repeat: int = 7) -> dict[str, tuple[float, list[str]]]:
    """Median seconds (warm, in this process) and the warnings given, of each way plain
    xarray opens one protein; and the first call of a fresh process."""
    import xarray as xr

    ways = {
        '`xr.open_zarr(STORE, group="proteins/<id>")`':
            lambda: xr.open_zarr(store, group=f"proteins/{pid}"),
        "the same, `consolidated=False`":
            lambda: xr.open_zarr(store, group=f"proteins/{pid}", consolidated=False),
        '`xr.open_zarr("STORE/proteins/<id>")`': lambda: xr.open_zarr(store / "proteins" / pid),
    }
    out = {}
    for name, fn in ways.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seconds = _median(fn, repeat)
        out[name] = (seconds, sorted({f"{w.category.__name__}: "
                                      f"{str(w.message).splitlines()[0][:60]}..."
                                      for w in caught}))
    first = subprocess.run([sys.executable, "-c", FIRST_CALL, str(store), f"proteins/{pid}"],
                           check=True, capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(REPO)))
    out["the first, in a fresh process (imports and zarr's event loop included)"] = (
        float(first.stdout), [])
    return out


def ingest_overhead(big: Path, work: Path, repeat: int = 5) -> dict[str, tuple[float, float]]:
    """Median seconds of ingesting one new file into ``big`` and into an empty store: in this
    process (``open_store`` + ``ingest``), and the CLI's wall time."""
    times = {k: [] for k in ("big", "empty", "big cli", "empty cli")}
    warm = work / "warm.h5"  # the process's first ingest pays for imports and thread pools
    write_mdcath(warm, domain="warm", frames=2, runs=((320, 0), (348, 0)))
    ingest([warm], protstore.open_store(work / "warm.zarr", mode="a"), progress=False,
           log=lambda m: None)
    for r in range(repeat):
        for how in ("", "cli"):  # the empty stores exist: creating one is not ingesting
            create_store(work / f"empty{how}{r}.zarr")
    for r in range(repeat):
        for kind in ("empty", "big"):
            for how in ("", " cli"):
                path = work / f"{kind}{how.strip()}{r}.h5"
                write_mdcath(path, domain=path.stem, frames=2, runs=((320, 0), (348, 0)),
                             seed=r + 1)
                store = big if kind == "big" else work / f"empty{how.strip()}{r}.zarr"
                if how:
                    times[kind + how].append(_cli_ingest(path, store))
                    continue
                t0 = time.perf_counter()
                ingest([path], protstore.open_store(store, mode="a"), progress=False,
                       log=lambda m: None)
                times[kind].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"in process": (med["big"], med["empty"]), "CLI wall": (med["big cli"],
                                                                   med["empty cli"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proteins", type=int, default=5398)
    ap.add_argument("--work", type=Path, default=None, help="keep the store here")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-open-"))
    work.mkdir(parents=True, exist_ok=True)
    store = work / "big.zarr"
    t0 = time.perf_counter()
    pid = "t0" if (store / "zarr.json").exists() else build(store, work, args.proteins)
    built = time.perf_counter() - t0
    n = len(protstore.open_store(store))
    opens = open_figures(store, pid)
    ingests = ingest_overhead(store, work)  # also makes warm.zarr, a store of one protein
    first = subprocess.run([sys.executable, "-c", FIRST_CALL, str(work / "warm.zarr"),
                            "proteins/warm"], check=True, capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(REPO)))
    opens["the same first call, in a store of 1 protein"] = (float(first.stdout), [])
    print(f"# {n:,} proteins (store made in {built:.0f} s)")
    print("| figure | measured | warnings | target |")
    print("|---|---|---|---|")
    for name, (seconds, caught) in opens.items():
        target = "" if name.startswith("the") and "first" in name else "< 50 ms, no warning"
        print(f"| {name} | {1e3 * seconds:.1f} ms | {'; '.join(caught) or 'none'} | {target} |")
    for name, (big, empty) in ingests.items():
        print(f"| ingest of 1 file, {name}: {n:,} proteins / empty store | {big:.3f} s / "
              f"{empty:.3f} s ({big - empty:+.3f} s) | | < +0.2 s |")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
