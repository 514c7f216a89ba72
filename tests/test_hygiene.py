"""What a user of protstore notices about the library itself: imports, plots, errors, warnings."""

import importlib
import inspect
import math
import pkgutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import protstore
from protstore import errors
from protstore.errors import DocumentError


def test_import_protstore_registers_the_accessor():
    code = "import protstore, xarray as xr; print(type(xr.Dataset().prot).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ProtAccessor"


def test_every_exception_class_lives_in_errors():
    defined_elsewhere = []
    for info in pkgutil.walk_packages(protstore.__path__, "protstore."):
        if info.name.startswith("protstore.demo"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError as exc:  # an optional extra that is not installed (torch)
            assert "pip install 'protstore[" in str(exc), exc
            continue
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) \
                    and obj.__module__ == info.name != "protstore.errors":
                defined_elsewhere.append(f"{info.name}.{name}")
    assert defined_elsewhere == []
    assert issubclass(errors.ConfigError, errors.ProtstoreError)
    assert not issubclass(errors.ConfigError, errors.StoreError)


def test_plots_leave_the_users_matplotlib_session_alone(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt

    from protstore.train.rundir import plot_metrics

    before = matplotlib.get_backend()
    plt.switch_backend("pdf")  # the user's choice
    try:
        metrics = [{"step": s, "train_rmse": 2.0 / s, "val_rmse": 2.5 / s,
                    "val_rmse_per_bucket": {"0": 2.4 / s}} for s in (1, 2, 3)]
        plot_metrics(metrics, tmp_path / "curve.png", "interleaved")
        assert matplotlib.get_backend() == "pdf" and plt.get_fignums() == []
        assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    finally:
        plt.switch_backend(before)


def test_documents_are_strict_json_and_schema_errors_name_file_and_field(tmp_path):
    from protstore.model.fit import priors_to_doc
    from protstore.train.priors import write_priors
    from protstore.model.priors import default_priors
    from protstore.schemas import check_document

    doc = priors_to_doc(default_priors(), None, created_by="test")
    doc["params"]["bond"]["k"] = math.nan
    with pytest.raises(DocumentError, match=r"p\.json: priors document holds a non-finite "
                                            r"number at params/bond/k"):
        write_priors(doc, tmp_path / "p.json")
    assert not (tmp_path / "p.json").exists()
    with pytest.raises(DocumentError, match=r"cfg\.json: .* at epochs"):
        check_document({"epochs": "three"}, "train_config", "cfg.json")


def test_reading_a_protein_lists_nothing_and_warns_nothing(demo_store, monkeypatch):
    pid = demo_store.proteins[0]
    store = protstore.open_store(demo_store.url)
    proteins_dir = Path(demo_store.url) / "proteins"
    original = Path.iterdir

    def no_listing(self):
        if self == proteins_dir:
            raise AssertionError("proteins/ was listed")
        return original(self)

    monkeypatch.setattr(Path, "iterdir", no_listing)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pid in store and "no-such-protein" not in store and "../x" not in store
        ds = store.protein(pid, chunks=None).load()
    assert np.isfinite(ds.R.values).all()


def test_bad_training_options_are_config_errors():
    from protstore.train import TrainConfig

    for bad in ({"learning_rate": math.nan}, {"learning_rate": math.inf}, {"epochs": 0},
                {"clip_norm": -1.0}, {"schedule": "random"}):
        with pytest.raises(errors.ConfigError):
            TrainConfig(**bad)
    from protstore.model import load_model
    with pytest.raises(errors.ConfigError, match="nosuch"):
        load_model(options={"nosuch": 3})
    with pytest.raises(errors.ConfigError, match="features must be a positive integer"):
        load_model(options={"features": -4})


def test_a_url_where_a_local_path_is_needed_is_refused(tmp_path, capsys):
    from protstore.cli import main

    assert main(["export-npz", str(tmp_path / "s.zarr"), "--plan", "p",
                 "--out", "s3://bucket/run"]) == 1
    assert "--out s3://bucket/run: a URL; export-npz writes local files" in capsys.readouterr().err
    assert not (Path.cwd() / "s3:").exists()


def test_the_api_page_is_generated_from_the_current_docstrings():
    """docs/api.md is what docs/gen_api.py writes now (`make api` after changing an API)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "docs" / "gen_api.py"
    spec = importlib.util.spec_from_file_location("gen_api", path)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    page = gen.render()
    assert "### `open_store(" in page and "### `BatchLoader(" in page
    assert page == gen.PAGE.read_text(), "docs/api.md is stale: run `make api`"
