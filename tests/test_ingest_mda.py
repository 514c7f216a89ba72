"""Ingest of MD engines' own files through MDAnalysis, on the force-carrying files that
MDAnalysisTests ships: GROMACS TRR + TPR and H5MD + TPR (cobrotoxin, 62 residues in water,
3 frames), Amber NetCDF + PRMTOP (posfor, 29 residues in vacuum, 2 frames)."""

import sys
import warnings

import numpy as np
import pytest

import protstore
from protstore.cli import main
from protstore.errors import InputError
from protstore.ingest import IngestOptions, ingest
from protstore.ingest.mda import open_md

mda = pytest.importorskip("MDAnalysis")
datafiles = pytest.importorskip("MDAnalysisTests.datafiles")

CASES = {  # id: topology, trajectory, MDAnalysis reader
    "trr": (datafiles.TPR_xvf, datafiles.TRR_xvf, "TRR"),
    "h5md": (datafiles.TPR_xvf, datafiles.H5MD_xvf, "H5MD"),
    "amber-ncdf": (datafiles.PFncdf_Top, datafiles.PFncdf_Trj, "NCDF"),
}


def _ingest(tmp_path, files, **opts):
    lines = []
    store = protstore.open_store(tmp_path / "s.zarr", mode="a")
    report = ingest(files, store, IngestOptions(**opts), progress=False, log=lines.append)
    return protstore.open_store(tmp_path / "s.zarr"), report, lines


def _reference(topology, trajectory):
    """CA positions (Å) and per-residue force sums (kcal/mol/Å) of every frame, computed here
    with MDAnalysis and NumPy alone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(topology, trajectory)
    protein = u.select_atoms("protein")
    ca = protein.select_atoms("name CA")
    residue = protein.resindices - protein.resindices.min()
    R, F = [], []
    for ts in u.trajectory:
        R.append(ca.positions.copy())
        sums = np.zeros((protein.n_residues, 3))
        np.add.at(sums, residue, protein.forces.astype(np.float64))  # kJ/mol/Å
        F.append(sums / 4.184)
    return (np.array(R), np.array(F).astype(np.float32), protein.residues)


@pytest.mark.parametrize("case", CASES)
def test_stored_beads_equal_an_independent_mdanalysis_computation(tmp_path, case):
    topology, trajectory, reader = CASES[case]
    store, report, lines = _ingest(tmp_path, [trajectory], topology=topology, temperature=300.0)
    pid = store.proteins[0]
    assert report.written == [pid] and report.ok and not report.excluded
    R, F, residues = _reference(topology, trajectory)
    ds = store.protein(pid)
    np.testing.assert_array_equal(ds.R.values, R)  # the CA atoms' float32 coordinates, as read
    # one float32 rounding of the float64 sum on both sides
    np.testing.assert_allclose(ds.F.values, F, rtol=1e-6, atol=1e-6 * np.abs(F).max())
    np.testing.assert_array_equal(ds.resid.values, residues.resids)
    # canonical names (Amber's HIE is HIS)
    assert list(ds.resname.values) == [protstore.vocab.canonical_resname(n)
                                       for n in residues.resnames]
    assert set(ds.temperature.values) == {300.0}
    doc = store.protein_doc(pid)
    assert doc["n_frames"] == len(R) and doc["excluded_frames"] == []
    assert doc["source_units"] == {"length": "angstrom", "force": "kJ/mol/angstrom",
                                   "declared": True}
    assert doc["cg_map"]["name"] == "ca-aggregate"
    formats = [(s["format"], s["entry"]) for s in doc["sources"]]
    assert formats == [("mdanalysis-trajectory", reader), ("mdanalysis-topology", None)]
    assert [s["path"] for s in doc["sources"]] == [str(trajectory), str(topology)]
    assert all(s["checksum"].startswith("xxh3_128:") for s in doc["sources"])
    if case == "amber-ncdf":
        # 2 frames x 28 bonds: too few for the bond mean-force identity to be significant;
        # the document says why it did not decide (declared units: nothing refused)
        assert doc["unit_check"]["ratio"] is None
        assert "not significant (56 bonded pairs" in doc["unit_check"]["note"]
    else:
        # 3 frames x 61 bonds of a solvated protein at 300 K: the forces converted from
        # GROMACS's kJ/mol/nm agree with physics in kcal/mol/Å
        assert 0.8 < doc["unit_check"]["ratio"] < 1.25
        assert any("18467 atoms outside select_atoms('protein')" in line for line in lines)


def test_reingest_of_the_same_files_is_skipped(tmp_path):
    topology, trajectory, _ = CASES["amber-ncdf"]
    _ingest(tmp_path, [trajectory], topology=topology, temperature=300.0)
    _, report, _ = _ingest(tmp_path, [trajectory], topology=topology, temperature=300.0)
    assert report.skipped == ["posfor"] and report.ok


def test_a_trajectory_without_forces_is_refused_in_one_line(tmp_path):
    # Amber NetCDF of alanine dipeptide in water: positions only
    with pytest.raises(InputError, match=r"bala\.ncdf: the trajectory stores no forces") as exc:
        open_md(datafiles.NCDF, topology=datafiles.PRMncdf)
    assert "\n" not in str(exc.value)
    store, report, _ = _ingest(tmp_path, [datafiles.NCDF], topology=datafiles.PRMncdf)
    assert store.proteins == [] and "stores no forces" in report.failed[str(datafiles.NCDF)]


def test_bad_input_is_one_line_not_a_traceback(tmp_path):
    topology, trajectory, _ = CASES["amber-ncdf"]
    with pytest.raises(InputError, match="needs its topology: give --topology FILE"):
        open_md(trajectory, topology=None)
    with pytest.raises(InputError, match="no such topology file"):
        open_md(trajectory, topology=tmp_path / "missing.prmtop")
    with pytest.raises(InputError, match=r"MDAnalysis cannot read it \(") as exc:
        open_md(trajectory, topology=datafiles.TPR_xvf)  # another system's atoms
    assert "\n" not in str(exc.value)
    with pytest.raises(InputError, match=r"declares its unit .*--force-units applies only"):
        open_md(trajectory, topology=topology, force_units="kJ/mol/nm")
    truncated = tmp_path / "cut.trr"
    truncated.write_bytes(open(CASES["trr"][1], "rb").read()[:1_000_000])
    with pytest.raises(InputError, match=r"cut\.trr.*MDAnalysis cannot read it") as exc:
        open_md(truncated, topology=CASES["trr"][0])  # MDAnalysis scans a TRR's frames on open
    assert "\n" not in str(exc.value)


def test_missing_mdanalysis_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "MDAnalysis", None)  # import MDAnalysis -> ImportError
    with pytest.raises(InputError, match=r"pip install 'protstore\[mda\]'"):
        open_md(CASES["trr"][1], topology=CASES["trr"][0])


def test_without_temperature_frames_are_stored_unknown_as_for_npz(tmp_path):
    topology, trajectory, _ = CASES["trr"]
    store, report, lines = _ingest(tmp_path, [trajectory], topology=topology)
    assert report.written == ["cobrotoxin"]
    doc = store.protein_doc("cobrotoxin")
    assert doc["temperatures"] == [None]
    assert np.isnan(store.protein("cobrotoxin").temperature.values).all()
    assert any("stores no temperature" in line and "--temperature K" in line for line in lines)
    # the bond identity gives the temperature the forces imply: the run's 300 K
    assert "implies 30" in doc["unit_check"]["note"]
    assert len(doc["unit_check"]["unknown_temperature_sums"]) == 7


def test_block_size_does_not_change_the_beads(tmp_path):
    topology, trajectory, _ = CASES["trr"]
    source, = open_md(trajectory, topology=topology, temperature=300.0)
    whole = next(iter(source.blocks(100)))
    pieces = list(source.blocks(1))
    assert [len(b.R) for b in pieces] == [1, 1, 1]
    np.testing.assert_array_equal(np.concatenate([b.R for b in pieces]), whole.R)
    np.testing.assert_array_equal(np.concatenate([b.F for b in pieces]), whole.F)
    assert [int(b.source_frame[0]) for b in pieces] == [0, 1, 2]
    assert list(source.chain) == ["A"] * 62  # the TPR's chain ID


def test_cli_ingest_and_validate(tmp_path, capsys):
    topology, trajectory, _ = CASES["trr"]
    store = str(tmp_path / "S.zarr")
    assert main(["ingest", str(trajectory), "--topology", str(topology), "--temperature", "300",
                 "--store", store, "--id", "cbtx", "--no-progress"]) == 0
    assert "1 written" in capsys.readouterr().out
    assert main(["validate", store]) == 0
    assert protstore.open_store(store).proteins == ["cbtx"]
    # an explicit --format reads a file whose suffix says nothing
    odd = tmp_path / "run.data"
    odd.write_bytes(open(trajectory, "rb").read())
    assert main(["ingest", str(odd), "--topology", str(topology), "--format", "TRR",
                 "--temperature", "300", "--store", store, "--no-progress"]) == 0
    assert protstore.open_store(store).proteins == ["cbtx", "run"]
    # no topology: one line naming the file and the option
    capsys.readouterr()
    assert main(["ingest", str(trajectory), "--store", store, "--no-progress"]) == 1
    out = capsys.readouterr()
    assert "needs its topology: give --topology FILE" in out.out + out.err
    assert "Traceback" not in out.out + out.err


def _lammps_dump(path, universe, atoms, force_scale):
    """A LAMMPS dump (id x y z fx fy fz) of ``atoms`` in every frame, forces scaled from
    MDAnalysis's kJ/mol/Å by ``force_scale``."""
    with open(path, "w") as fh:
        for ts in universe.trajectory:
            fh.write(f"ITEM: TIMESTEP\n{ts.frame}\nITEM: NUMBER OF ATOMS\n{atoms.n_atoms}\n"
                     f"ITEM: BOX BOUNDS pp pp pp\n")
            fh.writelines(f"0 {ts.dimensions[k]}\n" for k in range(3))
            fh.write("ITEM: ATOMS id x y z fx fy fz\n")
            f = atoms.forces.astype(np.float64) * force_scale
            fh.writelines(f"{i + 1} {x[0]:.6f} {x[1]:.6f} {x[2]:.6f} "
                          f"{g[0]:.9g} {g[1]:.9g} {g[2]:.9g}\n"
                          for i, (x, g) in enumerate(zip(atoms.positions, f)))


@pytest.mark.filterwarnings("ignore::UserWarning")  # MDAnalysis: a dump has no time step
def test_a_reader_without_units_is_checked_by_physics_as_npz_is(tmp_path):
    """A LAMMPS dump's reader knows no units: its raw forces are assumed kcal/mol/Å (LAMMPS
    ``units real``) and checked, or declared with --force-units."""
    u = mda.Universe(CASES["trr"][0], CASES["trr"][1])
    protein = u.select_atoms("protein")
    protein.write(tmp_path / "protein.pdb")
    _lammps_dump(tmp_path / "real.lammpstrj", u, protein, 1 / 4.184)
    _lammps_dump(tmp_path / "gmx.lammpstrj", u, protein, 10.0)  # kJ/mol/nm
    top = str(tmp_path / "protein.pdb")

    store, report, _ = _ingest(tmp_path, [tmp_path / "real.lammpstrj"], topology=top,
                               temperature=300.0)
    doc = store.protein_doc("real")
    assert doc["source_units"] == {"length": "angstrom", "force": "kcal/mol/angstrom",
                                   "declared": False}
    assert 0.8 < doc["unit_check"]["ratio"] < 1.25
    assert doc["sources"][0]["entry"] == "LAMMPSDUMP"
    _, F, _ = _reference(CASES["trr"][0], CASES["trr"][1])
    np.testing.assert_allclose(store.protein("real").F.values, F, rtol=1e-5,
                               atol=1e-5 * np.abs(F).max())  # the dump's 9 digits

    _, report, _ = _ingest(tmp_path, [tmp_path / "gmx.lammpstrj"], topology=top,
                           temperature=300.0)
    assert "forces are probably in other units" in next(iter(report.failed.values()))
    store, report, _ = _ingest(tmp_path, [tmp_path / "gmx.lammpstrj"], topology=top,
                               temperature=300.0, force_units="kJ/mol/nm")
    doc = store.protein_doc("gmx")
    assert doc["source_units"]["force"] == "kJ/mol/nm" and doc["source_units"]["declared"]
    np.testing.assert_allclose(store.protein("gmx").F.values, F, rtol=1e-5,
                               atol=1e-5 * np.abs(F).max())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_cap_without_a_ca_gets_no_bead_and_ingest_says_so(tmp_path):
    u = mda.Universe(CASES["trr"][0], CASES["trr"][1])
    protein = u.select_atoms("protein")
    first = protein.residues[0].atoms
    first.residues.resnames = ["ACE"]  # a cap: residue 1 without a CA atom
    first.select_atoms("name CA").names = ["CH3"]
    protein.write(tmp_path / "capped.pdb")
    _lammps_dump(tmp_path / "capped.lammpstrj", u, protein, 1 / 4.184)
    store, report, lines = _ingest(tmp_path, [tmp_path / "capped.lammpstrj"],
                                   topology=str(tmp_path / "capped.pdb"), temperature=300.0)
    ds = store.protein("capped")
    assert report.ok and ds.sizes["atom"] == 61 and ds.resid.values[0] == 2
    _, F, _ = _reference(CASES["trr"][0], CASES["trr"][1])
    np.testing.assert_allclose(ds.F.values, F[:, 1:], rtol=1e-5, atol=1e-5 * np.abs(F).max())
    assert any("1 residue(s) without a CA atom" in line and "ACE 1" in line for line in lines)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_chain_end_the_bonds_show_splits_the_chain(tmp_path):
    """Two chains numbered in one run under one label (as PRMTOP does): where no bond joins
    residues 30 and 31, they are two chains, A_1 and A_2, and not bonded beads."""
    u = mda.Universe(CASES["trr"][0], CASES["trr"][1])
    protein = u.select_atoms("protein")
    c = protein.residues[29].atoms.select_atoms("name C")[0]
    n = protein.residues[30].atoms.select_atoms("name N")[0]
    u.delete_bonds([(c.index, n.index)])
    protein.write(tmp_path / "two.pdb", bonds="all")
    _lammps_dump(tmp_path / "two.lammpstrj", u, protein, 1 / 4.184)
    store, report, _ = _ingest(tmp_path, [tmp_path / "two.lammpstrj"],
                               topology=str(tmp_path / "two.pdb"), temperature=300.0)
    assert report.ok
    assert list(store.protein("two").chain.values) == ["A_1"] * 30 + ["A_2"] * 32
    assert store.protein_doc("two")["n_chains"] == 2
    # the bond mean-force check counts one bonded pair fewer per frame: 3 x 60
    assert "180 bonded pairs" in store.protein_doc("two")["unit_check"]["note"]
