"""Store versions: every commit is one; an older one reads the store, data included, as it
was; overwrites keep the old data until gc; runs, plans and evaluations record the version."""

from __future__ import annotations

import json
import warnings

import pytest

import protstore
from protstore.batching import bucket_view, plan_from_store, save_plan
from protstore.cli import main
from protstore.errors import PlanError, StoreError, StoreVersionWarning
from protstore.ingest import IngestOptions, ingest
from protstore.store import catalog as catalog_module
from protstore.store import collect_garbage, store_log
from protstore.store.versions import warn_if_changed

from helpers import write_mdcath


def _quiet(*a, **k):
    pass


def _ingest(store, *paths, overwrite=False):
    report = ingest(list(paths), store, IngestOptions(overwrite=overwrite), progress=False,
                    log=_quiet)
    assert report.ok, report.lines()


@pytest.fixture
def versioned(tmp_path):
    """A store of a1 and b1, a plan made then, and a1 overwritten with other data after."""
    write_mdcath(tmp_path / "a1.h5", domain="a1", seed=0)
    write_mdcath(tmp_path / "b1.h5", domain="b1", seed=1)
    write_mdcath(tmp_path / "a1_new.h5", domain="a1", seed=7, frames=9)
    url = tmp_path / "s.zarr"
    store = protstore.open_store(url, mode="a")
    _ingest(store, tmp_path / "a1.h5")
    _ingest(store, tmp_path / "b1.h5")
    plan = plan_from_store(store, name="p", n_buckets=1, split="frame", val_fraction=0.25)
    save_plan(store, plan)
    before = protstore.open_store(url)
    frames = {split: bucket_view(before, plan, 0, split).compute() for split in ("train", "val")}
    _ingest(protstore.open_store(url, mode="r+"), tmp_path / "a1_new.h5", overwrite=True)
    return url, plan, before.version, frames


def test_a_plan_reads_its_frames_bit_for_bit_after_an_overwrite(versioned):
    url, plan, v1, frames = versioned
    assert plan.store_version == v1
    now = protstore.open_store(url)
    assert now.version != v1 and now.version > v1
    assert now.protein_doc("a1")["n_frames"] == 27  # 3 runs x 9 frames
    with pytest.raises(PlanError, match="stale"):
        now.plan("p")  # the plan no longer describes the store as it is
    old = protstore.open_store(url, version=v1)
    assert old.version == v1 and old.protein_doc("a1")["n_frames"] == 18
    assert old.group_path("a1").startswith("generations/a1@")
    assert old.group_path("b1") == "proteins/b1"  # unchanged: read in place
    again = old.plan("p")
    for split, ds in frames.items():
        got = bucket_view(old, again, 0, split).compute()
        for name in ("R", "F"):
            assert got[name].values.tobytes() == ds[name].values.tobytes(), (split, name)
    # the random part of the id names the version too
    assert protstore.open_store(url, version=v1.split("-")[1]).version == v1


def test_an_older_version_is_read_only_and_unknown_ones_are_named(versioned):
    url, _, v1, _ = versioned
    with pytest.raises(StoreError, match="read-only"):
        protstore.open_store(url, mode="r+", version=v1)
    with pytest.raises(StoreError, match="no store version 'nope'"):
        protstore.open_store(url, version="nope")


def test_log_lists_versions_newest_first_with_their_changes(versioned, capsys):
    url, _, v1, _ = versioned
    log = store_log(protstore.open_store(url))
    assert [(v.added, v.overwritten, v.removed) for v in log] == [
        ([], ["a1"], []), (["b1"], [], []), (["a1"], [], [])]
    assert log[1].version == v1 and log[0].time >= log[1].time
    assert main(["log", str(url)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith(log[0].version)
    assert "overwritten 1 (a1)" in lines[0] and "added 1 (b1)" in lines[1]


def test_compaction_keeps_every_version_readable(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog_module, "COMPACT_AT", 2)
    url = tmp_path / "s.zarr"
    store = protstore.open_store(url, mode="a")
    seen = {}
    for i, pid in enumerate(("a1", "b1", "c1", "d1")):
        write_mdcath(tmp_path / f"{pid}.h5", domain=pid, seed=i)
        _ingest(store, tmp_path / f"{pid}.h5")
        seen[protstore.open_store(url).version] = pid
    assert len(catalog_module.segment_names(store.location)) < 4  # compacted
    for i, (version, pid) in enumerate(seen.items()):
        assert protstore.open_store(url, version=version).proteins == \
            ["a1", "b1", "c1", "d1"][:i + 1]
    assert [v.added for v in store_log(store)] == [["d1"], ["c1"], ["b1"], ["a1"]]


def test_gc_keeps_what_a_kept_version_reads_and_removes_the_rest(versioned, tmp_path):
    url, _, v1, frames = versioned
    write_mdcath(tmp_path / "a1_3.h5", domain="a1", seed=9, frames=5)
    _ingest(protstore.open_store(url, mode="r+"), tmp_path / "a1_3.h5", overwrite=True)
    kept = sorted(p.name for p in (url / "generations").iterdir())
    assert len(kept) == 2  # the data of a1 v1 and of a1 v3
    v3 = store_log(protstore.open_store(url))[1].version
    store = protstore.open_store(url, mode="r+")
    dry = collect_garbage(store, keep=2)  # keeps v3 (and v4, the newest)
    assert sorted(p.name for p in (url / "generations").iterdir()) == kept  # a dry run
    old_gen = protstore.open_store(url, version=v1).group_path("a1")
    assert dry[0] == f"gc: would remove {old_gen} (no kept version reads it)"
    assert "2 store version(s)" in dry[1]
    assert collect_garbage(store, keep=2, dry_run=False)[0].startswith("gc: removed")
    assert not (url / old_gen).exists() and len(list((url / "generations").iterdir())) == 1
    at3 = protstore.open_store(url, version=v3)
    assert at3.protein("a1", chunks=None).sizes["frame"] == 27
    with pytest.raises(StoreError, match="no store version"):
        protstore.open_store(url, version=v1)
    log = store_log(store)
    assert [v.overwritten for v in log] == [["a1"], ["a1"]]  # its changes still known
    assert collect_garbage(store, keep=2) == []


def test_gc_cli_is_a_dry_run_without_yes(versioned, capsys):
    url, _, _, _ = versioned
    assert main(["gc", str(url), "--keep", "1"]) == 0
    out = capsys.readouterr().out
    assert "gc: would remove generations/a1@" in out and "--yes" in out
    assert len(list((url / "generations").iterdir())) == 1
    assert main(["gc", str(url), "--keep-since", "2000-01-01", "--yes"]) == 0
    assert "nothing to remove" in capsys.readouterr().out  # every version is since then
    assert main(["gc", str(url), "--keep", "1", "--yes"]) == 0
    assert list((url / "generations").iterdir()) == []


def test_changed_proteins_are_warned_of(versioned):
    url, plan, v1, _ = versioned
    now = protstore.open_store(url)
    with pytest.warns(StoreVersionWarning, match=r"1 of its 2 proteins changed since \(a1\)"):
        assert warn_if_changed(now, plan.store_version, plan.proteins, "plan 'p'") == ["a1"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_changed(protstore.open_store(url, version=v1), v1, plan.proteins,
                               "plan 'p'") == []


def test_the_read_commands_take_store_version(versioned, capsys):
    url, _, v1, _ = versioned
    assert main(["info", str(url), "--store-version", v1]) == 0
    out = capsys.readouterr().out
    assert f"version      {v1}" in out and "frames       36 " in out  # 2 x 18 then
    assert main(["bucket", str(url), "--name", "old", "--store-version", v1]) == 0
    capsys.readouterr()
    doc = json.loads((url / "plans" / "old" / "zarr.json").read_text())
    assert doc["attributes"]["protstore_plan"]["store_version"] == v1
    assert doc["attributes"]["protstore_plan"]["frames"]["a1"] == 18


def test_fitted_priors_record_the_version_they_were_fitted_on(train_store, tmp_path):
    from protstore.train.priors import fit_priors_to_file

    doc = fit_priors_to_file(train_store, train_store.plan("p"), tmp_path / "priors.json")
    saved = json.loads((tmp_path / "priors.json").read_text())
    assert doc["store_version"] == saved["store_version"] == train_store.version is not None


def test_an_interrupted_overwrite_keeps_the_old_copy_as_a_generation(tmp_path):
    import os

    from protstore.store.staging import REPLACED, staging_name

    from protstore.store.layout import generation_of

    write_mdcath(tmp_path / "a1.h5", domain="a1")
    write_mdcath(tmp_path / "a1_new.h5", domain="a1", seed=3)
    url = tmp_path / "s.zarr"
    store = protstore.open_store(url, mode="a")
    _ingest(store, tmp_path / "a1.h5")
    gen = generation_of(store.protein_doc("a1"))
    _ingest(store, tmp_path / "a1_new.h5", overwrite=True)
    # a commit killed after both renames, before the old copy moved on: put it back there
    os.rename(url / "generations" / f"a1@{gen}", url / ".staging" / staging_name(REPLACED, "a1"))
    assert store.recover_staging() == [f"old copy of protein 'a1' from an interrupted replace: "
                                       f"kept as generations/a1@{gen}"]
    assert os.listdir(url / ".staging") == []
    assert (url / "generations" / f"a1@{gen}" / "zarr.json").is_file()


def test_the_same_source_written_again_is_one_generation(tmp_path):
    write_mdcath(tmp_path / "a1.h5", domain="a1")
    url = tmp_path / "s.zarr"
    store = protstore.open_store(url, mode="a")
    _ingest(store, tmp_path / "a1.h5")
    v1 = protstore.open_store(url).version
    _ingest(store, tmp_path / "a1.h5", overwrite=True)  # the same bytes again
    assert not (url / "generations").exists() or list((url / "generations").iterdir()) == []
    old = protstore.open_store(url, version=v1)
    assert old.group_path("a1") == "proteins/a1" and old.protein("a1").sizes["frame"] == 18
    assert [v.overwritten for v in store_log(store)] == [[], []]


def test_a_store_without_commits_has_no_version(tmp_path):
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    assert store.version is None and store_log(store) == []
