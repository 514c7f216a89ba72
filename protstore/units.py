"""The units of every quantity protstore stores and computes, declared in the store's metadata:
Å, kcal/mol, kcal/mol/Å and K."""

UNITS = {
    "rg": "angstrom",
    "R": "angstrom",
    "F": "kcal/mol/angstrom",
    "energy": "kcal/mol",
    "temperature": "kelvin",
}
KB_KCAL_PER_MOL_K = 0.0019872041
