"""The CG force field: topology, NaN-safe geometry, priors (+ their fit), the network, energies."""

from .energy import (DEFAULT_MODEL, MODES, EnergyModel, batch_census, batch_forces,
                     batch_neighbor_census,
                     load_model, neighbor_overflow,
                     squared_error_sums, total_energy)
from .priors import default_priors, prior_energy, prior_terms
from .spec import ModelSpec
from .topology import Topology, build_topology

__all__ = ["DEFAULT_MODEL", "MODES", "EnergyModel", "ModelSpec", "Topology", "batch_census",
           "batch_forces",
           "batch_neighbor_census", "build_topology", "neighbor_overflow",
           "default_priors", "load_model", "prior_energy", "prior_terms", "squared_error_sums",
           "total_energy"]
