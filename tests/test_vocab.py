import numpy as np
import pytest

from protstore import vocab
from protstore.errors import UnknownResidueError


def test_fixed_order_and_special_ids():
    assert vocab.VOCABULARY[:3] == ("ALA", "ARG", "ASN")
    assert vocab.VOCABULARY[19] == "VAL"
    assert (vocab.UNK_ID, vocab.PAD_ID, vocab.N_SPECIES) == (20, 21, 22)
    assert list(vocab.STANDARD_RESIDUES) == sorted(vocab.STANDARD_RESIDUES)


@pytest.mark.parametrize("alias", ["HSD", "HSE", "HSP", "HID", "HIE", "HIP", "hsd", b"HSE"])
def test_histidine_aliases(alias):
    assert vocab.canonical_resname(alias) == "HIS"


@pytest.mark.parametrize("alias,canon", [("CYX", "CYS"), ("ASH", "ASP"), ("GLH", "GLU"),
                                         ("LYN", "LYS"), ("MSE", "MET")])
def test_other_aliases(alias, canon):
    assert vocab.canonical_resname(alias) == canon


def test_unknown_is_an_error_unless_allowed():
    with pytest.raises(UnknownResidueError, match="XYZ"):
        vocab.canonical_resname("XYZ")
    assert vocab.canonical_resname("XYZ", allow_unknown=True) == "UNK"


def test_species_ids_do_not_depend_on_the_set():
    a = vocab.species_ids(vocab.canonical_resnames(["GLY", "ALA"]))
    b = vocab.species_ids(vocab.canonical_resnames(["TRP", "ALA", "GLY"]))
    np.testing.assert_array_equal(a, [7, 0])
    np.testing.assert_array_equal(b, [17, 0, 7])
