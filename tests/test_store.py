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

from conftest import write_mdcath


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
    def _flush(self, whole_chunks_only):
        before = self.n_frames
        slow(self, whole_chunks_only)
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
    assert [f.level for f in verify_store(store)] == ["warning", "warning"]  # stale + staging
    # the next ingest cleans up and completes the interrupted protein
    store = protstore.open_store(store_path, mode="a")
    report = ingest([tmp_path / "a.h5", tmp_path / "b.h5"], store, progress=False,
                    log=lambda m: None)
    assert report.skipped == ["done1"] and report.written == ["half1"]
    store = protstore.open_store(store_path)
    assert verify_store(store) == [] and store.protein("half1").sizes["frame"] == 400


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
            size = {sh: len(Blosc("zstd", 3, code).encode(first))
                    for sh, code in (("shuffle", Blosc.SHUFFLE), ("bitshuffle", Blosc.BITSHUFFLE))}
            shuffle = array.metadata.codecs[-1].shuffle.value
            assert size[shuffle] == min(size.values()), (pid, name, size)
            picked.add(shuffle)
    assert picked == {"shuffle", "bitshuffle"}  # the demo's data wants both
