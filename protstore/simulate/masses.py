"""Bead masses of the CA model: one bead per residue, weighing the whole residue.

A bead's mass is the **average residue mass** of its amino acid (average isotopic composition,
the amino acid's mass minus one water: the mass it adds to a peptide chain), in amu (g/mol).
These are the standard values (e.g. ExPASy's table of residue masses); the termini's extra
water (18.015 amu on the whole chain) is not added. ``UNK`` (and ``PAD``, which is never
simulated) get the mean of the 20. The masses set the dynamics' time scale only: the Boltzmann
distribution a Langevin simulation samples does not depend on them.

Units: the integrator works in Å, ps, kcal/mol; a mass in amu is
``amu / AMU_A2_PER_PS2`` kcal/mol·ps²/Å² there (:func:`internal_masses`).
"""

from __future__ import annotations

import numpy as np

from ..vocab import STANDARD_RESIDUES, VOCABULARY

#: (kcal/mol/Å) / amu -> Å/ps²: a force of 1 kcal/mol/Å accelerates 1 amu by 418.4 Å/ps².
AMU_A2_PER_PS2 = 418.4

#: Average residue masses (amu) of the 20 standard amino acids.
RESIDUE_MASSES: dict[str, float] = {
    "ALA": 71.0788, "ARG": 156.1875, "ASN": 114.1038, "ASP": 115.0886, "CYS": 103.1388,
    "GLN": 128.1307, "GLU": 129.1155, "GLY": 57.0519, "HIS": 137.1411, "ILE": 113.1594,
    "LEU": 113.1594, "LYS": 128.1741, "MET": 131.1926, "PHE": 147.1766, "PRO": 97.1167,
    "SER": 87.0782, "THR": 101.1051, "TRP": 186.2132, "TYR": 163.1760, "VAL": 99.1326,
}  # fmt: skip
MEAN_RESIDUE_MASS = float(np.mean([RESIDUE_MASSES[r] for r in STANDARD_RESIDUES]))

#: amu per species id of the vocabulary (UNK and PAD: the mean of the 20).
SPECIES_MASSES = np.array([RESIDUE_MASSES.get(name, MEAN_RESIDUE_MASS) for name in VOCABULARY],
                          np.float64)

#: How trajectories describe the masses (their document's ``masses`` field).
MASSES_DESCRIPTION = ("average residue masses (amino acid minus water, amu) per species; "
                      "UNK: their mean")


def bead_masses(species) -> np.ndarray:
    """[N] masses (amu, float64) of beads of species ids [N]."""
    return SPECIES_MASSES[np.asarray(species, np.int64)]


def internal_masses(species) -> np.ndarray:
    """[N] masses (float32) in the integrator's unit, kcal/mol·ps²/Å² (amu / 418.4)."""
    return (bead_masses(species) / AMU_A2_PER_PS2).astype(np.float32)
