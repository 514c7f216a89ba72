"""Source units, and checks by physics that the numbers are in the units they claim to be.

Store units are Å and kcal/mol/Å. A source declares its units (mdCATH ``unit`` attributes,
``--length-units`` / ``--force-units`` for NPZ files) or is assumed to be in store units; either
way the data are checked against physics that does not depend on the force scale:

- **lengths**: bonded C-alpha beads sit ~3.8 Å apart (2.9 Å for a cis-peptide). A median CA-CA
  distance near 0.38 means nanometres.
- **forces**: for the distance r of two bonded beads and the mapped forces projected on the
  bond, F_r = (F_{i+1} - F_i)·û / 2, the mean force at r is -dW/dr with
  W(r) = -kT ln(p(r) / r²) (Boltzmann inversion; the generalised force along r). Integrating by
  parts over the observed distribution gives, with no model of W at all,

      cov(r, F_r) = -kT (3 - 2 <r> <1/r>)          (≈ -kT: <r><1/r> = 1 + σ²/<r>² + ...)

  at each temperature. The measured ratio -cov(r, F_r) / (kT (3 - 2 <r><1/r>)) is 1 for forces
  in kcal/mol/Å; forces in another unit scale it by that unit's factor (kJ/mol/nm 41.84,
  kJ/mol/Å 4.184, kcal/mol/nm 0.1, eV/Å 1/23.06, Hartree/Bohr 1/1185.8). The check needs
  enough bonded pairs for the covariance to be significant (z >= 5); otherwise it says why it
  did not decide.

  Frames stored **without a temperature** (the predecessor's NPZ files) are checked the other
  way round: the identity gives the temperature the forces imply in the units they claim,
  T = -cov(r, F_r) / (kB (3 - 2 <r><1/r>)), which must lie in :data:`PLAUSIBLE_TEMPERATURE`;
  forces in another unit put it 4-1200x off. The sums the identity needs are kept in the
  protein document (``unit_check.unknown_temperature_sums``), so that a temperature given
  later for those frames (fit-priors, train) checks them again without reading the data
  (:func:`recheck_ratio`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..units import KB_KCAL_PER_MOL_K

#: K: the temperatures MD of proteins is run at, with a margin; an implied temperature outside
#: it means the forces are not in the units they claim
PLAUSIBLE_TEMPERATURE = (150.0, 700.0)
MIN_PAIRS = 50  # bonded pairs the identity needs besides its significance (z)
MIN_Z = 5.0

#: Canonical names and the factor that converts a value in that unit to store units.
LENGTH_UNITS = {"angstrom": 1.0, "nm": 10.0}
FORCE_UNITS = {
    "kcal/mol/angstrom": 1.0,
    "kJ/mol/nm": 1 / 41.84,
    "kJ/mol/angstrom": 1 / 4.184,
    "kcal/mol/nm": 0.1,
    "eV/angstrom": 23.060548,
    "hartree/bohr": 627.509474 / 0.529177211,
}
_ALIASES = {"a": "angstrom", "å": "angstrom", "ang": "angstrom", "angstroms": "angstrom",
            "nanometer": "nm", "nanometers": "nm", "nanometre": "nm"}


def _key(unit: str) -> str:
    key = str(unit).strip().lower()
    for old, new in ((" ", ""), ("(", ""), (")", ""), ("*", "/"), ("·", "/")):
        key = key.replace(old, new)
    return "/".join(_ALIASES.get(p, p) for p in key.split("/"))


def canonical_unit(unit: str | bytes, table: dict[str, float], where: str) -> str:
    """The canonical name in ``table`` of a unit as sources spell it (``Angstrom``, ``kJ/(mol*nm)``,
    ``eV/Å``...), else an InputError listing the known ones."""
    if isinstance(unit, bytes):
        unit = unit.decode()
    wanted = _key(unit)
    for name in table:
        if _key(name) == wanted:
            return name
    raise InputError(f"{where}: unknown unit {unit!r} (known: {', '.join(table)})")


@dataclass(frozen=True)
class SourceUnits:
    """The units a source's numbers are in, and whether the source (or the user) declared them."""

    length: str = "angstrom"
    force: str = "kcal/mol/angstrom"
    declared: bool = False

    @property
    def factors(self) -> tuple[float, float]:
        """(length, force) factors to store units."""
        return LENGTH_UNITS[self.length], FORCE_UNITS[self.force]

    def as_doc(self) -> dict:
        return {"length": self.length, "force": self.force, "declared": self.declared}


def bond_lengths(R: np.ndarray, bonded: np.ndarray) -> np.ndarray:
    """[b, n_bonds] distances of the bonded consecutive beads of R [b, N, 3] (Å)."""
    d = R[:, 1:][:, bonded] - R[:, :-1][:, bonded]
    return np.sqrt(np.einsum("fbk,fbk->fb", d, d, dtype=np.float64))


def length_problem(R: np.ndarray, bonded: np.ndarray) -> str | None:
    """A reason when the bonded CA-CA distances of bead positions R [b, N, 3] say the positions
    are not in Å (checked on the frames given, before any per-frame check)."""
    if not bonded.any() or not len(R):
        return None
    r = bond_lengths(R, bonded)
    median = float(np.nanmedian(r)) if np.isfinite(r).any() else math.nan
    if not math.isfinite(median) or 2.5 <= median <= 4.5:
        return None
    if 0.25 <= median <= 0.45:
        return (f"the median CA-CA distance of bonded residues is {median:.3f}, not ~3.8 Å: the "
                f"positions look like nanometres; declare them with --length-units nm")
    return (f"the median CA-CA distance of bonded residues is {median:.3g}, not ~3.8 Å: the "
            f"positions are not in Å (or the beads are not C-alpha atoms); declare their unit "
            f"with --length-units ({', '.join(LENGTH_UNITS)})")


@dataclass
class BondForceCheck:
    """Accumulates, per temperature, what the force-unit identity needs (module docstring):
    sums over bonded pairs of r, r², F_r, r·F_r, F_r², 1/r."""

    sums: dict[float, np.ndarray] = field(default_factory=dict)

    def add(self, R: np.ndarray, F: np.ndarray, bonded: np.ndarray,
            temperature: np.ndarray) -> None:
        """Frames R, F [b, N, 3] (store units as assumed) at ``temperature`` [b] K."""
        if not bonded.any() or not len(R):
            return
        d = (R[:, 1:][:, bonded] - R[:, :-1][:, bonded]).astype(np.float64)
        r = np.sqrt(np.einsum("fbk,fbk->fb", d, d))
        u = d / r[..., None]
        dF = (F[:, 1:][:, bonded] - F[:, :-1][:, bonded]).astype(np.float64)
        f = 0.5 * np.einsum("fbk,fbk->fb", dF, u)
        known = np.isfinite(temperature)
        groups = [(float(T), temperature == T) for T in np.unique(temperature[known])]
        if not known.all():
            groups.append((None, ~known))  # frames stored without a temperature
        for key, rows in groups:
            rr, ff = r[rows].ravel(), f[rows].ravel()
            ok = np.isfinite(rr) & np.isfinite(ff)
            rr, ff = rr[ok], ff[ok]
            add = np.array([len(rr), rr.sum(), (rr * rr).sum(), ff.sum(), (rr * ff).sum(),
                            (ff * ff).sum(), (1.0 / rr).sum()])
            self.sums[key] = self.sums.get(key, 0.0) + add

    def verdict(self, min_pairs: int = MIN_PAIRS, min_z: float = MIN_Z
                ) -> tuple[float | None, str]:
        """(ratio, explanation): the measured force scale over the expected one (1 in
        kcal/mol/Å) over the frames of known temperature, or None with the reason the data
        cannot decide."""
        known = {T: s for T, s in self.sums.items() if T is not None}
        if not known:
            return None, "no frame of known temperature with bonded beads"
        return identity_ratio(known, min_pairs, min_z)

    def implied_temperature(self, min_pairs: int = MIN_PAIRS, min_z: float = MIN_Z
                            ) -> tuple[float | None, str]:
        """(K, explanation): the temperature the frames stored without one imply in the
        assumed force unit, or None with the reason the data cannot decide."""
        sums = self.sums.get(None)
        if sums is None:
            return None, "every frame has a temperature"
        # the ratio at 1 K is the implied temperature in K
        return identity_ratio({1.0: sums}, min_pairs, min_z)


def identity_ratio(sums: dict[float, np.ndarray], min_pairs: int = MIN_PAIRS,
                   min_z: float = MIN_Z) -> tuple[float | None, str]:
    """The identity's measured/expected ratio over groups of bonded-pair sums keyed by their
    temperature (K), or None with the reason the data cannot decide."""
    n_all = sum(s[0] for s in sums.values())
    if n_all < min_pairs:
        return None, f"only {int(n_all)} bonded pairs (needs {min_pairs})"
    measured = expected = variance = 0.0
    for T, (n, sr, srr, sf, srf, sff, sinv) in sums.items():
        if n < 3:
            continue
        kT = KB_KCAL_PER_MOL_K * T
        mr, mf = sr / n, sf / n
        var_r, var_f = srr / n - mr * mr, sff / n - mf * mf
        cov = srf / n - mr * mf
        measured += -cov * n
        expected += kT * (3.0 - 2.0 * mr * sinv / n) * n
        variance += max(var_r * var_f, 0.0) * n  # Var(n cov) ≈ n var_r var_f
    if expected <= 0:
        return None, "the bond distribution is degenerate"
    z = measured / math.sqrt(variance) if variance > 0 else 0.0
    if abs(z) < min_z:
        return None, (f"the mean force along the bonds is not significant ({int(n_all)} "
                      f"bonded pairs, z = {z:.1f}): the forces may not belong to these "
                      f"positions")
    return measured / expected, f"{int(n_all)} bonded pairs, z = {z:.0f}"


def recheck_ratio(sums: list[float], temperature: float) -> tuple[float | None, str]:
    """The identity's ratio for frames stored without a temperature, at ``temperature`` (K)
    given for them later, from the sums their protein document keeps."""
    return identity_ratio({float(temperature): np.asarray(sums, np.float64)})


def likely_force_unit(ratio: float) -> str:
    """The force unit whose factor best explains a measured ratio (in log space)."""
    return min(FORCE_UNITS, key=lambda u: abs(math.log(abs(ratio) * FORCE_UNITS[u])))


def force_unit_problem(check: BondForceCheck, units: SourceUnits
                       ) -> tuple[str | None, str, float | None]:
    """(an error for undeclared units that physics contradicts, a note for the log, the
    measured ratio or None). Frames stored without a temperature are judged by the temperature
    they imply (module docstring)."""
    ratio, why = check.verdict()
    if ratio is None:
        T, why_T = check.implied_temperature()
        if T is None:
            return None, f"force units not checked by physics: {why}", None
        lo, hi = PLAUSIBLE_TEMPERATURE
        if lo <= T <= hi:
            return None, (f"force units plausible: no temperature is recorded, and the bond "
                          f"mean-force identity implies {T:.0f} K ({why_T})"), None
        return _unit_verdict(T / 300.0, units, (
            f"no temperature is recorded, and the bond mean-force identity implies {T:.3g} K "
            f"for forces in {units.force}, outside {lo:g}-{hi:g} K ({why_T})"), None)
    ratio = float(ratio)
    if 0.5 <= ratio <= 2.0:
        return None, f"force units agree with physics (ratio {ratio:.2f}; {why})", ratio
    return _unit_verdict(ratio, units, (
        f"the forces are {ratio:.3g}x what physics expects of {units.force} at the recorded "
        f"temperatures (bond mean-force check, {why})"), ratio)


def _unit_verdict(ratio: float, units: SourceUnits, said: str, reported: float | None
                  ) -> tuple[str | None, str, float | None]:
    guess = likely_force_unit(ratio) if ratio > 0 else None
    if guess and guess != units.force:
        said += f": they look like {guess}"
    if units.declared:
        return None, f"warning: {said}; the declared unit was kept", reported
    flag = f"--force-units '{guess}'" if guess and guess != units.force else "--force-units UNIT"
    return f"{said}; declare their unit with {flag}", said, reported
