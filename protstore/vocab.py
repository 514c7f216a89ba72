"""The fixed residue vocabulary.

Species ids are positions in :data:`VOCABULARY` and never depend on which proteins are in a store:
the 20 standard amino acids in alphabetical order of their three-letter codes, then ``UNK``
(only used when a user opts in), then ``PAD`` (only used for padded beads in bucket views).

    id  0 ALA   5 GLN  10 LEU  15 SER
    id  1 ARG   6 GLU  11 LYS  16 THR
    id  2 ASN   7 GLY  12 MET  17 TRP
    id  3 ASP   8 HIS  13 PHE  18 TYR
    id  4 CYS   9 ILE  14 PRO  19 VAL
    id 20 UNK  21 PAD

Force-field embeddings are sized :data:`N_SPECIES` (22) so that parameter shapes never depend on
the data set and a padded bead indexes a real (masked) row instead of out of bounds.
"""

from __future__ import annotations

import numpy as np

from .errors import UnknownResidueError

STANDARD_RESIDUES: tuple[str, ...] = (
    "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE",
    "LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL",
)  # fmt: skip
UNK = "UNK"
PAD = "PAD"
VOCABULARY: tuple[str, ...] = STANDARD_RESIDUES + (UNK, PAD)
UNK_ID = VOCABULARY.index(UNK)
PAD_ID = VOCABULARY.index(PAD)
N_SPECIES = len(VOCABULARY)
SPECIES_ID = {name: i for i, name in enumerate(VOCABULARY)}

#: Force-field / PDB variants of the standard residues (protonation states, disulfides,
#: selenomethionine, ...), mapped to the canonical name.
ALIASES: dict[str, str] = {
    "HSD": "HIS", "HSE": "HIS", "HSP": "HIS", "HID": "HIS", "HIE": "HIS", "HIP": "HIS",
    "HIN": "HIS", "HISD": "HIS", "HISE": "HIS", "HISH": "HIS",
    "CYX": "CYS", "CYM": "CYS", "CYS2": "CYS",
    "ASH": "ASP", "ASPP": "ASP", "GLH": "GLU", "GLUP": "GLU",
    "LYN": "LYS", "LSN": "LYS",
    "MSE": "MET",
    "NLE": "LEU",
}  # fmt: skip


def canonical_resname(name: str | bytes, *, allow_unknown: bool = False) -> str:
    """Canonical three-letter name of a residue name (case-insensitive, aliases resolved).

    Raises :class:`UnknownResidueError` for a name outside the vocabulary unless
    ``allow_unknown``, in which case it maps to ``"UNK"``.
    """
    if isinstance(name, bytes):
        name = name.decode()
    key = str(name).strip().upper()
    key = ALIASES.get(key, key)
    if key in STANDARD_RESIDUES or (key == UNK and allow_unknown):
        return key
    if allow_unknown:
        return UNK
    raise UnknownResidueError(
        f"unknown residue name {str(name)!r} (not one of the 20 standard amino acids or a "
        f"known alias); pass allow_unknown / --allow-unknown to map it to UNK"
    )


def canonical_resnames(names, *, allow_unknown: bool = False) -> np.ndarray:
    """Vectorised :func:`canonical_resname`: [N] names -> [N] canonical names (object array)."""
    cache: dict = {}
    out = np.empty(len(names), dtype=object)
    for i, name in enumerate(names):
        if name not in cache:
            cache[name] = canonical_resname(name, allow_unknown=allow_unknown)
        out[i] = cache[name]
    return out


def species_ids(canonical_names) -> np.ndarray:
    """[N] canonical residue names -> [N] int32 species ids into :data:`VOCABULARY`."""
    return np.fromiter((SPECIES_ID[n] for n in canonical_names), dtype=np.int32,
                       count=len(canonical_names))
