"""Readers beyond protstore: tensorstore and plain xarray read every array of a protein group
(format 3: the string coordinates as label codes); format-2 stores read and migrated."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
import zarr

import protstore
from protstore.ingest import ingest
from protstore.store import migrate as migrate_module
from protstore.store.verify import verify_store

from helpers import as_format_2, same_protein, write_mdcath


def _quiet(*a, **k):
    return None


def _tensorstore_arrays(group) -> dict[str, np.ndarray]:
    """name -> the array as tensorstore reads it (labels decoded through its attributes),
    for every array of the group directory; also checks its dimension names."""
    ts = pytest.importorskip("tensorstore")
    out = {}
    for path in sorted(p for p in group.iterdir() if (p / "zarr.json").is_file()):
        array = ts.open({"driver": "zarr3", "kvstore": {"driver": "file",
                                                        "path": str(path)}}).result()
        values = array.read().result()
        attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
        if "protstore_labels" in attrs:
            labels = attrs["protstore_labels"]
            assert attrs["flag_values"] == list(range(len(labels)))
            assert attrs["flag_meanings"].split() == labels  # blank-free labels: CF's words
            values = np.array(labels, dtype=object)[values]
        out[path.name] = (tuple(array.domain.labels), values)
    return out


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory):
    """A store of two proteins (one of two chains), and a format-2 copy of it."""
    tmp = tmp_path_factory.mktemp("readers")
    write_mdcath(tmp / "a1.h5", domain="a1", seed=0)
    write_mdcath(tmp / "b2.h5", domain="b2", resnames=("ALA", "GLY", "SER", "LYS"),
                 chains=["A", "A", "B", "B"], seed=1)
    root = tmp / "s.zarr"
    ingest([tmp / "a1.h5", tmp / "b2.h5"], protstore.open_store(root, mode="a"),
           progress=False, log=_quiet)
    return root, tmp


def test_tensorstore_reads_every_array_of_a_protein_as_protstore_does(two_stores):
    root, _ = two_stores
    store = protstore.open_store(root)
    assert store.format_version == 3
    for pid in store.proteins:
        ds = store.protein(pid).load()
        arrays = _tensorstore_arrays(root / "proteins" / pid)
        assert set(arrays) == set(ds.variables)  # R F, 7 coordinates and xyz
        for name, (dims, values) in arrays.items():
            assert dims == ds[name].dims, name
            expected = ds[name].values
            assert values.dtype == expected.dtype and values.shape == expected.shape, name
            if values.dtype == object:
                assert values.tolist() == expected.tolist(), name
            else:
                assert values.tobytes() == expected.tobytes(), name  # bit for bit
    assert store.protein("b2").chain.values.tolist() == ["A", "A", "B", "B"]
    assert store.protein("b2").xyz.values.tolist() == ["x", "y", "z"]


def test_plain_xarray_reads_the_codes_and_decodes_them_to_the_same_dataset(two_stores):
    root, _ = two_stores
    store = protstore.open_store(root)
    for pid in store.proteins:
        plain = xr.open_zarr(root, group=f"proteins/{pid}", consolidated=False)
        assert plain.resname.dtype == np.int32 and plain.xyz.values.tolist() == [0, 1, 2]
        assert plain.chain.attrs["flag_meanings"].split() == \
            list(dict.fromkeys(store.protein(pid).chain.values.tolist()))
        decoded = plain.prot.decode_labels().load()
        expected = store.protein(pid).load()
        xr.testing.assert_identical(decoded.drop_attrs(deep=False),
                                    expected.drop_attrs(deep=False))
        assert decoded.prot.doc == expected.prot.doc
        padded = plain.prot.pad_to(8)  # the accessor decodes first
        assert padded.resname.values.tolist()[-1] == "PAD"
        assert padded.resname.values.tolist()[:len(expected.atom)] == \
            expected.resname.values.tolist()


def test_a_code_without_a_label_is_an_error_naming_the_array(tmp_path):
    from protstore.store.labels import decode_labels, encode_labels

    codes, attrs = encode_labels(["A", "", "B c", "A"])
    assert codes.tolist() == [0, 1, 2, 0] and codes.dtype == np.int32
    assert attrs["flag_meanings"] == "A _ B_c" and attrs["protstore_labels"] == ["A", "", "B c"]
    assert decode_labels(codes, attrs).tolist() == ["A", "", "B c", "A"]
    with pytest.raises(ValueError, match="chain: code 3 has no label"):
        decode_labels(np.array([0, 3]), attrs, "chain")


def test_a_format_2_store_reads_as_it_is_and_validate_repair_migrates_it(
        two_stores, tmp_path, capsys):
    import shutil

    from protstore.cli import main

    src, _ = two_stores
    root = tmp_path / "old.zarr"
    shutil.copytree(src, root)
    expected = {pid: protstore.open_store(src).protein(pid).load() for pid in ("a1", "b2")}
    as_format_2(root)
    old = protstore.open_store(root)
    assert old.format_version == 2
    assert json.loads((root / "proteins/a1/resname/zarr.json").read_text())[
        "data_type"] == "string"
    for pid, ds in expected.items():
        assert same_protein(old.protein(pid).load(), ds)
    assert [(f.level, "format-2" in f.message) for f in verify_store(old)] == [("warning", True)]
    assert main(["validate", str(root), "--repair", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "migrated to store format 3" in err and "of 2 proteins" in err
    new = protstore.open_store(root)
    assert new.format_version == 3 and verify_store(new) == []
    for pid, ds in expected.items():
        assert same_protein(new.protein(pid).load(), ds)
        assert new.protein_doc(pid) == new.committed_doc(pid)  # the catalog follows
        arrays = _tensorstore_arrays(root / "proteins" / pid)
        assert arrays["resname"][1].tolist() == ds.resname.values.tolist()
        assert arrays["chain"][1].tolist() == ds.chain.values.tolist()
        xr.testing.assert_identical(
            xr.open_zarr(root / "proteins" / pid).prot.decode_labels().load().drop_attrs(
                deep=False), ds.drop_attrs(deep=False))
        for name in ("resname", "chain", "xyz"):  # the codes' chunk under its new key only
            assert (root / "proteins" / pid / name / "c.0").is_file()
            assert not (root / "proteins" / pid / name / "c").exists()
    assert protstore.open_store(root, mode="r+").migrate() is None  # nothing left to do


def test_an_interrupted_migration_leaves_every_reader_a_whole_protein_and_is_finished(
        two_stores, tmp_path, monkeypatch):
    import shutil

    src, _ = two_stores
    root = tmp_path / "old.zarr"
    shutil.copytree(src, root)
    expected = protstore.open_store(src).protein("a1").load()
    as_format_2(root)
    real = migrate_module.write_group_metadata

    def killed(*args, **kwargs):  # the arrays of a1 are rewritten, its group's metadata not
        raise KeyboardInterrupt

    monkeypatch.setattr(migrate_module, "write_group_metadata", killed)
    with pytest.raises(KeyboardInterrupt):
        protstore.open_store(root, mode="r+")
    half = root / "proteins" / "a1"
    assert json.loads((half / "resname/zarr.json").read_text())["data_type"] == "int32"
    old = protstore.open_store(root)
    assert old.format_version == 2 and same_protein(old.protein("a1").load(), expected)
    plain = xr.open_zarr(half).prot.decode_labels().load()  # the group's metadata: strings
    assert plain.resname.values.tolist() == expected.resname.values.tolist()
    array = zarr.open_array(half / "resname", mode="r")  # the array's own: codes
    assert array.attrs["protstore_labels"][0] == expected.resname.values[0]
    monkeypatch.setattr(migrate_module, "write_group_metadata", real)
    store = protstore.open_store(root, mode="r+")
    assert store.format_version == 3 and same_protein(store.protein("a1").load(), expected)
    assert verify_store(protstore.open_store(root)) == []
    assert not (half / "resname" / "c").exists()


def test_plain_xarray_opens_a_protein_and_the_whole_tree_without_a_consolidation_warning(
        two_stores):
    import re
    import warnings

    from zarr.errors import ZarrUserWarning

    root, _ = two_stores
    store = protstore.open_store(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        by_path = xr.open_zarr(root / "proteins" / "b2")
        by_group = xr.open_zarr(root, group="proteins/b2", consolidated=False)
    xr.testing.assert_identical(by_path.load(), by_group.load())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tree = xr.open_datatree(root, consolidated=False)
    private = {re.match(r"Object at (\S+) is not", str(w.message)).group(1) for w in caught
               if issubclass(w.category, ZarrUserWarning)}
    assert private <= {".staging", ".lock", "catalog"} and private  # what the docs name
    assert all(issubclass(w.category, ZarrUserWarning) for w in caught)  # nothing else
    assert set(tree["proteins"].children) == set(store.proteins)
    for pid in store.proteins:
        decoded = tree[f"proteins/{pid}"].to_dataset().prot.decode_labels().load()
        xr.testing.assert_identical(decoded.drop_attrs(deep=False),
                                    store.protein(pid).load().drop_attrs(deep=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=ZarrUserWarning,  # as docs/reference.md
                                message=r"Object at (\.staging|\.lock|\.claims|catalog) ")
        xr.open_datatree(root, consolidated=False)


def test_xarray_opens_a_protein_through_the_protstore_engine(demo_store):
    """``xr.open_dataset(STORE, engine="protstore", group=...)``: the labelled Dataset of
    Store.protein (names, not codes), lazily, or as dask with ``chunks``."""
    import xarray as xr

    from protstore.errors import StoreError

    pid = demo_store.proteins[0]
    want = demo_store.protein(pid, chunks=None).load()
    ds = xr.open_dataset(demo_store.url, engine="protstore", group=f"proteins/{pid}")
    assert ds.resname.dtype.kind in "OU" and list(ds.resname.values) == list(want.resname.values)
    assert ds.identical(want)
    chunked = xr.open_dataset(demo_store.url, engine="protstore", group=pid, chunks={})
    assert chunked.R.chunks is not None and chunked.load().identical(want)
    assert "R" not in xr.open_dataset(demo_store.url, engine="protstore", group=pid,
                                      drop_variables=["R"])
    with pytest.raises(StoreError, match="name the protein"):
        xr.open_dataset(demo_store.url, engine="protstore")
