"""Training configuration as data: a frozen dataclass, read from TOML, YAML or JSON and saved into
the run."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import json
import tomllib
from dataclasses import dataclass, field

from ..batching.loader import LoaderConfig
from ..errors import ConfigError
from ..model.energy import DEFAULT_MODEL
from ..model.spec import ModelSpec
from ..schemas import check_document

SCHEDULES = ("interleaved", "sequential")
PACKINGS = ("auto", "on", "off")
#: ``packing="auto"`` packs when it saves at least this fraction of an epoch's steps
PACKING_PAYS = 0.1
LOSS_WEIGHTINGS = ("bead", "frame")
#: the fields of the training loader a config sets (``TrainConfig.loader``); the run sets the
#: others (the training split, its order, the seed, packing, the process's share)
LOADER_FIELDS = ("batch_size", "batch_beads", "buffer_bytes", "prefetch", "read_threads",
                 "open_proteins")
#: the training loader's defaults (the loader's own, but 16 samples a batch)
TRAINING_LOADER = LoaderConfig(batch_size=16)
# fields added after runs had been written, with the behaviour those older runs had (loader
# fields by their own names, as the documents of older runs held them at the top level)
OLDER_RUNS = {"batch_beads": None, "early_stopping_patience": 0, "loss_weighting": "frame",
              "packing": "off", "read_threads": None, "open_proteins": 512}
# fields older runs have that are gone (the loader's windows: its order changed with them, so
# such a run's checkpoints no longer match its config and are not resumed)
REMOVED = ("buffer_chunks",)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (saved as ``RUN_DIR/config.json``).

    schedule : ``interleaved`` (one model and optimizer state, batches of all buckets mixed in
        every epoch) or ``sequential`` (the predecessor's: all epochs on bucket 0 from the
        initial params, then bucket 1 from bucket 0's params with a fresh optimizer, ...).
    epochs : epochs per phase (interleaved has one phase; sequential one per bucket).
    loader : the training loader's :class:`~protstore.batching.LoaderConfig` (its
        ``LOADER_FIELDS``; the run sets the rest: ``split="train"``, the schedule's order and
        buckets, ``seed``, packing and the process's share). ``batch_size`` (16 here) samples
        per batch, or ``batch_beads``: max(1, batch_beads // N_max) samples in each bucket, so
        every step costs about the same and every real bead weighs about the same in the loss
        (docs/reference.md, "Loss weighting"); ``buffer_bytes``, ``prefetch``,
        ``read_threads`` and ``open_proteins`` bound its memory and work ahead, and decide its
        order with the seed. A document may give these fields at the top level too (as runs
        before 0.7 wrote them): ``TrainConfig.from_dict({"batch_size": 8})``.
    loss_weighting : ``bead`` (the default): every real bead's force components weigh the same
        in an epoch, whatever its protein's size, so the epoch's loss is the pooled force MSE
        that validation reports (a step's squared errors over the epoch's mean real beads per
        step); ``frame``: every step's loss is the mean over its own real beads, so a frame of
        a 24-residue protein weighs as much as one of 236 residues and the beads of short
        proteins ~10x more (the predecessor's weighting).
    learning_rate, warmup_steps, weight_decay, clip_norm : AdamW with linear warmup and cosine
        decay to 1% over each phase, after global-norm gradient clipping.
    checkpoint_every_steps : extra checkpoints every N steps (0: only at epoch ends).
    early_stopping_patience : end a phase after this many validated epochs without a lower
        validation RMSE than its best so far, step 0 (the priors alone) included; 0 (the
        default): train every epoch, since ``best/`` is chosen on validation anyway and early
        stopping only saves time.
    model, model_options : the learned energy ``package.module:factory`` and its keyword options.
    packing : ``auto`` (the default): training and validation batches are packed
        (``LoaderConfig(packing=True)``: several whole frames in a padded sample) when the model
        takes packed samples and packing saves at least 10% of an epoch's steps (the same
        arrays, hence the same cost a step, carry more frames); ``on``: always (an error for a
        model that does not take them); ``off``: never. The loss is the same either way.
    """

    epochs: int = 3
    loader: LoaderConfig = TRAINING_LOADER
    schedule: str = "interleaved"
    learning_rate: float = 2e-3
    warmup_steps: int = 20
    weight_decay: float = 1e-4
    clip_norm: float = 10.0
    seed: int = 0
    checkpoint_every_steps: int = 0
    model: str = DEFAULT_MODEL
    model_options: dict = field(default_factory=dict)
    early_stopping_patience: int = 0
    loss_weighting: str = "bead"
    packing: str = "auto"

    def __post_init__(self):
        if self.packing not in PACKINGS:
            raise ConfigError(f"packing must be one of {PACKINGS}, not {self.packing!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, not {self.schedule!r}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ConfigError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, not "
                              f"{self.loss_weighting!r}")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, not {self.epochs}")
        if not isinstance(self.loader, LoaderConfig):
            raise ConfigError(f"loader must be a LoaderConfig, not {self.loader!r}")
        for f in dataclasses.fields(LoaderConfig):
            if f.name not in LOADER_FIELDS and getattr(self.loader, f.name) != f.default:
                raise ConfigError(f"loader.{f.name} is set by the training run, not its config "
                                  f"(a config sets {', '.join(LOADER_FIELDS)})")
        for name in ("warmup_steps", "checkpoint_every_steps", "early_stopping_patience"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, not {getattr(self, name)}")
        for name, low in (("learning_rate", 0.0), ("clip_norm", 0.0), ("weight_decay", None)):
            value = float(getattr(self, name))
            if not math.isfinite(value) or (low is not None and value <= low) or value < 0:
                raise ConfigError(f"{name} must be a {'positive' if low is not None else 'non-negative'} "
                                  f"finite number, not {getattr(self, name)}")

    @property
    def model_spec(self) -> ModelSpec:
        """``model`` and ``model_options`` as one :class:`~protstore.model.spec.ModelSpec`."""
        return ModelSpec(self.model, self.model_options)

    def to_dict(self) -> dict:
        """The config document: the fields, with the loader's as a ``loader`` table."""
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        doc["loader"] = {name: getattr(self.loader, name) for name in LOADER_FIELDS}
        doc["model_options"] = dict(self.model_options)
        return doc

    def flat(self) -> dict:
        """:meth:`to_dict` with the loader's fields at the top level (how runs before 0.7
        wrote them, and how the command's flags name them)."""
        return flatten(self.to_dict())

    @classmethod
    def from_dict(cls, doc: dict, where: str = "training config") -> "TrainConfig":
        """From a (partial) config document, checked against schemas/train_config.json: a
        ConfigError naming ``where``, the key and what it may be. The loader's fields may be
        a ``loader`` table or top-level keys (not both for one field)."""
        check_fields(doc, where)
        doc = nest(doc, where)
        try:
            return cls(**{**doc, "loader": dataclasses.replace(TRAINING_LOADER,
                                                               **doc.get("loader", {}))})
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    @classmethod
    def of_run(cls, path) -> "TrainConfig":
        """A run's own ``config.json``: a field it lacks was written before that field existed
        and takes the value those runs had (not today's default)."""
        doc = {k: v for k, v in flatten(_read_document(path)).items() if k not in REMOVED}
        return cls.from_dict({**{k: v for k, v in OLDER_RUNS.items() if k not in doc}, **doc},
                             str(path))

    @classmethod
    def from_file(cls, path, storage_options: dict | None = None) -> "TrainConfig":
        """The TrainConfig of a config file (``read_config_file``: TOML, YAML or JSON), its
        ``run`` table (the command's own options, ``protstore train --config``) aside."""
        return cls.from_dict(split_config_file(read_config_file(path, storage_options),
                                               str(path))[0], str(path))

    def replace(self, **changes) -> "TrainConfig":
        """A copy with the changes that are not None; the loader's fields by their names
        (``config.replace(batch_size=8)``)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        loader = {k: changes.pop(k) for k in LOADER_FIELDS if k in changes}
        if loader:
            changes["loader"] = dataclasses.replace(changes.get("loader", self.loader), **loader)
        return dataclasses.replace(self, **changes)

    def hash(self) -> str:
        """``sha256:`` of the config's flat document (:meth:`flat`), less the fields added since
        runs were first written when they hold the value those runs had: an older run's hash is
        the one it was written with."""
        doc = self.flat()
        # fields that came later, at the value runs before them had: older runs' hashes stay
        # valid
        for name, before in OLDER_RUNS.items():
            if doc[name] == before:
                del doc[name]
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def flatten(doc: dict) -> dict:
    """A config document with its ``loader`` table's keys at the top level."""
    loader = doc.get("loader")
    if not isinstance(loader, dict):
        return dict(doc)
    return {**{k: v for k, v in doc.items() if k != "loader"}, **loader}


def nest(doc: dict, where: str = "training config") -> dict:
    """A config document with the loader's fields given at the top level moved into its
    ``loader`` table; a field given both ways is a ConfigError."""
    top = {k: doc[k] for k in LOADER_FIELDS if k in doc}
    if not top:
        return dict(doc)
    table = dict(doc.get("loader") or {})
    for key in top:
        if key in table:
            raise ConfigError(f"{where}: {key} is given twice, at the top level and as "
                              f"loader.{key}")
    return {**{k: v for k, v in doc.items() if k not in top}, "loader": {**table, **top}}


def _read_document(path) -> dict:
    from ..location import as_location

    try:
        return json.loads(as_location(path).read_bytes(""))
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
        raise ConfigError(f"{path}: cannot read training config ({exc})") from None


#: the table of a config file that holds the command's own options (``protstore train``)
RUN_TABLE = "run"


def config_format(path) -> str:
    """``toml`` (``.toml``), ``yaml`` (``.yaml``, ``.yml``) or ``json`` (anything else)."""
    name = str(path).lower()
    return "toml" if name.endswith(".toml") else \
        "yaml" if name.endswith((".yaml", ".yml")) else "json"


def read_config_file(path, storage_options: dict | None = None) -> dict:
    """The document of a config file, by its suffix: TOML (``tomllib``), YAML (needs PyYAML)
    or JSON; a one-line ConfigError naming the file when it cannot be read or parsed."""
    from ..location import as_location

    fmt = config_format(path)
    try:
        data = as_location(path, storage_options).read_bytes("")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read training config ({exc})") from None
    if fmt == "yaml":
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"{path}: reading a YAML config needs PyYAML (pip install pyyaml, "
                              f"or protstore[yaml]); or write it as TOML or JSON") from None
        errors: tuple = (ValueError, yaml.YAMLError)
    else:
        errors = (ValueError,)  # tomllib.TOMLDecodeError, JSONDecodeError, UnicodeDecodeError
    try:
        text = data.decode()
        doc = tomllib.loads(text) if fmt == "toml" else \
            yaml.safe_load(text) if fmt == "yaml" else json.loads(text)
    except errors as exc:
        what = " ".join(str(exc).split())  # YAML's messages span lines
        raise ConfigError(f"{path}: cannot read training config: not valid {fmt.upper()} "
                          f"({what})") from None
    if doc is None and fmt == "yaml":  # an empty YAML file
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a training config is a table of keys, not a "
                          f"{type(doc).__name__}")
    return doc


def split_config_file(doc: dict, where: str) -> tuple[dict, dict]:
    """(the TrainConfig keys, the ``run`` table) of a config file's document."""
    run = doc.get(RUN_TABLE, {})
    if not isinstance(run, dict):
        raise ConfigError(f"{where}: {RUN_TABLE} must be a table of the command's options, "
                          f"not {run!r}")
    return {k: v for k, v in doc.items() if k != RUN_TABLE}, run


def unknown_key(where: str, key: str, allowed, *, prefix: str = "",
                hints: dict | None = None) -> ConfigError:
    """``where: unknown key 'prefix.key' (allowed: ...)``, with the likeliest meant key."""
    import difflib

    meant = (hints or {}).get(key) or next(iter(difflib.get_close_matches(key, allowed, 1)), None)
    return ConfigError(f"{where}: unknown key {prefix + key!r}"
                       + (f" (did you mean {prefix + meant!r}?)" if meant else "")
                       + f" (allowed: {', '.join(sorted(allowed))})")


_KINDS = {"integer": "an integer", "number": "a number", "string": "a string",
          "object": "a table", "null": "null", "boolean": "true or false"}


def describe(prop: dict) -> str:
    """What a schema property allows, in words: ``an integer >= 1``, ``one of (a, b)``."""
    if "enum" in prop:
        return f"one of ({', '.join(map(str, prop['enum']))})"
    types = prop.get("type", [])
    text = " or ".join(_KINDS[t] for t in ([types] if isinstance(types, str) else types))
    if "minimum" in prop:
        text = text.replace(_KINDS["integer"], f"an integer >= {prop['minimum']}", 1) \
            .replace(_KINDS["number"], f"a number >= {prop['minimum']}", 1)
    if "exclusiveMinimum" in prop:
        text = text.replace(_KINDS["number"], f"a number > {prop['exclusiveMinimum']}", 1)
    if "pattern" in prop and "description" in prop:
        text += f" ({prop['description']})"
    return text


def check_fields(doc: dict, where: str) -> None:
    """Each key of a (partial) TrainConfig document is a field, each value one the field's
    schema (schemas/train_config.json) allows: else a one-line ConfigError naming ``where``,
    the key and what is allowed."""
    import jsonschema

    from ..schemas import load_schema

    props = load_schema("train_config")["properties"]
    for key, value in doc.items():
        if key not in props:
            raise unknown_key(where, key, props, hints=FLAG_NAMES)
        if key == "loader" and isinstance(value, dict):  # the loader's table, key by key
            inner = props[key]["properties"]
            for name, item in value.items():
                if name not in inner:
                    raise unknown_key(where, name, inner, prefix="loader.")
                if not jsonschema.Draft202012Validator(inner[name]).is_valid(item):
                    raise ConfigError(f"{where}: loader.{name} must be {describe(inner[name])}, "
                                      f"not {item!r}")
        elif not jsonschema.Draft202012Validator(props[key]).is_valid(value):
            raise ConfigError(f"{where}: {key} must be {describe(props[key])}, not {value!r}")
    check_document(doc, "train_config", where)  # what is not per key (none today)


#: ``protstore train`` flags whose TrainConfig field has another name (--lr: learning_rate)
FLAG_NAMES = {"lr": "learning_rate", "early_stopping": "early_stopping_patience",
              "checkpoint_every": "checkpoint_every_steps", "model_option": "model_options"}
