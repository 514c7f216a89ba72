"""Selections the mdCATH way (protstore.selection): which proteins and frames a plan keeps, what
the loader and the views serve, the plan document, ingest's --select and --stride, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

import protstore
from protstore.batching import (BatchLoader, BucketPlan, LoaderConfig, PlanError, bucket_view,
                                load_plan, plan_from_store, save_plan)
from protstore.batching.plan import frame_ranges, frames_of_ranges, make_plan
from protstore.cli import main
from protstore.errors import SelectionError
from protstore.ingest import IngestOptions, ingest
from protstore.selection import FIELDS, Selection, parse_expression, ss_fractions
from protstore.schemas import check_document

from helpers import write_mdcath

FRAMES = 6  # per run
# protein -> (residues, runs); runs are stored in (temperature, replica) order
PROTEINS = {"p5": (5, ((320, 0), (320, 1), (348, 0))),
            "p8": (8, ((320, 0), (450, 0))),
            "p12": (12, ((348, 0), (348, 1)))}
RESNAMES = ("MET", "ALA", "GLY", "LYS", "SER", "LEU")


def _dssp(n_res: int, k: int) -> np.ndarray:
    """DSSP letters [FRAMES, n_res] of run k: frame f has min(f + k, n_res) residues in a helix
    ('H' or 'G'), one in a strand ('E') when room is left, the rest coil ('T', ' ')."""
    out = np.full((FRAMES, n_res), "T", dtype="U1")
    out[:, -1] = " "
    for f in range(FRAMES):
        h = min(f + k, n_res)
        out[f, :h] = ["H", "G"][f % 2]
        if h < n_res - 1:
            out[f, h] = "E"
    return out


def _write(path, pid, *, dssp=True):
    n_res, runs = PROTEINS[pid]
    letters = {run: _dssp(n_res, k) for k, run in enumerate(runs)} if dssp else None
    truth = write_mdcath(path / f"{pid}.h5", domain=pid, runs=runs, frames=FRAMES,
                         resnames=tuple(RESNAMES[i % len(RESNAMES)] for i in range(n_res)),
                         seed=len(pid) + n_res, dssp=letters)
    return truth, letters


@pytest.fixture(scope="module")
def selection_store(tmp_path_factory):
    """Three proteins of 5, 8 and 12 residues with different temperatures (all with DSSP),
    ingested; and their ground truth (CA positions and DSSP letters per run, in store order)."""
    out = tmp_path_factory.mktemp("selection")
    files, truth = [], {}
    for pid in PROTEINS:
        t, letters = _write(out, pid)
        runs = PROTEINS[pid][1]
        truth[pid] = {"ca": np.concatenate([t["ca"][r] for r in runs]),
                      "dssp": np.concatenate([letters[r] for r in runs])}
        files.append(out / f"{pid}.h5")
    store = protstore.open_store(out / "store.zarr", mode="a")
    report = ingest(files, store, progress=False, log=lambda m: None)
    assert report.ok and sorted(report.written) == sorted(PROTEINS)
    return protstore.open_store(out / "store.zarr", mode="a"), truth, files


def _kept(plan: BucketPlan) -> dict[str, list[int]]:
    return {p: plan.used_frames(p).tolist() for p in sorted(plan.proteins)}


def _runs_of(pid):
    return [(t, r) for t, r in PROTEINS[pid][1] for _ in range(FRAMES)]


def test_plans_keep_exactly_the_selected_proteins_and_frames(selection_store):
    store, truth, _ = selection_store
    every = list(range(2 * FRAMES))
    cases = {
        "n_residues <= 8": {"p5": list(range(18)), "p8": every},
        "temperature in (320, 348)": {"p5": list(range(18)), "p8": list(range(FRAMES)),
                                      "p12": every},
        "protein == 'p8' and run_frame >= 4": {"p8": [4, 5, 10, 11]},
        "n_residues > 6 and not (temperature == 450)": {"p8": list(range(FRAMES)),
                                                         "p12": every},
        "replica == 1 or temperature > 400": {"p5": list(range(6, 12)), "p8": list(range(6, 12)),
                                              "p12": list(range(6, 12))},
    }
    for expr, want in cases.items():
        plan = plan_from_store(store, selection=Selection(expr), n_buckets=2, split="none")
        assert _kept(plan) == want, expr
        assert plan.proteins and set(plan.proteins) == set(want)
        assert sum(b.n_frames for b in plan.buckets) == sum(map(len, want.values()))
    # stride: every 2nd stored frame of each run, counted from the run's start; the cap: 2
    # evenly spaced frames (first and last) of each run's frames left
    plan = plan_from_store(store, selection=Selection("temperature == 348", stride=2),
                           split="none")
    assert _kept(plan) == {"p5": [12, 14, 16], "p12": [0, 2, 4, 6, 8, 10]}
    plan = plan_from_store(store, split="none", selection=Selection("n_residues == 12", stride=2,
                                                                    max_frames_per_run=2))
    assert _kept(plan) == {"p12": [0, 4, 6, 10]}
    plan = plan_from_store(store, selection=Selection(max_frames_per_run=3), split="none")
    assert _kept(plan)["p8"] == [0, 2, 5, 6, 8, 11]
    # per-frame fields, from the ingested beads and DSSP: the frames numpy says
    rg = {p: _rg(truth[p]["ca"]) for p in PROTEINS}
    helix = {p: _fraction(truth[p]["dssp"], "HG") for p in PROTEINS}
    sheet = {p: _fraction(truth[p]["dssp"], "E") for p in PROTEINS}
    coil = {p: _fraction(truth[p]["dssp"], "T ") for p in PROTEINS}
    x = float(np.median(rg["p8"]))  # half of p8's frames, all of p12's
    for expr, mask in ((f"rg > {x!r}", {p: rg[p] > x for p in PROTEINS}),
                       ("helix >= 0.6", {p: helix[p] >= 0.6 for p in PROTEINS}),
                       ("sheet > 0 and coil < 0.5",
                        {p: (sheet[p] > 0) & (coil[p] < 0.5) for p in PROTEINS})):
        want = {p: np.flatnonzero(m).tolist() for p, m in mask.items() if m.any()}
        assert 0 < sum(map(len, want.values())) < 36 and any(  # a choice within a protein
            0 < len(f) < 2 * FRAMES for p, f in want.items() if p != "p5"), expr
        plan = plan_from_store(store, selection=Selection(expr), split="none")
        assert _kept(plan) == want, expr
    # a protein's mean: all or none of its frames
    plan = plan_from_store(store, selection=Selection("rg_mean < 10"), split="none")
    assert _kept(plan) == {"p5": list(range(18)), "p8": every}
    with pytest.raises(PlanError, match=r"keeps no frame of the 3 proteins"):
        plan_from_store(store, selection=Selection("n_residues > 1000"), split="none")


def _rg(ca: np.ndarray) -> np.ndarray:
    c = ca.astype(np.float64) - ca.astype(np.float64).mean(axis=1, keepdims=True)
    return np.sqrt((c ** 2).sum(-1).mean(-1))


def _fraction(letters: np.ndarray, codes: str) -> np.ndarray:
    return np.isin(letters, list(codes)).mean(axis=1)


def test_ingest_stores_rg_and_dssp_fractions(selection_store):
    store, truth, _ = selection_store
    readers = store.protein_readers("p8")
    np.testing.assert_allclose(readers["rg"].read_all(), _rg(truth["p8"]["ca"]), rtol=1e-5)
    letters = truth["p8"]["dssp"]
    for name, codes in (("helix", "HG"), ("sheet", "E"), ("coil", "T ")):
        np.testing.assert_allclose(readers[name].read_all(), _fraction(letters, codes),
                                   atol=1e-6)
    assert ss_fractions(np.array([[b"I", b"B", b"S", b"-"]])).tolist() == [[0.25, 0.25, 0.5]]


def test_split_applies_to_the_selected_frames_and_the_loader_serves_them_once(selection_store):
    store, _, _ = selection_store
    chosen = Selection("temperature in (320, 348)", stride=2)
    plan = plan_from_store(store, name="sel", selection=chosen, n_buckets=2, split="frame",
                           val_fraction=0.34, test_fraction=0.17, block_frames=1, seed=3)
    kept = _kept(plan)
    assert kept == {"p5": list(range(0, 18, 2)), "p8": [0, 2, 4], "p12": list(range(0, 12, 2))}
    assert plan.split.runs == {"p5": [3, 3, 3], "p8": [3], "p12": [3, 3]}
    parts = {part: {p: plan.part_frames(p, part).tolist() for p in kept}
             for part in ("train", "val", "test")}
    for p, frames in kept.items():  # the parts cut the selected frames, nothing else
        union = sorted(parts["train"][p] + parts["val"][p] + parts["test"][p])
        assert union == frames
        assert len(parts["val"][p]) == round(0.34 * len(frames))
        assert len(parts["test"][p]) == round(0.17 * len(frames))
    # buckets count and weigh only the selected frames
    for b in plan.buckets:
        assert b.n_frames == sum(len(kept[p]) for p in b.proteins)
        assert b.real_cost == sum(plan.lengths[p] * len(kept[p]) for p in b.proteins)
    save_plan(store, plan, overwrite=True)
    plan = load_plan(store, "sel")
    index = {p: i for i, p in enumerate(plan.proteins)}
    for part in ("train", "val", "test"):
        loader = BatchLoader(store, plan, LoaderConfig(batch_size=2, split=part, last="pad",
                                                       seed=1))
        for epoch in (0, 1):
            served = [(int(i), int(f)) for b in loader.epoch(epoch)
                      for i, f, m in zip(b["protein_index"], b["frame"], b["sample_mask"]) if m]
            assert sorted(served) == sorted((index[p], f) for p in kept
                                            for f in parts[part][p]), (part, epoch)
    for k, bucket in enumerate(plan.buckets):
        view = bucket_view(store, plan, k, "train", chunks=None)
        rows = list(zip(view["protein"].values.tolist(), view["frame"].values.tolist()))
        assert rows == [(p, f) for p in bucket.proteins for f in parts["train"][p]]
        pid, frame = rows[0]
        np.testing.assert_array_equal(view["R"].values[0, :plan.lengths[pid]],
                                      store.protein_readers(pid)["R"].read_all()[frame])
        assert view["temperature"].values.tolist() == \
            [float(_runs_of(p)[f][0]) for p, f in rows]


def test_plan_document_records_the_selection_and_old_plans_still_load(selection_store):
    store, _, _ = selection_store
    plan = plan_from_store(store, name="doc", split="none", selection=Selection(
        "n_residues < 10 and temperature != 450", stride=2, max_frames_per_run=2))
    doc = plan.to_doc()
    check_document(doc, "plan", "test")
    assert doc["selection"] == {"expr": "n_residues < 10 and temperature != 450", "stride": 2,
                                "max_frames_per_run": 2,
                                "frames": {"p5": [[0, 5, 4], [6, 11, 4], [12, 17, 4]],
                                           "p8": [[0, 5, 4]]}}
    json.dumps(doc, allow_nan=False)
    save_plan(store, plan, overwrite=True)
    again = load_plan(store, "doc")
    assert again == plan and again.used_frames("p5").tolist() == [0, 4, 6, 10, 12, 16]
    assert "selection: n_residues < 10 and temperature != 450, stride 2, at most 2 evenly " \
           "spaced frames per run: 8 of the 30 stored frames" in again.table()
    # a plan without a selection has no such key and uses every frame; an old document
    # (before selections and fingerprints) loads the same way
    plain = plan_from_store(store, name="plain", split="none")
    old = {k: v for k, v in plain.to_doc().items() if k != "fingerprints"}
    assert "selection" not in old
    check_document(old, "plan", "old plan")
    loaded = BucketPlan.from_doc(old)
    assert loaded.selection is None and loaded.used_frames("p12").tolist() == list(range(12))
    assert loaded.part_frames("p8", "train").tolist() == list(range(12))
    # the schema refuses a malformed record
    bad = json.loads(json.dumps(doc))
    bad["selection"]["frames"]["p5"] = [[0, 11]]
    with pytest.raises(protstore.errors.DocumentError):
        check_document(bad, "plan", "bad plan")


def test_frame_ranges_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(50):
        frames = np.flatnonzero(rng.random(rng.integers(1, 60)) < rng.random())
        assert frames_of_ranges(frame_ranges(frames)).tolist() == frames.tolist()
    assert frame_ranges(np.arange(0, 30, 5)) == [[0, 26, 5]]
    assert frame_ranges(np.array([], np.int64)) == []


def test_make_plan_selects_on_metadata_alone():
    plan = make_plan({"a": 50, "b": 120}, {"a": 8, "b": 6}, n_buckets=1, split="none",
                     runs={"a": [4, 4], "b": [6]},
                     selection=Selection("run_frames == 4", stride=3))
    assert _kept(plan) == {"a": [0, 3, 4, 7]}
    with pytest.raises(SelectionError, match=r"protein 'a': no value of 'temperature'"):
        make_plan({"a": 50}, {"a": 8}, selection=Selection("temperature > 300"))


@pytest.mark.parametrize("expr, message", [
    ("n_res < 3", "unknown field 'n_res' (text values need quotes); the fields are: protein, "
                  "n_residues"),
    ("protein == p5", "unknown field 'p5'"),
    ("__import__('os').system('true')", "a function call is not allowed"),
    ("n_residues.__class__ == 1", "attribute access (.name) is not allowed"),
    ("n_residues < @limit", "local variables (@name) are not allowed"),
    ("n_residues <", "not an expression"),
    ("n_residues + 1", "is not a condition (it gives int64 values"),
    ("protein > 3", "cannot be evaluated: '>' not supported"),
    ("temperature in 320", "cannot be evaluated"),
])
def test_bad_selections_are_one_line_errors_on_the_command_line(selection_store, capsys, expr,
                                                                message):
    store, _, _ = selection_store
    rc = main(["bucket", str(store.url), "--name", "bad", "--no-progress", "--select", expr])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"protstore: error: selection {expr!r}") and message in err


def test_bucket_cli_with_a_selection(selection_store, capsys):
    store, _, _ = selection_store
    rc = main(["bucket", str(store.url), "--name", "cli", "--no-progress", "--overwrite",
               "--select", "n_residues<=8 and temperature in (320, 348)", "--stride", "2",
               "--max-frames-per-run", "2", "--split", "none"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "selection: n_residues<=8 and temperature in (320, 348), stride 2, at most 2 " \
           "evenly spaced frames per run: 8 of the 30 stored frames" in out
    assert "keeps no frame of 1 of the store's 3 proteins" in out
    assert _kept(load_plan(store, "cli")) == {"p5": [0, 4, 6, 10, 12, 16], "p8": [0, 4]}
    with pytest.raises(SystemExit) as exc:
        main(["bucket", str(store.url), "--max-frames-per-run", "0"])
    assert exc.value.code == 2


def test_secondary_structure_without_dssp_is_a_one_line_error(tmp_path, capsys):
    _write(tmp_path, "p8", dssp=False)
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    ingest([tmp_path / "p8.h5"], store, progress=False, log=lambda m: None)
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    assert "helix" not in store.protein_readers("p8") and "rg" in store.protein_readers("p8")
    with pytest.raises(SelectionError, match=r"protein 'p8' has no 'helix' field: its source had "
                                             r"no DSSP"):
        plan_from_store(store, selection=Selection("helix > 0.2"))
    rc = main(["bucket", str(tmp_path / "s.zarr"), "--no-progress", "--select",
               "coil_mean < 0.9"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "protein 'p8' has no 'coil' field" in err
    # rg needs no DSSP
    assert _kept(plan_from_store(store, selection=Selection("rg > 0"), split="none")) == \
        {"p8": list(range(12))}


def test_ingest_select_and_stride(selection_store, tmp_path, capsys):
    _, _, files = selection_store
    url = str(tmp_path / "s.zarr")
    rc = main(["ingest", *map(str, files), "--store", url, "--no-progress",
               "--select", "temperature == 348 or n_residues == 8", "--stride", "4"])
    captured = capsys.readouterr()
    assert rc == 0
    assert "ingest: 3 written, 0 replaced, 0 skipped (already in store), 0 not selected by " \
           "--select, 0 failed, 0 frames excluded" in captured.out
    store = protstore.open_store(url)
    # p5: only its 348 K run is read; every 4th source frame (0, 4) of each run read
    docs = {p: store.protein_doc(p) for p in PROTEINS}
    assert [(r["temperature"], r["replica"], r["n_frames"]) for r in docs["p5"]["runs"]] == \
        [(348.0, 0, 2)]
    assert "320/0: not selected by --select" in captured.err
    assert docs["p8"]["n_frames"] == 4 and docs["p12"]["n_frames"] == 4
    assert docs["p8"]["frame_stride"] == 4
    assert store.protein_readers("p12")["source_frame"].read_all().tolist() == [0, 4, 0, 4]
    # proteins none of whose runs match: one line each, counted
    rc = main(["ingest", *map(str, files), "--store", str(tmp_path / "t.zarr"), "--no-progress",
               "--select", "n_residues > 6 and temperature < 400"])
    captured = capsys.readouterr()
    assert rc == 0 and "1 not selected by --select" in captured.out
    assert captured.err.count("not selected by --select 'n_residues > 6 and temperature < "
                              "400'; skipped") == 1 and "p5: not selected" in captured.err
    assert sorted(protstore.open_store(tmp_path / "t.zarr").proteins) == ["p12", "p8"]
    # the same source with another stride is not silently skipped
    rc = main(["ingest", str(files[1]), "--store", url, "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "with frame stride 4, not 1; pass --overwrite" in err
    # frame fields and the cap are a plan's; refused before anything is read
    for extra, message in ((["--select", "rg < 3"], "'rg' is not known before a protein's "
                                                    "frames are read"),
                           (["--select", "n_residues < 3 and", "--stride", "2"],
                            "not an expression")):
        rc = main(["ingest", str(files[0]), "--store", str(tmp_path / "u.zarr"),
                   "--no-progress", *extra])
        err = capsys.readouterr().err
        assert rc == 1 and err.count("\n") == 1 and message in err and "Traceback" not in err
    with pytest.raises(SelectionError, match="plan's choice"):
        ingest(files, protstore.open_store(tmp_path / "u.zarr", mode="a"),
               IngestOptions(selection=Selection(max_frames_per_run=3)), progress=False)


def test_a_plan_with_a_selection_goes_stale_when_its_protein_is_ingested_again(tmp_path):
    _write(tmp_path, "p8")
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    ingest([tmp_path / "p8.h5"], store, progress=False, log=lambda m: None)
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    save_plan(store, plan_from_store(store, name="s", selection=Selection("helix > 0.3"),
                                     split="none"))
    ingest([tmp_path / "p8.h5"], store, IngestOptions(overwrite=True,
                                                      selection=Selection(stride=2)),
           progress=False, log=lambda m: None)
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    with pytest.raises(PlanError, match=r"stale: protein 'p8' has 6 frames.*--select "
                                        r"\"helix > 0.3\" --overwrite"):
        load_plan(store, "s")


def test_the_expression_check():
    assert parse_expression("320 <= temperature <= 348 and protein in ['a', 'b']") == \
        {"temperature", "protein"}
    assert parse_expression("~(rg > 3) | (helix_mean >= 0.2) & True") == {"rg", "helix_mean"}
    for expr in ("n_residues[0] > 1", "(lambda: 1)() == 1", "n_residues == b'x'",
                 "`n residues` > 1", "n_residues > None", ""):
        with pytest.raises(SelectionError):
            parse_expression(expr)
    with pytest.raises(SelectionError, match="stride must be a positive integer"):
        Selection(stride=0)
    assert set(FIELDS) >= {"protein", "n_residues", "rg", "helix", "sheet", "coil",
                           "temperature", "replica"}
