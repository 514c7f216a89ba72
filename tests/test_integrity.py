"""Every byte checked: checkpoints (chunks and documents), catalog segments, arrays' metadata,
and crafted inputs refused with a one-line error naming the file."""

import json
from pathlib import Path

import numpy as np
import pytest

from protstore.checkpoints import (CheckpointError, list_checkpoints, read_attrs,
                                   read_checkpoint, write_checkpoint)

MODEL = {"factory": "x:y", "options": {}}


def flip(path: Path, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))


def small_checkpoint(path, step=7, val_rmse=0.53125):
    params = {"a": {"w": np.arange(6, dtype=np.float32).reshape(3, 2)},
              "b": np.linspace(-1, 1, 4).astype(np.float32)}
    opt = (np.full(2, 0.25), {"m": np.ones(3, np.float32)})
    write_checkpoint(path, params, {"kind": "checkpoint", "step": step, "epoch": 0,
                                    "model": MODEL, "val_rmse": val_rmse}, opt_state=opt)
    return params, opt


def read_all(path, opt):
    ck = read_checkpoint(path, opt_template=opt)
    return ck.attrs, ck.params, ck.opt_state


def same(a, b) -> bool:
    import jax
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.shape(x) == np.shape(y)
        and np.array_equal(x, y) for x, y in zip(la, lb))


def test_every_flipped_bit_of_a_checkpoints_chunks_is_an_error(tmp_path):
    path = tmp_path / "ck"
    params, opt = small_checkpoint(path)
    chunks = sorted(p for p in path.rglob("*") if p.is_file() and p.name != "zarr.json")
    assert len(chunks) == 4
    tried = 0
    for chunk in chunks:
        n_bits = 8 * chunk.stat().st_size
        for bit in range(0, n_bits, 3):  # every third bit: each byte hit, deterministic
            flip(chunk, bit)
            with pytest.raises(CheckpointError, match="ck/(params|opt_state)/"):
                read_all(path, opt)
            flip(chunk, bit)
            tried += 1
    assert tried > 100
    attrs, got, _ = read_all(path, opt)
    assert same(got, params)


@pytest.mark.parametrize("field", ["val_rmse", "step"])
def test_every_flipped_bit_of_a_documents_value_is_an_error_naming_it(tmp_path, field):
    path = tmp_path / "ck"
    small_checkpoint(path)
    doc = path / "zarr.json"
    text = doc.read_bytes()
    value = json.dumps(read_attrs(path)[field]).encode()
    start = text.index(f'"{field}": '.encode()) + len(field) + 4
    assert text[start:start + len(value)] == value
    for bit in range(8 * start, 8 * (start + len(value))):
        flip(doc, bit)
        with pytest.raises(CheckpointError, match=f"ck: (checkpoint document field '{field}'|"
                                                  f"not a protstore checkpoint)"):
            read_attrs(path)
        warnings = []
        assert list_checkpoints(tmp_path, warn=warnings.append) == []  # best/, resume, EMA
        assert "ck" in warnings[0]
        flip(doc, bit)
    assert read_attrs(path)[field] in (7, 0.53125)


def test_no_flipped_bit_of_a_checkpoints_metadata_changes_what_is_read(tmp_path):
    """Any bit of any zarr.json (the root's document, the leaves' array metadata): an error, or
    exactly the checkpoint that was written (a flip zarr ignores, e.g. in a name it never uses)."""
    path = tmp_path / "ck"
    small_checkpoint(path)
    _, opt = small_checkpoint(tmp_path / "ref")
    want = read_all(tmp_path / "ref", opt)
    silent = errors = 0
    for meta in sorted(path.rglob("zarr.json")):
        for bit in range(5, 8 * meta.stat().st_size, 97):  # a deterministic sample
            flip(meta, bit)
            try:
                got = read_all(path, opt)
            except CheckpointError:
                errors += 1
            else:
                silent += not (same(got[1:], want[1:]) and {k: v for k, v in got[0].items() if
                               k not in ("created", "leaves", "fields_digest", "digest")} ==
                               {k: v for k, v in want[0].items() if
                               k not in ("created", "leaves", "fields_digest", "digest")})
            flip(meta, bit)
    assert errors > 50 and silent == 0


def test_checkpoints_without_digests_still_read_unverified(tmp_path):
    path = tmp_path / "old"
    small_checkpoint(path)
    meta = json.loads((path / "zarr.json").read_text())
    doc = meta["attributes"]["protstore_checkpoint"]
    for key in ("leaves", "fields_digest", "digest"):
        del doc[key]
    doc["version"] = 2
    (path / "zarr.json").write_text(json.dumps(meta))
    ck = read_checkpoint(path)
    assert not ck.verified and ck.params["b"].shape == (4,)
    doc["version"] = 3  # a current checkpoint whose digests are gone: damage
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="no digest"):
        read_attrs(path)


def test_copied_attrs_get_digests_of_their_own(tmp_path):
    small_checkpoint(tmp_path / "a")
    ck = read_checkpoint(tmp_path / "a")
    write_checkpoint(tmp_path / "best", {"w": np.zeros(2)}, dict(ck.attrs, kind="best"))
    assert read_checkpoint(tmp_path / "best").verified
