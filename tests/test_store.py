import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import protstore
from protstore.errors import StoreError
from protstore.ingest import ingest
from protstore.store import check_protein_id
from protstore.store.verify import verify_store

from helpers import write_mdcath


def test_open_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="not a protstore"):
        protstore.open_store(tmp_path / "nothing.zarr")


def test_root_document_and_summary_are_metadata_only(tmp_path, demo_files):
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    ingest(demo_files, store, progress=False, log=lambda m: None)
    store = protstore.open_store(tmp_path / "s.zarr")
    assert store.doc["vocabulary"][8] == "HIS" and store.doc["units"]["F"] == "kcal/mol/angstrom"
    # delete every chunk: listing and the summary must still work (they read metadata only)
    for path in (tmp_path / "s.zarr" / "proteins").rglob("c"):
        import shutil
        shutil.rmtree(path)
    table = protstore.open_store(tmp_path / "s.zarr").summary()
    assert list(table.index) == store.proteins and (table["n_frames"] > 0).all()


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "a b", "x" * 200])
def test_protein_ids_are_validated(bad):
    with pytest.raises(StoreError, match="invalid protein id"):
        check_protein_id(bad)


def test_validate_reports_corrupt_and_missing_chunks(tmp_path):
    write_mdcath(tmp_path / "toy.h5", frames=30)
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    ingest([tmp_path / "toy.h5"], store, progress=False, log=lambda m: None)
    chunk = tmp_path / "s.zarr" / "proteins" / "toy1" / "R" / "c" / "0" / "0" / "0"
    chunk.write_bytes(b"garbage" * 10)
    (tmp_path / "s.zarr" / "proteins" / "toy1" / "F" / "c" / "0" / "0" / "0").unlink()
    findings = verify_store(protstore.open_store(tmp_path / "s.zarr"))
    text = "\n".join(map(str, findings))
    assert "proteins/toy1/R/c/0/0/0: corrupt chunk" in text
    assert "proteins/toy1/F/c/0/0/0: chunk file missing" in text


CHILD = textwrap.dedent("""
    import sys, time
    import protstore
    from protstore.ingest import IngestOptions, ingest
    from protstore.store.writer import ProteinWriter
    slow = ProteinWriter._flush
    def _flush(self, final):
        before = self.n_frames
        slow(self, final)
        self._wait()
        if self.n_frames > before:
            print("WROTE", flush=True)
            time.sleep(float(sys.argv[3]))
    ProteinWriter._flush = _flush
    store = protstore.open_store(sys.argv[1], mode="a")
    report = ingest(sys.argv[4:], store, IngestOptions(block_bytes=int(sys.argv[2])),
                    progress=False)
    print(report.lines(), flush=True)
    sys.exit(0 if report.ok else 1)
""")


def _child(tmp_path, store, files, sleep=0.0, block_bytes=64 << 20):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return subprocess.Popen([sys.executable, str(script), str(store), str(block_bytes),
                             str(sleep), *map(str, files)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_kill_during_ingest_leaves_a_valid_store(tmp_path):
    write_mdcath(tmp_path / "a.h5", domain="done1", frames=4)
    write_mdcath(tmp_path / "b.h5", domain="half1", frames=400, runs=((320, 0),))
    store_path = tmp_path / "s.zarr"
    # tiny chunks and blocks so that "half1" is written in many appends
    protstore.store.create_store(store_path, protstore.Encoding(chunk_bytes=2048))
    proc = _child(tmp_path, store_path, [tmp_path / "a.h5", tmp_path / "b.h5"], sleep=0.2,
                  block_bytes=4096)
    seen = 0
    while seen < 3:  # a.h5 committed (1+ writes), half1 partly written
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        seen += line.startswith("WROTE")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = protstore.open_store(store_path)
    assert store.proteins == ["done1"]  # never a half protein
    findings = verify_store(store)
    assert [f.level for f in findings] == ["warning"] and ".staging" in findings[0].where
    # the next ingest cleans up and completes the interrupted protein
    store = protstore.open_store(store_path, mode="a")
    report = ingest([tmp_path / "a.h5", tmp_path / "b.h5"], store, progress=False,
                    log=lambda m: None)
    assert report.skipped == ["done1"] and report.written == ["half1"]
    store = protstore.open_store(store_path)
    assert verify_store(store) == [] and store.protein("half1").sizes["frame"] == 400


@pytest.mark.slow
def test_concurrent_ingest_into_one_store(tmp_path):
    files = []
    for k in range(6):
        files.append(tmp_path / f"p{k}.h5")
        write_mdcath(files[-1], domain=f"prot{k}", frames=20, seed=k)
    store_path = tmp_path / "s.zarr"
    protstore.open_store(store_path, mode="a")
    # two processes, overlapping sets (p2, p3 in both)
    a = _child(tmp_path, store_path, files[:4])
    b = _child(tmp_path, store_path, files[2:])
    for proc in (a, b):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    store = protstore.open_store(store_path)
    assert store.proteins == [f"prot{k}" for k in range(6)]
    assert verify_store(store) == []
    for k in range(6):
        assert store.protein(f"prot{k}").sizes["frame"] == 60


def test_auto_shuffle_keeps_the_smaller_of_byte_and_bit_shuffle(demo_store):
    from numcodecs import Blosc

    assert demo_store.encoding.shuffle == "auto"
    picked = set()
    for pid in demo_store.proteins:
        group = demo_store.protein_group(pid)
        for name in ("R", "F"):
            array = group[name]
            first = np.ascontiguousarray(array[:array.chunks[0]].transpose(1, 2, 0))
            enc = demo_store.encoding
            size = {sh: len(Blosc(enc.cname, enc.clevel, code, blocksize=enc.block_bytes)
                            .encode(first))
                    for sh, code in (("shuffle", Blosc.SHUFFLE), ("bitshuffle", Blosc.BITSHUFFLE))}
            blosc, crc = array.metadata.to_dict()["codecs"][-2:]
            assert crc["name"] == "crc32c"
            shuffle = blosc["configuration"]["shuffle"]
            assert size[shuffle] == min(size.values()), (pid, name, size)
            picked.add(shuffle)
    assert picked == {"shuffle", "bitshuffle"}  # the demo's data wants both


def _layout_inputs(n_atoms=7):
    """(dim, values, attributes) of the per-atom coordinates, as the writer makes them: the
    string coordinates as label codes."""
    from protstore.store.layout import encode_labels

    rng = np.random.default_rng(3)
    return {"resname": ("atom", *encode_labels(["ALA", "GLY", "HIS", "CYS", "TRP", "MET",
                                                "LYS"][:n_atoms])),
            "species": ("atom", rng.integers(0, 20, n_atoms).astype(np.int32), {}),
            "resid": ("atom", np.arange(1, n_atoms + 1, dtype=np.int32), {}),
            # two chains: codes all 0 (zarr's fill value) would be a chunk zarr does not write
            # (protstore writes every chunk: a missing one is damage)
            "chain": ("atom", *encode_labels(["A"] * 4 + ["B"] * (n_atoms - 4))),
            "xyz": ("xyz", *encode_labels(["x", "y", "z"]))}


def test_layout_is_the_one_xarray_writes(tmp_path):
    """The writer makes the group with zarr directly; it must be what ``Dataset.to_zarr``
    writes for the same Dataset (xarray's conventions), file for file."""
    import warnings

    import xarray as xr
    import zarr

    from protstore.store.layout import Encoding
    from protstore.units import UNITS
    from protstore.store.writer import _create_layout, _create_vectors

    per_atom, encoding, n_frames, chunk = _layout_inputs(), Encoding(), 50, 11
    first = {name: np.random.default_rng(k).normal(size=(chunk, 7, 3)).astype(np.float32)
             for k, name in enumerate("RF")}
    group, _, _ = _create_layout(tmp_path / "direct", n_frames, per_atom, encoding)
    _create_vectors(group, n_frames, chunk, encoding, first)
    vec, empty = ("frame", "atom", "xyz"), np.empty((0, 7, 3), np.float32)
    template = xr.Dataset(
        {"R": (vec, empty, {"units": UNITS["R"]}), "F": (vec, empty, {"units": UNITS["F"]})},
        coords={"temperature": ("frame", np.empty(0, np.float32), {"units": "kelvin"}),
                "replica": ("frame", np.empty(0, np.int32)),
                "source_frame": ("frame", np.empty(0, np.int32)), **per_atom})
    enc = {**{name: {"chunks": (chunk, 7, 3), "_FillValue": None,
                     **encoding.codecs_for_vectors(first[name])} for name in ("R", "F")},
           "temperature": {"chunks": (1 << 16,), "_FillValue": None},
           "replica": {"chunks": (1 << 16,)}, "source_frame": {"chunks": (1 << 16,)}}
    for name in ("temperature", "replica", "source_frame", *per_atom):
        enc.setdefault(name, {}).update(encoding.codecs_for_coordinates())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        template.to_zarr(tmp_path / "xarray", zarr_format=3, consolidated=False, encoding=enc)
    group = zarr.open_group(tmp_path / "xarray", mode="r+")
    for name in ("R", "F", "temperature", "replica", "source_frame"):
        group[name].resize((n_frames, *group[name].shape[1:]))
    files = {p.relative_to(tmp_path / "xarray") for p in (tmp_path / "xarray").rglob("*")
             if p.is_file()}
    assert files == {p.relative_to(tmp_path / "direct") for p in (tmp_path / "direct").rglob("*")
                     if p.is_file()}
    assert {f.parts[0] for f in files if "c" in f.parts} == {"resname", "species", "resid",
                                                             "chain", "xyz"}  # data too
    for f in files:
        assert (tmp_path / "direct" / f).read_bytes() == (tmp_path / "xarray" / f).read_bytes(), f


@pytest.mark.parametrize("transpose", [True, False])
def test_chunk_writer_writes_what_zarr_writes(tmp_path, transpose):
    import zarr

    from protstore.store.chunks import ChunkWriter
    from protstore.store.layout import Encoding

    data = np.random.default_rng(0).normal(size=(23, 5, 3)).astype(np.float32)
    codecs = Encoding(transpose=transpose).codecs_for_vectors(data[:10])

    def array(name):
        return zarr.create_array(tmp_path / f"{name}.zarr", shape=data.shape, chunks=(10, 5, 3),
                                 dtype="float32", fill_value=np.nan, **codecs)

    by_zarr, direct = array("zarr"), ChunkWriter(array("direct"))
    by_zarr[:] = data
    assert direct.direct is not None
    for c in range(3):  # the last chunk is partial: padded with the fill value, as zarr does
        direct.write(c, data[10 * c:10 * c + 10])
    for c in range(3):
        key = f"c/{c}/0/0"
        assert (tmp_path / "direct.zarr" / key).read_bytes() == \
            (tmp_path / "zarr.zarr" / key).read_bytes()
    assert direct.array[:].tobytes() == data.tobytes()
    with pytest.raises(IndexError):
        direct.write(2, data[:10])  # frames 20-29 of 23
    # layouts it does not know go through zarr
    mem = ChunkWriter(zarr.create_array(zarr.storage.MemoryStore(), shape=(4, 2), chunks=(3, 2),
                                        dtype="int32"))
    assert mem.direct is None and mem.write(1, np.ones((1, 2), np.int32)) is None
    np.testing.assert_array_equal(mem.array[:], [[0, 0], [0, 0], [0, 0], [1, 1]])


def test_the_shuffle_is_the_only_difference_the_first_chunk_makes(tmp_path):
    import json

    from protstore.store.layout import Encoding
    from protstore.store.writer import _create_layout, _create_vectors

    noise = np.random.default_rng(0).normal(size=(10, 7, 3)).astype(np.float32)
    meta = {}
    for shuffle in ("shuffle", "bitshuffle"):
        group, _, _ = _create_layout(tmp_path / shuffle, 40, _layout_inputs(), Encoding())
        _create_vectors(group, 40, 10, Encoding(shuffle=shuffle), {"R": noise, "F": noise})
        meta[shuffle] = json.loads((tmp_path / shuffle / "R" / "zarr.json").read_text())
        assert meta[shuffle]["codecs"][-2]["configuration"]["shuffle"] == shuffle
    meta["shuffle"]["codecs"][-2]["configuration"]["shuffle"] = "bitshuffle"
    assert meta["shuffle"] == meta["bitshuffle"]


def test_protein_group_metadata_is_what_zarr_consolidates(tmp_path):
    import json
    import shutil
    import warnings

    import zarr

    write_mdcath(tmp_path / "a1.h5", domain="a1")
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    ingest([tmp_path / "a1.h5"], store, progress=False, log=lambda m: None)
    group = tmp_path / "s.zarr" / "proteins" / "a1"
    ours = json.loads((group / "zarr.json").read_text())
    assert set(ours["consolidated_metadata"]["metadata"]) >= {"R", "F", "species", "temperature"}
    shutil.copytree(group, tmp_path / "copy")
    (tmp_path / "copy" / "zarr.json").write_text(json.dumps({**ours, "consolidated_metadata": None}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(tmp_path / "copy"))
    assert json.loads((tmp_path / "copy" / "zarr.json").read_text()) == ours


@pytest.mark.parametrize("pid", ["dot.id", "a.b.c", "x.1.deadbeef", "plain"])
def test_staging_names_parse_back_whatever_the_id(pid):
    from protstore.store.staging import REPLACED, WRITE, parse_staging, staging_name

    for kind in (WRITE, REPLACED):
        info = parse_staging(staging_name(kind, pid))
        assert (info.kind, info.protein_id, info.pid) == (kind, pid, os.getpid())
        assert not info.foreign
    # names written by protstore < 0.5, read from the right
    assert parse_staging(f"{pid}.123.0a1b2c3d").protein_id == pid
    legacy = parse_staging(f"{pid}.replaced.0a1b2c3d")
    assert (legacy.kind, legacy.protein_id) == (REPLACED, pid)
    assert parse_staging("something-else") is None


def test_cleanup_spares_live_and_foreign_writers_of_dotted_ids(tmp_path):
    from protstore.store.staging import WRITE, staging_name

    write_mdcath(tmp_path / "toy.h5", domain="dot.id", frames=8)
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    staging = tmp_path / "s.zarr" / ".staging"
    staging.mkdir()
    live = staging / staging_name(WRITE, "dot.id")  # this process: alive
    foreign = staging / "write@another-host.example@1@0a1b2c3d@dot.id"
    dead = staging / f"write@{live.name.split('@')[1]}@999999999@0a1b2c3d@dot.id"
    for entry in (live, foreign, dead):
        (entry / "R").mkdir(parents=True)
    report = ingest([tmp_path / "toy.h5"], store, progress=False, log=lambda m: None)
    assert report.written == ["dot.id"]
    assert live.is_dir() and foreign.is_dir() and not dead.exists()
    assert sorted(store.recover_staging()) == []


def test_an_interrupted_overwrite_of_a_dotted_id_is_restored(tmp_path):
    from protstore.store.staging import REPLACED, staging_name

    write_mdcath(tmp_path / "toy.h5", domain="dot.id", frames=8)
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    ingest([tmp_path / "toy.h5"], store, progress=False, log=lambda m: None)
    before = protstore.open_store(tmp_path / "s.zarr").protein("dot.id").load()
    # the state a kill between the two renames of an --overwrite leaves behind
    (tmp_path / "s.zarr" / ".staging").mkdir(exist_ok=True)
    os.rename(tmp_path / "s.zarr" / "proteins" / "dot.id",
              tmp_path / "s.zarr" / ".staging" / staging_name(REPLACED, "dot.id"))
    done = protstore.open_store(tmp_path / "s.zarr", mode="a").recover_staging()
    assert done == ["restored protein 'dot.id' from an interrupted replace"]
    after = protstore.open_store(tmp_path / "s.zarr").protein("dot.id").load()
    assert after.identical(before)


def test_a_writer_whose_staging_group_vanished_commits_nothing(tmp_path, monkeypatch):
    import shutil

    from protstore.ingest import IngestOptions
    from protstore.store import Store

    write_mdcath(tmp_path / "toy.h5", domain="dot.id", frames=30)
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    original = Store.commit

    def commit_after_a_cleaner(self, writer, **kwargs):
        shutil.rmtree(writer.root / "F")  # a buggy cleaner removes part of the group
        return original(self, writer, **kwargs)

    monkeypatch.setattr(Store, "commit", commit_after_a_cleaner)
    report = ingest([tmp_path / "toy.h5"], store, IngestOptions(), progress=False,
                    log=lambda m: None)
    assert not report.written and "vanished before the commit" in next(iter(report.failed.values()))
    assert protstore.open_store(tmp_path / "s.zarr").proteins == []


def test_a_flipped_bit_anywhere_in_a_chunk_is_detected(tmp_path):
    from protstore.errors import ChunkError
    from protstore.store.chunks import Scratch

    write_mdcath(tmp_path / "toy.h5", frames=30)
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    ingest([tmp_path / "toy.h5"], store, progress=False, log=lambda m: None)
    assert store.encoding.checksum
    group = tmp_path / "s.zarr" / "proteins" / "toy1"
    clean = protstore.open_store(tmp_path / "s.zarr").protein("toy1", chunks=None).load()
    rng = np.random.default_rng(0)
    for name, key in (("R", "c/0/0/0"), ("F", "c/0/0/0"), ("resid", "c/0"),
                      ("temperature", "c/0")):
        chunk = group / name / key
        original = chunk.read_bytes()
        for _ in range(5):
            data = bytearray(original)
            bit = int(rng.integers(len(data) * 8))
            data[bit // 8] ^= 1 << (bit % 8)
            chunk.write_bytes(bytes(data))
            with pytest.raises(ChunkError, match=f"toy1/{name} chunk 0: corrupt chunk"):
                protstore.open_store(tmp_path / "s.zarr").protein("toy1", chunks=None).load()
            reader = protstore.open_store(tmp_path / "s.zarr").protein_readers("toy1")[name]
            with pytest.raises(ChunkError, match="corrupt chunk"):  # the loader's way
                reader.read(0, Scratch())
            findings = verify_store(protstore.open_store(tmp_path / "s.zarr"))
            assert any(f.level == "error" and f"toy1/{name}" in f.where for f in findings)
        chunk.write_bytes(original)
    again = protstore.open_store(tmp_path / "s.zarr").protein("toy1", chunks=None).load()
    assert again.identical(clean)


def test_validate_checks_listing_and_plans_both_ways(tmp_path, capsys):
    from protstore.batching import plan_from_store, save_plan
    from protstore.cli import main

    for i, domain in enumerate(("aa1", "bb2")):
        write_mdcath(tmp_path / f"{domain}.h5", domain=domain, frames=8, seed=i)
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    ingest([tmp_path / "aa1.h5", tmp_path / "bb2.h5"], store, progress=False, log=lambda m: None)
    save_plan(store, plan_from_store(store, name="p", n_buckets=1, split="none"))
    assert main(["validate", str(tmp_path / "s.zarr"), "--no-progress"]) == 0
    (tmp_path / "s.zarr" / "proteins" / "bb2" / "zarr.json").unlink()
    assert main(["validate", str(tmp_path / "s.zarr"), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "proteins/bb2: listed in the catalog but its group" in out
    assert "proteins/bb2: a protein directory without zarr.json" in out
    assert "plans/p: names protein 'bb2', which is not in the store" in out
    assert main(["validate", str(tmp_path / "s.zarr"), "--repair", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "listed in the catalog" not in out and "names protein 'bb2'" in out


def test_a_write_that_fails_midway_leaves_no_staging_group(tmp_path, monkeypatch):
    import errno
    import time

    from protstore.ingest import IngestOptions
    from protstore.store.chunks import ChunkWriter

    original = ChunkWriter.write

    def write(self, c, data):
        if self.array.basename == "F" and c == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        if self.array.basename == "F" and c > 1:
            time.sleep(0.05)  # still in flight when the first failure is raised
        return original(self, c, data)

    monkeypatch.setattr(ChunkWriter, "write", write)
    write_mdcath(tmp_path / "toy.h5", frames=100, resnames=("ALA", "GLY", "LEU") * 10)
    protstore.store.create_store(tmp_path / "s.zarr", protstore.Encoding(chunk_bytes=4096))
    report = ingest([tmp_path / "toy.h5"], protstore.open_store(tmp_path / "s.zarr", mode="a"),
                    IngestOptions(), progress=False, log=lambda m: None)
    assert "No space left on device" in next(iter(report.failed.values()))
    time.sleep(0.3)  # anything still in flight would have landed by now
    staging = tmp_path / "s.zarr" / ".staging"
    assert not staging.exists() or not any(staging.iterdir())
    assert protstore.open_store(tmp_path / "s.zarr").proteins == []


def test_store_creation_refuses_foreign_directories_untouched_and_finishes_interrupted_ones(
        tmp_path):
    from protstore.store import create_store

    foreign = tmp_path / "foreign"
    (foreign / "proteins").mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a protstore .*notes.txt"):
        create_store(foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt", "proteins"]
    # what a kill during creation leaves: the skeleton without the root zarr.json
    half = tmp_path / "half.zarr"
    (half / "proteins").mkdir(parents=True)
    (half / "proteins" / "zarr.json").write_text("{}")
    (half / ".creating-0a1b2c3d").mkdir()
    store = protstore.open_store(half, mode="a")
    assert store.proteins == [] and not (half / ".creating-0a1b2c3d").exists()
    with pytest.raises(StoreError, match="not a protstore"):
        protstore.open_store(tmp_path / "missing.zarr", mode="r+")
    assert not (tmp_path / "missing.zarr").exists()
