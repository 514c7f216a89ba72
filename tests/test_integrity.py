"""Every byte checked: checkpoints (chunks and documents), catalog segments, arrays' metadata,
and crafted inputs refused with a one-line error naming the file."""

import json
from pathlib import Path

import numpy as np
import pytest

from protstore.checkpoints import (CheckpointError, list_checkpoints, read_attrs,
                                   read_checkpoint, write_checkpoint)

MODEL = {"factory": "x:y", "options": {}}


def flip(path: Path, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))


def small_checkpoint(path, step=7, val_rmse=0.53125):
    params = {"a": {"w": np.arange(6, dtype=np.float32).reshape(3, 2)},
              "b": np.linspace(-1, 1, 4).astype(np.float32)}
    opt = (np.full(2, 0.25), {"m": np.ones(3, np.float32)})
    write_checkpoint(path, params, {"kind": "checkpoint", "step": step, "epoch": 0,
                                    "model": MODEL, "val_rmse": val_rmse}, opt_state=opt)
    return params, opt


def read_all(path, opt):
    ck = read_checkpoint(path, opt_template=opt)
    return ck.attrs, ck.params, ck.opt_state


def same(a, b) -> bool:
    import jax
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.shape(x) == np.shape(y)
        and np.array_equal(x, y) for x, y in zip(la, lb))


def test_every_flipped_bit_of_a_checkpoints_chunks_is_an_error(tmp_path):
    path = tmp_path / "ck"
    params, opt = small_checkpoint(path)
    chunks = sorted(p for p in path.rglob("*") if p.is_file() and p.name != "zarr.json")
    assert len(chunks) == 4
    tried = 0
    for chunk in chunks:
        n_bits = 8 * chunk.stat().st_size
        for bit in range(0, n_bits, 3):  # every third bit: each byte hit, deterministic
            flip(chunk, bit)
            with pytest.raises(CheckpointError, match="ck/(params|opt_state)/"):
                read_all(path, opt)
            flip(chunk, bit)
            tried += 1
    assert tried > 100
    attrs, got, _ = read_all(path, opt)
    assert same(got, params)


@pytest.mark.parametrize("field", ["val_rmse", "step"])
def test_every_flipped_bit_of_a_documents_value_is_an_error_naming_it(tmp_path, field):
    path = tmp_path / "ck"
    small_checkpoint(path)
    doc = path / "zarr.json"
    text = doc.read_bytes()
    value = json.dumps(read_attrs(path)[field]).encode()
    start = text.index(f'"{field}": '.encode()) + len(field) + 4
    assert text[start:start + len(value)] == value
    for bit in range(8 * start, 8 * (start + len(value))):
        flip(doc, bit)
        with pytest.raises(CheckpointError, match=f"ck: (checkpoint document field '{field}'|"
                                                  f"not a protstore checkpoint)"):
            read_attrs(path)
        warnings = []
        assert list_checkpoints(tmp_path, warn=warnings.append) == []  # best/, resume, EMA
        assert "ck" in warnings[0]
        flip(doc, bit)
    assert read_attrs(path)[field] == {"step": 7, "val_rmse": 0.53125}[field]  # restored


def test_no_flipped_bit_of_a_checkpoints_metadata_changes_what_is_read(tmp_path):
    """Any bit of any zarr.json (the root's document, the leaves' array metadata): an error, or
    exactly the checkpoint that was written (a flip zarr ignores, e.g. in a name it never uses)."""
    path = tmp_path / "ck"
    small_checkpoint(path)
    _, opt = small_checkpoint(tmp_path / "ref")
    want = read_all(tmp_path / "ref", opt)
    silent = errors = 0
    for meta in sorted(path.rglob("zarr.json")):
        for bit in range(5, 8 * meta.stat().st_size, 97):  # a deterministic sample
            flip(meta, bit)
            try:
                got = read_all(path, opt)
            except CheckpointError:
                errors += 1
            else:
                silent += not (same(got[1:], want[1:]) and {k: v for k, v in got[0].items() if
                               k not in ("created", "leaves", "fields_digest", "digest")} ==
                               {k: v for k, v in want[0].items() if
                               k not in ("created", "leaves", "fields_digest", "digest")})
            flip(meta, bit)
    assert errors > 50 and silent == 0


def test_checkpoints_without_digests_still_read_unverified(tmp_path):
    path = tmp_path / "old"
    small_checkpoint(path)
    meta = json.loads((path / "zarr.json").read_text())
    doc = meta["attributes"]["protstore_checkpoint"]
    for key in ("leaves", "fields_digest", "digest"):
        del doc[key]
    doc["version"] = 2
    (path / "zarr.json").write_text(json.dumps(meta))
    ck = read_checkpoint(path)
    assert not ck.verified and ck.params["b"].shape == (4,)
    doc["version"] = 3  # a current checkpoint whose digests are gone: damage
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="no digest"):
        read_attrs(path)


def test_copied_attrs_get_digests_of_their_own(tmp_path):
    small_checkpoint(tmp_path / "a")
    ck = read_checkpoint(tmp_path / "a")
    write_checkpoint(tmp_path / "best", {"w": np.zeros(2)}, dict(ck.attrs, kind="best"))
    assert read_checkpoint(tmp_path / "best").verified


# --- the store: catalog segments, stale entries, arrays' metadata, undecodable documents ---

def _store_with(tmp_path, names=("a1", "b1")):
    import protstore
    from protstore.ingest import ingest

    from helpers import write_mdcath

    for seed, name in enumerate(names):
        write_mdcath(tmp_path / f"{name}.h5", domain=name, seed=seed)
    root = tmp_path / "s.zarr"
    store = protstore.open_store(root, mode="a")
    ingest([tmp_path / f"{n}.h5" for n in names], store, progress=False, log=lambda *a: None)
    return root


def test_a_damaged_catalog_segment_is_named_never_trusted_and_repaired(tmp_path):
    import warnings

    import protstore
    from protstore.errors import CatalogWarning
    from protstore.store.verify import verify_store

    root = _store_with(tmp_path)
    truth = {p: protstore.open_store(root).protein_doc(p) for p in ("a1", "b1")}
    segment = sorted((root / "catalog").glob("*.json"))[0]  # one per commit: a1's
    clean = segment.read_bytes()
    n_bits = 8 * len(clean)
    for bit in range(3, n_bits, max(1, n_bits // 150)):
        flip(segment, bit)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            store = protstore.open_store(root)
            docs = {p: store.protein_doc(p) for p in store.proteins}
        # whatever the flip hit, what is read is what was committed
        assert docs == truth, f"bit {bit}"
        # and the damage is named
        assert segment.name in store.catalog_damage, f"bit {bit}"
        assert any(issubclass(w.category, CatalogWarning) and segment.name in str(w.message)
                   for w in caught), f"bit {bit}"
        segment.write_bytes(clean)
    flip(segment, 8 * (len(clean) // 2) + 1)
    store = protstore.open_store(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CatalogWarning)
        assert store.proteins == ["a1", "b1"] and store.catalog_damage and [f for f in verify_store(store)
                                         if segment.name in f.where and f.level == "error"]
        lines = protstore.open_store(root, mode="r+").rebuild_catalog()
    assert any("replaced damaged segment" in line for line in lines)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CatalogWarning)
        repaired = protstore.open_store(root)
        assert {p: repaired.protein_doc(p) for p in repaired.proteins} == truth
        assert not [f for f in verify_store(repaired) if f.level == "error"]


def test_an_overwrite_killed_before_its_catalog_entry_is_read_from_the_group(tmp_path):
    import warnings

    import protstore
    from protstore.errors import CatalogWarning
    from protstore.ingest import IngestOptions, ingest
    from protstore.store.verify import verify_store

    from helpers import write_mdcath

    root = _store_with(tmp_path)
    before = set((root / "catalog").glob("*.json"))
    write_mdcath(tmp_path / "a1_new.h5", domain="a1", frames=4, seed=9)
    ingest([tmp_path / "a1_new.h5"], protstore.open_store(root, mode="a"),
           IngestOptions(overwrite=True), progress=False, log=lambda *a: None)
    new_frames = protstore.open_store(root).protein_doc("a1")["n_frames"]
    for path in set((root / "catalog").glob("*.json")) - before:
        path.unlink()  # as if killed after the group's rename, before its catalog segment
    store = protstore.open_store(root)
    assert store.protein_doc("a1")["n_frames"] != new_frames  # the stale entry
    with pytest.warns(CatalogWarning, match="proteins/a1: the catalog's entry differs"):
        ds = store.protein("a1", chunks=None)
    assert ds.sizes["frame"] == new_frames == store.protein_doc("a1")["n_frames"]
    found = [f for f in verify_store(protstore.open_store(root)) if f.level == "error"]
    assert any("catalog's entry differs from the group's own document" in f.message
               for f in found)
    lines = protstore.open_store(root, mode="r+").rebuild_catalog()
    assert lines == ["catalog: protein 'a1': entry replaced by its group's document"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CatalogWarning)
        repaired = protstore.open_store(root)
        assert repaired.protein_doc("a1")["n_frames"] == new_frames
        assert repaired.protein("a1", chunks=None).sizes["frame"] == new_frames
        assert not [f for f in verify_store(repaired) if f.level == "error"]


@pytest.mark.parametrize("edit", ["dtype", "endian", "transpose"])
def test_an_edited_zarr_json_is_refused_on_read_and_by_validate(tmp_path, edit):
    import protstore
    from protstore.errors import StoreError
    from protstore.store.verify import verify_store

    root = _store_with(tmp_path, names=("a1",))
    group = root / "proteins" / "a1" / "zarr.json"
    meta = json.loads(group.read_text())
    r = meta["consolidated_metadata"]["metadata"]["R"]
    if edit == "dtype":
        r["data_type"] = "int32"
    elif edit == "endian":
        next(c for c in r["codecs"] if c["name"] == "bytes")["configuration"]["endian"] = "big"
    else:
        r["codecs"].insert(0, {"name": "transpose", "configuration": {"order": [2, 1, 0]}})
    group.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="proteins/a1: array R: its zarr.json"):
        protstore.open_store(root).protein("a1", chunks=None).load()
    found = [f for f in verify_store(protstore.open_store(root)) if f.level == "error"]
    assert found and all("a1" in f.where for f in found)
    assert any("array R" in f.message for f in found)


def test_documents_that_do_not_decode_name_their_file(tmp_path):
    from protstore.errors import ConfigError, DocumentError
    from protstore.location import Location
    from protstore.train.config import TrainConfig

    bad = tmp_path / "config.json"
    bad.write_bytes(b"{\"epochs\": 2,\xff")
    with pytest.raises(ConfigError, match="config.json: cannot read training config"):
        TrainConfig.from_file(bad)
    (tmp_path / "doc.json").write_text("{not json")
    with pytest.raises(DocumentError, match=r"doc.json: not a JSON document .*line 1"):
        Location(tmp_path).read_json("doc.json")


def test_the_cli_names_a_damaged_segment_in_one_line_and_repairs_it(tmp_path, capsys):
    import warnings

    from protstore.cli import main

    root = _store_with(tmp_path)
    segment = sorted((root / "catalog").glob("*.json"))[0]
    flip(segment, 8 * (len(segment.read_bytes()) // 2))
    show = warnings.showwarning
    assert main(["info", str(root)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [line for line in err if line.startswith("protstore: warning: ")]
    assert any(segment.name in line and "damaged catalog segment" in line for line in err)
    assert warnings.showwarning is show  # the session's own, back in place
    assert main(["validate", str(root), "--no-progress"]) == 1
    assert main(["validate", str(root), "--repair", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"repair: catalog: replaced damaged segment {segment.name}" in out
    assert main(["validate", str(root), "--no-progress"]) == 0


def test_a_checkpoint_on_object_storage_is_one_upload_with_its_document_last(monkeypatch):
    """On object storage a checkpoint is made in memory and its objects uploaded together, the
    root zarr.json (the document) last: a write killed before it leaves no checkpoint, only
    leftovers that the next write of that checkpoint replaces."""
    import fsspec

    from protstore.location import Location

    url = "memory://protstore-ckpt-test/run/checkpoints"
    fs = fsspec.filesystem("memory")
    uploads = []
    original = Location.write_many

    def record(self, items):
        uploads.append(sorted(items))
        return original(self, items)

    monkeypatch.setattr(Location, "write_many", record)
    params, opt = small_checkpoint(f"{url}/step_00000007")
    assert len(uploads) == 1 and "zarr.json" not in uploads[0]  # one batch, the document after
    assert {"params/a/w/c/0/0", "params/b/c/0", "opt_state/00000/c/0"} <= set(uploads[0])
    attrs, got, got_opt = read_all(f"{url}/step_00000007", opt)
    assert same(got, params) and same(got_opt, opt) and attrs["step"] == 7

    def killed(self, key, data):  # the upload dies before the document
        raise KeyboardInterrupt

    monkeypatch.setattr(Location, "write_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        small_checkpoint(f"{url}/step_00000009", step=9)
    monkeypatch.undo()
    assert [a["step"] for _, a in list_checkpoints(url, warn=lambda m: None)] == [7]
    fs.pipe_file(f"{url}/step_00000009/params/stale/zarr.json", b"{}")  # a killed write's leftover
    small_checkpoint(f"{url}/step_00000009", step=9)
    assert [a["step"] for _, a in list_checkpoints(url)] == [7, 9]
    assert not fs.exists(f"{url}/step_00000009/params/stale")
    fs.rm("memory://protstore-ckpt-test", recursive=True)
