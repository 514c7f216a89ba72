"""Langevin dynamics of a trained CG force field on a store's protein (``protstore simulate``)."""

from ..errors import SimulationUnstable, TrajectoryError
from .integrator import BAOABState, baoab, kinetic_energy, kinetic_temperature
from .masses import MASSES_DESCRIPTION, RESIDUE_MASSES, bead_masses, internal_masses
from .run import SimulateConfig, SimulationResult, simulate
from .trajectory import TRAJECTORY_DOC, read_document

__all__ = ["BAOABState", "MASSES_DESCRIPTION", "RESIDUE_MASSES", "SimulateConfig",
           "SimulationResult", "SimulationUnstable", "TRAJECTORY_DOC", "TrajectoryError",
           "baoab", "bead_masses", "internal_masses", "kinetic_energy", "kinetic_temperature",
           "read_document", "simulate"]
