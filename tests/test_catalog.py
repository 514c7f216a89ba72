"""The catalog: what a store lists, kept in step by commits, compactions and repairs; format-1
stores read and migrated."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import zarr

import protstore
from protstore.batching import plan_from_store, save_plan
from protstore.ingest import IngestOptions, ingest
from protstore.store import catalog as catalog_module
from protstore.store.catalog import append_segment, read_catalog, segment_names
from protstore.location import Location
from protstore.store.verify import verify_store

from helpers import as_format_2, same_protein, write_mdcath


def _quiet(*a, **k):
    return None


def test_the_catalog_follows_commits_replacements_and_repairs(tmp_path):
    root = tmp_path / "s.zarr"
    for name, seed in (("a1", 0), ("b1", 1), ("c1", 2)):
        write_mdcath(tmp_path / f"{name}.h5", domain=name, seed=seed)
    store = protstore.open_store(root, mode="a")
    ingest([tmp_path / "a1.h5", tmp_path / "b1.h5"], store, progress=False, log=_quiet)
    write_mdcath(tmp_path / "a1_new.h5", domain="a1", frames=4, seed=5)
    report = ingest([tmp_path / "a1_new.h5", tmp_path / "c1.h5"], store,
                    IngestOptions(overwrite=True), progress=False, log=_quiet)
    assert report.replaced == ["a1"] and report.written == ["c1"]
    reopened = protstore.open_store(root)
    assert reopened.proteins == ["a1", "b1", "c1"] == store.proteins
    assert reopened.protein_doc("a1")["n_frames"] == 4 * 3  # the replacement's document
    assert reopened.protein("a1").sizes["frame"] == 12
    # the root no longer lists anything: each protein group lists its own arrays
    meta = json.loads((root / "zarr.json").read_text())
    assert "consolidated_metadata" not in meta and meta["attributes"]["protstore"][
        "format_version"] == 3
    shutil.rmtree(root / "proteins" / "b1")  # removed behind the store's back
    findings = verify_store(protstore.open_store(root))
    assert any("listed in the catalog but its group" in str(f) for f in findings)
    lines = protstore.open_store(root, mode="r+").rebuild_catalog()
    assert lines == ["catalog: dropped protein 'b1'"]
    assert protstore.open_store(root).summary().index.tolist() == ["a1", "c1"]
    assert verify_store(protstore.open_store(root)) == []


def test_a_commit_interrupted_before_its_catalog_entry_is_listed_by_the_next_ingest(
        tmp_path, monkeypatch):
    write_mdcath(tmp_path / "a1.h5", domain="a1")
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")

    def die(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies between the rename and the catalog

    with monkeypatch.context() as m:
        m.setattr(protstore.store.commits, "append_segment", die)
        with pytest.raises(KeyboardInterrupt):
            ingest([tmp_path / "a1.h5"], store, progress=False, log=_quiet)
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    assert store.proteins == []  # never a protein the catalog does not list
    assert [f.level for f in verify_store(store)] == ["warning"]
    report = ingest([tmp_path / "a1.h5"], store, progress=False, log=_quiet)
    assert report.skipped == ["a1"]
    assert protstore.open_store(tmp_path / "s.zarr").proteins == ["a1"]


def test_compaction_keeps_what_the_catalog_says_and_bounds_its_segments(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog_module, "COMPACT_AT", 4)
    loc = Location(tmp_path / "cat")
    rng = np.random.default_rng(0)
    model: dict[str, dict] = {}
    seen_during_removal = []
    remove = Location.remove

    def checked_remove(self, key, **kwargs):  # a reader in the middle of a compaction
        seen_during_removal.append(read_catalog(loc)[0] == dict(sorted(model.items())))
        return remove(self, key, **kwargs)

    monkeypatch.setattr(Location, "remove", checked_remove)
    for step in range(30):
        changes = {}
        for pid in rng.choice([f"p{i}" for i in range(8)], size=2, replace=False):
            pid = str(pid)
            changes[pid] = None if rng.random() < 0.3 else {
                "protein_id": pid, "n_atoms": int(rng.integers(5, 50)), "n_frames": step + 1}
        for pid, doc in changes.items():  # the catalog's state once the segment is in
            if doc is None:
                model.pop(pid, None)
            else:
                model[pid] = doc
        append_segment(loc, changes)
        assert read_catalog(loc)[0] == dict(sorted(model.items()))
        assert len(segment_names(loc)) <= 4
    assert seen_during_removal and all(seen_during_removal)


def test_opening_and_reading_never_lists_the_proteins(tmp_path, monkeypatch, demo_files):
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    ingest(demo_files[:2], store, progress=False, log=_quiet)
    save_plan(store, plan_from_store(store, name="p", n_buckets=1, split="none"))

    def forbidden(self):
        raise AssertionError("the proteins/ group was listed")

    monkeypatch.setattr(protstore.Store, "_protein_groups", forbidden)
    listdir = Location.listdir

    def no_protein_listing(self, key=""):
        assert not key.startswith("proteins"), key
        return listdir(self, key)

    monkeypatch.setattr(Location, "listdir", no_protein_listing)
    store = protstore.open_store(tmp_path / "s.zarr")
    pid = store.proteins[0]
    assert store.protein(pid).R.isel(frame=slice(0, 3)).values.shape[0] == 3
    assert store.bucket("p", 0).sizes["sample"] > 0


def _as_format_1(root) -> None:
    """Turn a store into what protstore < 0.6 wrote: no catalog, format_version 1, the root's
    consolidated metadata listing every node, strings for resname, chain and xyz."""
    as_format_2(root)
    shutil.rmtree(root / "catalog")
    meta = json.loads((root / "zarr.json").read_text())
    meta["attributes"]["protstore"]["format_version"] = 1
    (root / "zarr.json").write_text(json.dumps(meta))
    zarr.consolidate_metadata(str(root))


def test_a_format_1_store_is_read_as_it_is_and_migrated_on_the_first_write(tmp_path, capsys):
    from protstore.cli import main

    root = tmp_path / "s.zarr"
    for name, seed in (("a1", 0), ("b1", 1)):
        write_mdcath(tmp_path / f"{name}.h5", domain=name, seed=seed)
    ingest([tmp_path / "a1.h5"], protstore.open_store(root, mode="a"), progress=False,
           log=_quiet)
    expected = protstore.open_store(root).protein("a1").load()
    _as_format_1(root)
    old = protstore.open_store(root)
    assert old.format_version == 1 and old.proteins == ["a1"]
    assert same_protein(old.protein("a1").load(), expected)
    assert [f.level for f in verify_store(old)] == ["warning"]  # format 1: migrate
    with pytest.raises(protstore.errors.StoreError, match="format-1 store"):
        protstore.Store(root, "r+").write_attrs_group("plans/x", "k", {}, overwrite=False)
    assert main(["ingest", str(tmp_path / "b1.h5"), "--store", str(root), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "migrated from store format 1" in err and "a catalog of 1 proteins" in err
    assert "migrated to store format 3" in err  # format 1 goes on to 3 in one migration
    new = protstore.open_store(root)
    assert new.format_version == 3 and new.proteins == ["a1", "b1"]
    assert "consolidated_metadata" not in json.loads((root / "zarr.json").read_text())
    assert same_protein(new.protein("a1").load(), expected)
    assert verify_store(new) == []


def test_a_writer_with_a_stale_listing_compacts_without_losing_a_replacement(
        tmp_path, monkeypatch):
    loc = Location(tmp_path / "cat")
    doc = {"protein_id": "p", "n_atoms": 5, "n_frames": 1}
    monkeypatch.setattr(catalog_module, "COMPACT_AT", 100)
    append_segment(loc, {"p": doc})
    append_segment(loc, {"q": dict(doc, protein_id="q")})
    stale = segment_names(loc)  # what writer X listed when it opened the store
    append_segment(loc, {"p": dict(doc, n_frames=2)})  # another writer replaces p
    monkeypatch.setattr(catalog_module, "COMPACT_AT", 2)
    append_segment(loc, {"r": dict(doc, protein_id="r")}, known=stale)  # X commits, compacts
    entries = read_catalog(loc)[0]
    assert len(segment_names(loc)) == 1 and sorted(entries) == ["p", "q", "r"]
    assert entries["p"]["n_frames"] == 2
