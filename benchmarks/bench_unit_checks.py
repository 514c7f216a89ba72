"""Which wrong units the ingest checks catch, on CG data with a real all-atom force scale.

One 60-residue protein is simulated (the demo's CG world) at 320 and 348 K; its bead forces
get Gaussian noise of 10, 20 or 40 kcal/mol/Å per component (mapped all-atom forces are
10-40). Every force unit protstore knows is then written undeclared (numbers in that unit, no
``--force-units``) and the bond mean-force check (``protstore.ingest.units``) is run on the
first F frames; the table shows the measured ratio and what ingest does. Positions in nm are
checked too. Prints a Markdown table (docs/reference.md keeps the latest).

    python benchmarks/bench_unit_checks.py [--frames 50 200] [--noise 10 20 40]
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from protstore.demo import DemoConfig
from protstore.demo.dataset import simulate_protein
from protstore.ingest.units import (FORCE_UNITS, BondForceCheck, SourceUnits, force_unit_problem,
                                    length_problem)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[50, 200],
                        help="frames per temperature")
    parser.add_argument("--noise", type=float, nargs="+", default=[10.0, 20.0, 40.0])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = 60
    seq = list(rng.choice(["ALA", "LEU", "GLU", "LYS", "PRO", "GLY", "VAL", "SER"], size=n))
    config = DemoConfig(frames=max(args.frames), stride=20, equilibration=400)
    R, F = simulate_protein(seq, np.array(["A"] * n), [320.0, 348.0], config,
                            jax.random.PRNGKey(0))
    bonded = np.ones(n - 1, bool)
    print("| force noise (kcal/mol/Å) | frames | numbers in | measured ratio | ingest |")
    print("|---|---|---|---|---|")
    for noise in args.noise:
        noisy = F + rng.normal(scale=noise, size=F.shape)
        for frames in args.frames:
            Rs = R[:, :frames].reshape(-1, n, 3).astype(np.float32)
            T = np.repeat(np.array([320.0, 348.0], np.float32), frames)
            for unit, factor in FORCE_UNITS.items():
                Fs = (noisy[:, :frames] / factor).reshape(-1, n, 3).astype(np.float32)
                check = BondForceCheck()
                check.add(Rs, Fs, bonded, T)
                wrong, _, ratio = force_unit_problem(check, SourceUnits())
                verdict = ("refused: " + wrong.split(": they look like ")[-1].split(";")[0]
                           if wrong else ("accepted" if ratio is not None else "not decided"))
                shown = "n/a" if ratio is None else f"{ratio:.3g}"
                print(f"| {noise:g} | {frames} x 2 | {unit} | {shown} | {verdict} |")
    problem = length_problem(R[0, :10].astype(np.float32) / 10, bonded)
    print(f"\npositions in nm, undeclared: {problem}")


if __name__ == "__main__":
    main()
