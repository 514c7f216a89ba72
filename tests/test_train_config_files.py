"""`protstore train --config`: TOML/YAML/JSON files, flags over them, one-line errors; the
metrics loggers (CSV, TensorBoard, user objects)."""

import argparse
import csv
import json
import shutil
import struct
import sys
from pathlib import Path

import pytest

from protstore.cli import build_parser, main
from protstore.cli.training import TRAIN_FLAGS, _train_actions, train_options
from protstore.errors import ConfigError
from protstore.batching import LoaderConfig
from protstore.train import TrainConfig, train

TOML = """\
epochs = 2
batch_size = 8
schedule = "sequential"
learning_rate = 1e-3
loss_weighting = "frame"

[model_options]
max_neighbors = 16

[run]
plan = "p"
out = "runs/r1"
log = ["csv"]
temperature = 320
"""
DOC = {"epochs": 2, "batch_size": 8, "schedule": "sequential", "learning_rate": 1e-3,
       "loss_weighting": "frame", "model_options": {"max_neighbors": 16},
       "run": {"plan": "p", "out": "runs/r1", "log": ["csv"], "temperature": 320}}


def options(*argv):
    return train_options(build_parser().parse_args(["train", *argv]))


def train_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def test_toml_yaml_and_json_files_give_the_same_config(tmp_path):
    (tmp_path / "run.toml").write_text(TOML)
    (tmp_path / "run.json").write_text(json.dumps(DOC))
    names = ["run.toml", "run.json"]
    if __import__("importlib").util.find_spec("yaml"):
        import yaml
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(DOC))
        names.append("run.yaml")
    expected = TrainConfig(epochs=2, schedule="sequential", learning_rate=1e-3,
                           loss_weighting="frame", model_options={"max_neighbors": 16},
                           loader=LoaderConfig(batch_size=8))
    for name in names:
        path = str(tmp_path / name)
        assert TrainConfig.from_file(path) == expected, name
        fields, run = options("--config", path)
        assert TrainConfig.from_dict(fields) == expected, name
        assert (run["plan"], run["out"], run["log"], run["temperature"]) == \
            ("p", "runs/r1", ["csv"], 320.0), name
    # a run's own config.json is a config file too
    (tmp_path / "config.json").write_text(json.dumps(expected.to_dict()))
    assert TrainConfig.from_file(tmp_path / "config.json") == expected


def test_flags_override_the_file(tmp_path):
    (tmp_path / "run.toml").write_text(TOML)
    fields, run = options("--config", str(tmp_path / "run.toml"), "--epochs", "5", "--lr", "0.01",
                          "--model-option", "cutoff=8", "--plan", "q", "--log", "tensorboard",
                          "--no-progress")
    config = TrainConfig.from_dict(fields)
    assert (config.epochs, config.learning_rate, config.loader.batch_size) == (5, 0.01, 8)
    assert config.model_options == {"max_neighbors": 16, "cutoff": 8}  # per key
    assert (run["plan"], run["out"], run["log"], run["no_progress"]) == \
        ("q", "runs/r1", ["tensorboard"], True)
    _, run = options("--config", str(tmp_path / "run.toml"), "--log", "csv,tensorboard",
                     "--log", "csv")
    assert run["log"] == ["csv", "tensorboard", "csv"]
    _, run = options("--config", str(tmp_path / "run.toml"), "--resume", "runs/r1")
    assert (run["out"], run["resume"]) == (None, "runs/r1")  # the same file resumes its run
    (tmp_path / "mp.toml").write_text("[run]\nprocess_id = 1\nnum_processes = 2\n")
    _, run = options("--config", str(tmp_path / "mp.toml"), "--process-id", "0")
    assert (run["process_id"], run["num_processes"]) == (0, 2)  # 0 is given, not unset


def test_every_option_of_train_is_settable_in_the_file(tmp_path):
    """Walks the train subcommand's parser: each option is a TrainConfig key (at the top level)
    or a key of the [run] table, and a file setting all of them resolves to what it says."""
    from protstore.schemas import load_schema
    from protstore.train.config import LOADER_FIELDS
    fields = {f.name for f in __import__("dataclasses").fields(TrainConfig)}
    schema = load_schema("train_config")["properties"]
    assert set(schema) == fields | set(LOADER_FIELDS)  # the file's top level
    assert set(schema["loader"]["properties"]) == set(LOADER_FIELDS)
    run_keys = _train_actions()
    values = {str: "v", int: 3, float: 2.5}
    top, table, want_run = {}, {}, {}
    for action in train_parser()._actions:
        if action.dest in ("help", "config"):  # the file itself
            continue
        if action.dest in TRAIN_FLAGS:
            field = TRAIN_FLAGS[action.dest]
            assert field in fields | set(LOADER_FIELDS), action.dest
            top[field] = TrainConfig().flat()[field] if field != "model_options" \
                else {"k": 1}
            continue
        assert action.dest in run_keys, f"--{action.dest} cannot be set in a config file"
        if action.dest == "log":
            table["log"], want_run["log"] = "csv,tensorboard", ["csv", "tensorboard"]
        elif action.dest == "storage_options":
            table[action.dest], want_run[action.dest] = {"anon": True}, '{"anon": true}'
        elif isinstance(action, argparse._StoreTrueAction):
            table[action.dest] = want_run[action.dest] = True
        else:
            value = next(v for t, v in values.items()
                         if action.type is None and t is str
                         or action.type is not None and t is not str
                         and isinstance(action.type(str(v)), t))
            table[action.dest] = value
            want_run[action.dest] = action.type(str(value)) if action.type else value
    top["epochs"] = 4  # not a default, so it shows
    (tmp_path / "all.json").write_text(json.dumps({**top, "run": table}))
    got_fields, got_run = options("--config", str(tmp_path / "all.json"))
    assert got_fields == top
    assert got_run == want_run
    # run.json records the same options (less storage_options), per schemas/run.json
    from protstore.cli.training import NOT_RECORDED
    recorded = set(load_schema("run")["properties"]["options"]["properties"])
    assert recorded == set(run_keys) - set(NOT_RECORDED) | {"config"}


@pytest.mark.parametrize("name, body, words", [
    ("run.toml", "epochs = 2\nlerning_rate = 0.1\n",
     ["unknown key 'lerning_rate'", "did you mean 'learning_rate'", "allowed: batch_beads"]),
    ("run.toml", 'schedule = "x"\n',
     ["schedule must be one of (interleaved, sequential), not 'x'"]),
    ("run.toml", "epochs = 0\n", ["epochs must be an integer >= 1, not 0"]),
    ("run.toml", "[run]\nplann = 'p'\n", ["unknown key 'run.plann'", "allowed: coordinator"]),
    ("run.toml", "[run]\ntemperature = -3\n", ["run.temperature must be a positive"]),
    ("run.toml", "[run]\nlog = 'csv,tb'\n", ["run.log", "unknown logger 'tb'", "csv, tensorboard"]),
    ("run.toml", "[run]\nepochs = 2\n", ["run.epochs is a training setting"]),
    ("run.toml", "plan = 'p'\n", ["plan is an option of the command"]),
    ("run.toml", "epochs = 2\nthis is not toml\n", ["not valid TOML", "line 2"]),
    ("run.json", '{"epochs": 2,', ["not valid JSON"]),
    ("run.yaml", "epochs: [2\n", ["not valid YAML"]),
    ("run.toml", "batch_size = 'eight'\n", ["batch_size must be an integer >= 1, not 'eight'"]),
])
def test_bad_files_give_one_line_errors_naming_file_and_key(tmp_path, capsys, name, body, words):
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    path = tmp_path / name
    path.write_text(body)
    assert main(["train", "--config", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"protstore: error: {path}: "), err
    for word in words:
        assert word in err[0]


def test_yaml_without_pyyaml_says_what_to_install(tmp_path, capsys, monkeypatch):
    (tmp_path / "run.yml").write_text("epochs: 2\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml raises ImportError
    assert main(["train", "--config", str(tmp_path / "run.yml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run.yml" in err[0] and "pip install pyyaml" in err[0]


def test_a_missing_tensorboardx_names_the_extra(train_store, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    assert main(["train", train_store.url, "--plan", "p", "--out", str(tmp_path / "r"),
                 "--log", "tensorboard"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "protstore[tensorboard]" in err[0]
    assert not (tmp_path / "r").exists()  # refused before the run directory is written


def read_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """tag -> step -> value of every event file under RUN_DIR/tensorboard (the TFRecord
    framing read here, each record's CRCs checked, the events parsed by tensorboardX's own
    protobuf classes; the latest event of a step wins, as in TensorBoard)."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c

    found: dict[str, dict[int, float]] = {}
    for path in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            header = data[at:at + 8]
            (length,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[at + 8:at + 12])[0] == masked_crc32c(header)
            record = data[at + 12:at + 12 + length]
            assert struct.unpack("<I", data[at + 12 + length:at + 16 + length])[0] == \
                masked_crc32c(record)
            at += 16 + length
            event = Event.FromString(record)
            for value in event.summary.value:
                found.setdefault(value.tag, {})[event.step] = value.simple_value
    return found


def read_csv_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def csv_row(line: dict) -> dict:
    """What metrics.csv holds for a metrics.jsonl line."""
    from protstore.train.loggers import flat_metrics
    return {k: "" if v is None else repr(v) if isinstance(v, float) else str(v)
            for k, v in flat_metrics(line).items()}


def jsonl(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_run_from_a_toml_file_logs_to_tensorboard_and_csv_and_resumes(train_store, tmp_path):
    pytest.importorskip("tensorboardX")
    run = tmp_path / "run"
    (tmp_path / "run.toml").write_text(f"""\
epochs = 2
batch_size = 8
model = "plugin_models:pairwise_species"

[run]
store = "{train_store.url}"
plan = "p"
out = "{run}"
log = ["tensorboard"]
no_progress = true
""")
    assert main(["train", "--config", str(tmp_path / "run.toml"), "--log", "csv"]) == 0
    lines = jsonl(run)
    assert [m["step"] for m in lines][0] == 0 and len(lines) == 3
    # the run keeps what it was made with: the resolved TrainConfig and the command's options
    assert TrainConfig.of_run(run / "config.json") == TrainConfig(
        epochs=2, model="plugin_models:pairwise_species", loader=LoaderConfig(batch_size=8))
    run_doc = json.loads((run / "run.json").read_text())
    assert run_doc["loggers"] == ["csv"]
    assert run_doc["options"]["log"] == ["csv"] and run_doc["options"]["out"] == str(run)
    assert run_doc["options"]["config"] == str(tmp_path / "run.toml")
    # CSV: a stable header, rows equal to metrics.jsonl's
    rows = read_csv_rows(run)
    assert list(rows[0]) == ["phase", "bucket", "epoch", "step", "train_loss", "train_rmse",
                             "val_rmse", "val_rmse_bucket_0", "val_rmse_bucket_1", "frames",
                             "frames_per_s", "data_wait_s", "epoch_time_s", "wall_time_s"]
    assert rows == [csv_row(m) for m in lines]
    # TensorBoard was not asked for on the command line (--log csv overrides the file's)
    assert not (run / "tensorboard").exists()

    # cut after epoch 1 (a kill before epoch 2's checkpoint), resume with TensorBoard as well
    cut = tmp_path / "cut"
    shutil.copytree(run, cut)
    from protstore.checkpoints import list_checkpoints
    for p, a in list_checkpoints(cut):
        if a["step"] > lines[1]["step"]:
            shutil.rmtree(p)
    for name in ("final", "best"):
        shutil.rmtree(cut / name)
    assert main(["train", train_store.url, "--plan", "p", "--resume", str(cut),
                 "--model", "plugin_models:pairwise_species", "--log", "csv,tensorboard",
                 "--no-progress"]) == 0
    resumed = jsonl(cut)
    assert [m["step"] for m in resumed] == [m["step"] for m in lines]
    assert read_csv_rows(cut) == [csv_row(m) for m in resumed]  # no row twice
    scalars = read_scalars(cut)
    for m in resumed:  # the history written at open, then the resumed epoch
        assert scalars["val/rmse"][m["step"]] == pytest.approx(m["val_rmse"], rel=1e-6)
        for k, v in m["val_rmse_per_bucket"].items():
            assert scalars[f"val/rmse_bucket_{k}"][m["step"]] == pytest.approx(v, rel=1e-6)
    assert sorted(scalars["train/loss"]) == [m["step"] for m in resumed[1:]]
    assert scalars["train/loss"][resumed[2]["step"]] == \
        pytest.approx(resumed[2]["train_loss"], rel=1e-6)
    # a resume whose config file disagrees with the run's config.json is refused
    (tmp_path / "again.toml").write_text("epochs = 3\n")
    assert main(["train", train_store.url, "--plan", "p", "--resume", str(cut),
                 "--config", str(tmp_path / "again.toml")]) == 1


@pytest.mark.slow
def test_a_user_logger_from_python_receives_every_line(train_store, tmp_path):
    class Recorder:
        def __init__(self):
            self.lines, self.closed = [], 0

        def log(self, line):
            self.lines.append(line)

        def close(self):
            self.closed += 1

    rec = Recorder()
    result = train(train_store, train_store.plan("p"), tmp_path / "run",
                   TrainConfig(epochs=1, model="plugin_models:pairwise_species",
                               loader=LoaderConfig(batch_size=8)),
                   progress=False, echo=lambda m: None, loggers=[rec, "csv"])
    assert rec.lines == result.metrics == jsonl(tmp_path / "run") and len(rec.lines) == 2
    assert rec.closed == 1
    assert read_csv_rows(tmp_path / "run") == [csv_row(m) for m in rec.lines]
    with pytest.raises(ConfigError, match=r"logger <object object at 0x[0-9a-f]+>: not a "
                                          r"registered name \(csv, tensorboard\) nor an object"):
        train(train_store, train_store.plan("p"), tmp_path / "other", loggers=[object()])
    assert not (tmp_path / "other").exists()  # refused before the run directory is written


def test_the_loader_is_a_table_of_the_config_and_its_fields_may_stay_at_the_top(tmp_path):
    """TrainConfig nests the training loader's LoaderConfig: a ``[loader]`` table and the flat
    keys of older documents give one config and one hash; a key given both ways, a key the run
    sets and an unknown loader key are one-line errors naming the file."""
    nested = "epochs = 2\n[loader]\nbatch_size = 8\nprefetch = 2\nread_threads = 3\n"
    flat = "epochs = 2\nbatch_size = 8\nprefetch = 2\nread_threads = 3\n"
    (tmp_path / "nested.toml").write_text(nested)
    (tmp_path / "flat.toml").write_text(flat)
    a, b = (TrainConfig.from_file(tmp_path / f"{n}.toml") for n in ("nested", "flat"))
    assert a == b and a.hash() == b.hash()
    assert (a.loader.batch_size, a.loader.prefetch, a.loader.read_threads) == (8, 2, 3)
    assert a.loader.buffer_bytes == TrainConfig().loader.buffer_bytes  # the rest: defaults
    assert a.to_dict()["loader"]["batch_size"] == 8 and "batch_size" not in a.to_dict()
    assert TrainConfig.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    assert TrainConfig().replace(batch_size=4).loader.batch_size == 4
    assert TrainConfig().loader.batch_size == 16  # the training default, not the loader's 32
    assert a.hash() != a.replace(read_threads=4).hash()  # it decides the order
    for text, says in (("batch_size = 4\n[loader]\nbatch_size = 8\n", "given twice"),
                       ("[loader]\nbatch_sise = 8\n", "unknown key 'loader.batch_sise' "
                                                        "(did you mean 'loader.batch_size'?)"),
                       ("[loader]\nsplit = 'val'\n", "unknown key 'loader.split'"),
                       ("[loader]\nprefetch = -1\n", "loader.prefetch must be an integer >= 0")):
        (tmp_path / "bad.toml").write_text(text)
        with pytest.raises(ConfigError, match="bad.toml") as err:
            TrainConfig.from_file(tmp_path / "bad.toml")
        assert says in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="loader.split is set by the training run"):
        TrainConfig(loader=LoaderConfig(split="val"))
