"""Label codes: the store's string coordinates (``resname``, ``chain``, ``xyz``) as int32
codes with their labels in the array's attributes (store format 3), which every Zarr v3 reader
reads (tensorstore and zarrs have no variable-length strings) and CF tools understand
(``flag_values``/``flag_meanings``); protstore's readers decode them back to the labels."""

from __future__ import annotations

import numpy as np

LABELS = "protstore_labels"  # attribute of a labelled array: the label of code i, exactly
LABEL_DTYPE = "int32"
LABEL_ATTRIBUTES = ("flag_values", "flag_meanings", LABELS)


def encode_labels(values) -> tuple[np.ndarray, dict]:
    """[n] strings -> ([n] int32 codes 0, 1, ... in order of first appearance, the array's
    attributes): CF's ``flag_values``/``flag_meanings`` (the meanings are blank-separated
    words, so a blank in a label is written ``_`` and an empty label ``_`` there) for CF
    tools, and the exact labels as a list under ``protstore_labels``, which decoding uses."""
    labels = [str(v) for v in np.asarray(values, dtype=object).ravel()]
    order = list(dict.fromkeys(labels))
    index = {label: i for i, label in enumerate(order)}
    codes = np.fromiter((index[label] for label in labels), dtype=LABEL_DTYPE,
                        count=len(labels))
    return codes, label_attributes(order)


def label_attributes(labels: list[str]) -> dict:
    """The attributes of a labelled array whose code i stands for ``labels[i]``."""
    words = ["_".join(str(label).split()) or "_" for label in labels]
    return {"flag_values": list(range(len(labels))), "flag_meanings": " ".join(words),
            LABELS: [str(label) for label in labels]}


def is_labelled(attrs) -> bool:
    """Whether an array with these attributes holds label codes (format 3)."""
    return isinstance((attrs or {}).get(LABELS), list)


def decode_labels(codes: np.ndarray, attrs: dict, where: str = "") -> np.ndarray:
    """Codes of a labelled array -> its labels (object array of str, the codes' shape);
    a code without a label is a ValueError naming ``where``."""
    labels = np.array([str(label) for label in attrs[LABELS]] + [""], dtype=object)[:-1]
    codes = np.asarray(codes)
    bad = (codes < 0) | (codes >= len(labels))
    if bad.any():
        raise ValueError(f"{where}: code {int(codes[bad].ravel()[0])} has no label "
                         f"(labels 0..{len(labels) - 1})")
    return labels[codes]


def without_label_attributes(attrs: dict) -> dict:
    """A labelled array's attributes less those that encode its labels."""
    return {k: v for k, v in attrs.items() if k not in LABEL_ATTRIBUTES}


def decode_dataset(ds):
    """An ``xarray.Dataset`` with its label codes (variables with :func:`is_labelled`
    attributes) as their labels (object arrays of str, the label attributes dropped); a code
    without a label is a ValueError naming the variable. Variables without codes are left."""
    decoded = {name: (var.dims, decode_labels(var.values, var.attrs, str(name)),
                      without_label_attributes(var.attrs))
               for name, var in ds.variables.items() if is_labelled(var.attrs)}
    if not decoded:
        return ds
    coords = {k: v for k, v in decoded.items() if k in ds.coords}
    out = ds.assign_coords(coords) if coords else ds
    data = {k: v for k, v in decoded.items() if k not in ds.coords}
    return out.assign(data) if data else out
