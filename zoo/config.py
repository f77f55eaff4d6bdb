"""The typed config: YAML (safe) in, a frozen, validated `Config` out; dotted overrides; clear errors."""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from zoo.errors import ConfigError, did_you_mean


SEED_MAX = 2**32 - 1  # seeds are 32-bit (JAX keys take up to 2**63 - 1, NumPy any; one bound for all)
MAX_EVAL_BATCH = 1 << 20  # every evaluation batch is padded to this size and held in memory at once


def ranged(default, test, must: str) -> dataclasses.Field:
    """A schema field with a range: `test(value)` must hold, else the config is refused with
    '<key>: <value> is out of range; it must be <must>'. The one range mechanism of every schema (the
    sections below and the compare schema), read by `build_section` from the field's metadata."""
    return dataclasses.field(default=default, metadata={"range": (test, must)})


def _at_least(low: int, note: str = ""):
    """(test, must) of a count: at least `low`; None (the field's 'automatic' or 'off') passes."""
    return (lambda v: v is None or v >= low), f"at least {low}{note}"


def _seed(default: int) -> dataclasses.Field:
    return ranged(default, lambda v: 0 <= v <= SEED_MAX, f"an integer from 0 to {SEED_MAX}")


def _classes_ok(classes) -> bool:
    return len(classes) >= 2 and len(set(classes)) == len(classes) and all(
        isinstance(c, str) or c >= 0 for c in classes)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    # digits | mnist1d | mnist1d_shuffled (built in), or a file format: npz | csv | image_folder | idx |
    # cifar10 | cifar100, read from `path`
    name: str = "digits"
    path: str | None = None  # a file or folder, relative to the working directory or absolute
    batch_size: int = ranged(64, *_at_least(1))
    eval_batch_size: int = ranged(500, lambda v: 1 <= v <= MAX_EVAL_BATCH,
                                  f"from 1 to {MAX_EVAL_BATCH} (each evaluation batch is padded to it in memory)")
    shift: int = ranged(0, *_at_least(0))  # augmentation: random shift of up to this many pixels/steps (0: none)
    # fraction of train held out for selection (stratified); 0: none
    validation: float = ranged(0.1, lambda v: 0 <= v < 1, "in [0, 1): the fraction of train held out (0: none)")
    seed: int = _seed(0)  # fixes the validation split and any carved test split (independent of the run's seed)
    # csv, image_folder: fraction carved out as test when there is no test split
    test: float | None = ranged(None, lambda v: v is None or 0 < v < 1,
                                "in (0, 1) (or null: the source's own test split)")
    test_path: str | None = None  # csv: a separate file for the test split
    label: str | None = None  # csv: the label column
    # image_folder: resize every image to [H, W]
    image_size: tuple[int, ...] | None = ranged(None, lambda v: v is None or (len(v) == 2 and min(v) >= 1),
                                                "[height, width], positive")
    # image_folder: 1 (grey) or 3 (RGB); default from the first image
    channels: int | None = ranged(None, lambda v: v in (None, 1, 3), "1 (grey) or 3 (RGB)")
    label_mode: Literal["fine", "coarse"] = "fine"  # cifar100
    # npz: integer 2-D inputs are token ids below this
    vocab_size: int | None = ranged(None, lambda v: v is None or 2 <= v <= 1 << 24,
                                    "from 2 to 16777216 (or null)")
    # Standardise inputs by the training split's mean/std (per channel; per column for csv).
    # null: yes for file sources, no for the built-in datasets (already scaled to [0, 1]).
    normalize: bool | None = None
    # decoding processes; null: from the cores for lazily decoded sources, else 0
    workers: int | None = ranged(None, lambda v: v is None or 0 <= v <= 256,
                                 "from 0 to 256 (or null: automatic)")
    # keep only these classes (indices, or names such as "cat"), relabelled 0..k-1 in this order (names kept)
    classes: tuple[int | str, ...] | None = ranged(None, lambda v: v is None or _classes_ok(v),
                                                   "a list of at least two distinct class indices or names "
                                                   "(or null: all)")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"
    # Checked against the model by zoo.models.build. Every model takes precision: float32 | bfloat16
    # (bfloat16 compute; parameters, BatchNorm statistics, softmax and loss stay float32).
    hparams: dict = dataclasses.field(default_factory=dict)


# Keys of `model:` that are not hyperparameters: zoo.models.build takes them from the data.
MODEL_RESERVED = {"num_classes": "the class count comes from the data (data.classes keeps a subset)",
                  "vocab_size": "set data.vocab_size instead", "model_name": "set model.name instead",
                  "parent": "it is Flax's own field"}


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    name: Literal["sgd", "adam", "adamw", "rmsprop"] = "adamw"
    learning_rate: float = ranged(1e-3, lambda v: v > 0, "greater than 0")
    momentum: float = ranged(0.9, lambda v: 0 <= v < 1, "in [0, 1)")  # sgd and rmsprop
    nesterov: bool = False
    # decoupled for adamw, added to the gradient otherwise
    weight_decay: float = ranged(0.0, lambda v: v >= 0, "at least 0")
    schedule: Literal["constant", "cosine", "warmup_cosine", "step"] = "cosine"
    warmup_steps: int = ranged(0, *_at_least(0))
    # "step": fractions of the run where lr drops
    decay_boundaries: tuple[float, ...] = ranged((0.5, 0.75), lambda v: all(0 < b < 1 for b in v),
                                                 "fractions in (0, 1)")
    decay_factor: float = ranged(0.1, lambda v: 0 < v <= 1, "in (0, 1]")
    clip_norm: float | None = ranged(None, lambda v: v is None or v > 0, "greater than 0 (or null)")  # global norm


@dataclasses.dataclass(frozen=True)
class EarlyStoppingConfig:
    metric: Literal["accuracy", "loss"] = "accuracy"  # on the validation split, never test
    # evaluations without improvement before stopping (0: off)
    patience: int = ranged(0, *_at_least(0, " (0: off)"))
    min_delta: float = ranged(0.0, lambda v: v >= 0, "at least 0")  # a change smaller than this is no improvement


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int | None = ranged(None, *_at_least(1, " (or null)"))  # give steps or epochs
    epochs: int | None = ranged(None, *_at_least(1, " (or null)"))
    # steps between test evaluations (0: at checkpoints and at the end)
    eval_every: int = ranged(0, *_at_least(0))
    log_every: int = ranged(50, *_at_least(1))
    label_smoothing: float = ranged(0.0, lambda v: 0 <= v < 1, "in [0, 1)")
    # Training steps per jitted call (lax.scan over batches). null: on CPU 10 for MLPs, where
    # dispatch dominates, 1 otherwise (XLA on CPU runs convolutions inside a scan ~20x slower);
    # on GPU and TPU 10 for every family.
    steps_per_call: int | None = ranged(None, *_at_least(1, " (or null: automatic)"))
    early_stopping: EarlyStoppingConfig = dataclasses.field(default_factory=EarlyStoppingConfig)
    # Gradient accumulation: each step's batch of data.batch_size examples (the optimizer's batch) is
    # split into this many micro-batches, run one after another, and their averaged gradients make one
    # optimizer step (optax.MultiSteps). Steps, epochs, the schedule and checkpoints count optimizer
    # steps, so results match the unsplit batch while activation memory shrinks by this factor.
    # data.batch_size must divide by it. On CPU it costs speed (convolutions run slower inside a scan).
    accumulate: int = ranged(1, *_at_least(1, " (1: no accumulation)"))
    # Deterministic ops where the platform needs asking (GPU: XLA's --xla_gpu_deterministic_ops, so
    # scatter-based backwards and autotuned kernels give the same bits every run). CPU and TPU
    # already are; nothing is set there.
    deterministic: bool = True
    # XLA compiler options for the jitted train, eval and predict functions ({name: value}, e.g.
    # {xla_cpu_experimental_ynn_fusion_type: LIBRARY_FUSION_TYPE_DOT}); replaces the model family's
    # measured CPU defaults (zoo/training/step.py CPU_FAMILY_OPTIONS_BY_ISA). null: those defaults; {}: none.
    xla_options: dict | None = ranged(None, lambda v: v is None or all(
        isinstance(k, str) and isinstance(x, (str, bool, int)) and not isinstance(x, float) for k, x in v.items())
        and _known_xla_options(v),
        "a mapping of XLA option names to strings, true/false or integers (or null: the family's defaults)")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every: int = ranged(500, *_at_least(1))  # steps between checkpoints; one is always written at the end
    keep: int = ranged(2, *_at_least(1))  # latest N
    keep_best: int = ranged(1, *_at_least(0))  # best K by `metric`
    metric: Literal["accuracy", "loss"] = "accuracy"
    async_save: bool = True


@dataclasses.dataclass(frozen=True)
class InitFromConfig:
    run: str | None = None  # a run directory whose checkpoint initialises this run (fine-tuning)
    # "latest", "best" (validation) or a step number
    step: int | str = ranged("latest", lambda v: v in ("latest", "best") if isinstance(v, str) else v >= 0,
                             "'latest', 'best' or a step number")
    skip: tuple[str, ...] = ()  # parameter patterns re-initialised instead (e.g. a new head)


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    tensorboard: bool = False  # event files beside metrics.jsonl (needs the tensorboard extra)


@dataclasses.dataclass(frozen=True)
class Config:
    # The name is the default run directory runs/<name>: one plain path component, no way out.
    name: str = ranged("run", lambda v: re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v) is not None,
                       "letters, digits, '_', '.' or '-', starting with a letter or digit (it names runs/<name>)")
    seed: int = _seed(0)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    init_from: InitFromConfig = dataclasses.field(default_factory=InitFromConfig)
    freeze: tuple[str, ...] = ()  # parameter patterns kept fixed during training (e.g. "Conv_*")
    logging: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)

    def to_dict(self) -> dict:
        raw = dataclasses.asdict(self)
        raw["model"] = {"name": self.model.name, **self.model.hparams}
        if self.logging == LoggingConfig():  # runs written before this section resume unchanged
            del raw["logging"]
        return json.loads(json.dumps(raw))  # tuples to lists: the YAML/JSON form

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.train.steps if self.train.steps else self.train.epochs * steps_per_epoch


# The only XLA options a config (train.xla_options, also as stored in a run directory) may name:
# performance options: those of the per-family table in zoo/training/step.py (a test checks it) and those benchmarks/ab_xla_options.py measured (benchmarks/NOTES.md),
# plus the GPU determinism option compiler_options sets itself. Anything else is refused: XLA has
# options that write files where they say (xla_dump_to, ...), and a run directory may come from anyone.
KNOWN_XLA_OPTIONS = tuple(sorted({
    "xla_cpu_experimental_ynn_fusion_type", "xla_cpu_enable_fast_min_max", "xla_cpu_use_multi_output_fusion",
    "xla_cpu_enable_concurrency_optimized_scheduler", "xla_cpu_use_fusion_emitters", "xla_cpu_multi_thread_eigen",
    "xla_cpu_parallel_codegen_split_count", "xla_cpu_prefer_vector_width", "xla_gpu_deterministic_ops",
}))


def check_xla_options(options: dict | None, where: str = "train.xla_options") -> None:
    """Raises a one-line ConfigError naming the first option outside KNOWN_XLA_OPTIONS."""
    unknown = sorted(str(name) for name in (options or {}) if name not in KNOWN_XLA_OPTIONS)
    if unknown:
        raise ConfigError(f"{where}: '{unknown[0][:80]}' is not an XLA option zoo passes on (it passes only these "
                          f"performance options: {', '.join(KNOWN_XLA_OPTIONS)}): remove it")


def _known_xla_options(options: dict) -> bool:
    check_xla_options(options)  # anything else: a one-line ConfigError naming the option
    return True


_TYPE_NAMES = {int: ("an integer", "integers"), float: ("a number", "numbers"), bool: ("true or false", "true/false"),
               str: ("a string", "strings"), dict: ("a mapping", "mappings"), type(None): ("null", "nulls")}


def _type_name(tp, plural: bool = False) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a, plural) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0], plural=True)}"
    return _TYPE_NAMES.get(tp, (str(tp), str(tp)))[plural]


def coerce(value: Any, tp, path: str) -> Any:
    """Returns `value` as type `tp`, or raises ConfigError naming the key and what it must be."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return coerce(value, option, path)
            except ConfigError:
                continue
    elif origin is Literal:
        if value in typing.get_args(tp):
            return value
        hint = did_you_mean(value, typing.get_args(tp))
        raise ConfigError(f"{path}: '{value}' is not valid: {hint}choose {_type_name(tp)}")
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(coerce(v, typing.get_args(tp)[0], f"{path}[{i}]") for i, v in enumerate(value))
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict:
        if isinstance(value, dict):
            return value
    raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def build_section(cls, raw: Any, path: str):
    """An instance of the schema dataclass `cls` from the mapping `raw` found at `path` (dotted, "" for
    the top): unknown keys, wrong types and values out of a field's range (its metadata "range", see
    `ranged`) are ConfigErrors naming the key. Nested dataclass fields are built the same way."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping of keys, got {raw!r}")
    if cls is ModelConfig:
        return _model_section(raw, path)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"unknown key '{where}': {did_you_mean(key, fields)}valid keys: {', '.join(fields)}")
    values = {}
    for name, field in fields.items():
        key_path = f"{path}.{name}" if path else name
        if name not in raw:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = build_section(tp, raw[name], key_path)
        else:
            values[name] = coerce(raw[name], tp, key_path)
        rule = field.metadata.get("range")
        if rule:
            test, must = rule
            if not test(values[name]):
                raise ConfigError(f"{key_path}: {values[name]!r} is out of range; it must be {must}")
    return cls(**values)


def _model_section(raw: dict, path: str) -> ModelConfig:
    name = raw.get("name", ModelConfig.name)
    if not isinstance(name, str):
        raise ConfigError(f"{path}.name: expected a string, got {name!r}")
    for key, why in MODEL_RESERVED.items():
        if key in raw:
            raise ConfigError(f"{path}.{key} is not a hyperparameter: {why}; remove it from the model section")
    return ModelConfig(name, {k: v for k, v in raw.items() if k != "name"})


def from_dict(raw: dict) -> Config:
    config = build_section(Config, raw, "")
    if (config.train.steps is None) == (config.train.epochs is None):
        raise ConfigError("train: give exactly one of train.steps or train.epochs")
    if config.data.batch_size % config.train.accumulate:
        raise ConfigError(f"train.accumulate {config.train.accumulate} does not divide data.batch_size "
                          f"{config.data.batch_size} (the optimizer's batch, split into micro-batches): use a "
                          "divisor of it")
    if config.init_from.skip and not config.init_from.run:
        raise ConfigError("init_from.skip needs init_from.run: the run directory to initialise from")
    return config


MAX_CONFIG_BYTES = 1 << 20  # a config is a few hundred bytes; anything this large is not one
_KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _safe_yaml(text: str, where: str):
    """yaml.safe_load of `text`, refusing aliases (*name) first: a few hundred bytes of nested aliases
    (a "billion laughs") expand to gigabytes once the config is copied or written out as JSON."""
    anchored = False  # an alias without an anchor before it refers to nothing: a plain YAML error
    for token in yaml.scan(text, Loader=yaml.SafeLoader):
        anchored = anchored or isinstance(token, yaml.AnchorToken)
        if anchored and isinstance(token, yaml.AliasToken):
            raise ConfigError(f"{where}: YAML aliases (*name, at line {token.start_mark.line + 1}) are not allowed "
                              "in configs: write the value out in full (a config can share another's keys with base:)")
    return yaml.safe_load(text)


def load_yaml(path: str | Path) -> dict:
    """Reads a YAML mapping with yaml.safe_load; every failure is a ConfigError naming the file. Nothing
    of a file that is not a config mapping is quoted back (a `base:` may name any file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist: check the path (configs live in configs/)")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} is {path.stat().st_size:,} bytes, not a config (at most {MAX_CONFIG_BYTES:,}): "
                              "check the path")
        raw = _safe_yaml(path.read_text(), str(path))
    except yaml.constructor.ConstructorError as error:
        raise ConfigError(f"{path}: YAML tag {error.problem.split()[-1] if error.problem else ''} is not "
                          "allowed (configs hold plain values only)") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: YAML syntax error{where}: {getattr(error, 'problem', error)}") from None
    except (UnicodeDecodeError, OSError) as error:
        raise ConfigError(f"{path}: cannot read the file ({error})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys, got {type(raw).__name__}")
    if not all(isinstance(key, str) and _KEY_NAME.fullmatch(key) for key in raw):
        raise ConfigError(f"{path} is not a config: it parses as a YAML mapping, but not of key names (a config "
                          "maps keys such as name, data, model to values): check the path")
    return raw


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Applies `a.b=value` strings (values parsed as YAML) to a raw config mapping."""
    raw = json.loads(json.dumps(raw))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.path=value, e.g. optimizer.learning_rate=3e-4")
        key, text = item.split("=", 1)
        try:
            value = _safe_yaml(text, f"override '{key}'") if text else ""
        except yaml.YAMLError:
            value = text
        set_dotted(raw, key.strip(), value, f"override '{item}'")
    return raw


def set_dotted(raw: dict, key: str, value, where: str | None = None) -> None:
    """Puts `value` at the dotted `key` ('optimizer.learning_rate') of a raw config mapping, making
    the sections on the way; one ConfigError when a part on the way is not a section."""
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where or repr(key)}: '{part}' is not a section")
    node[parts[-1]] = value


def merge(base: dict, child: dict) -> dict:
    """`base` with `child`'s keys put in, section by section (mappings merge, other values replace).
    A `model` section naming another model than the base's replaces it whole: the base model's
    hyperparameters mean nothing to another model."""
    out = dict(base)
    for key, value in child.items():
        both_sections = isinstance(value, dict) and isinstance(out.get(key), dict)
        if both_sections and key == "model" and value.get("name", out[key].get("name")) != out[key].get("name"):
            both_sections = False
        out[key] = merge(out[key], value) if both_sections else value
    return out


def load_inherited(path: str | Path, _chain: tuple = (), origins: dict | None = None) -> dict:
    """A config mapping with its `base:` resolved: `base: ../mnist1d/cnn.yaml` (relative to the file)
    names a config whose keys this one starts from; the file then gives only the keys that differ.
    Bases may have bases; a cycle or a missing base is a ConfigError naming the file. `origins`, when
    given, gets {'section.key' (or 'key'): the file that set it} for every key, so that an error can
    name the base a bad key came from."""
    path = Path(path)
    raw = load_yaml(path)
    inherited = {}
    if "base" in raw:
        base = raw.pop("base")
        if not isinstance(base, str) or not base:
            raise ConfigError(f"{path}: base: expected the path of another config, e.g. ../mnist1d/cnn.yaml, "
                              f"got {base!r}")
        base_path = path.parent / base
        if not base_path.is_file():
            raise ConfigError(f"{path}: base '{base}' does not exist (looked for '{base_path}'): the path is "
                              "relative to the file that names it")
        chain = (*_chain, path.resolve())
        if base_path.resolve() in chain:
            cycle = " -> ".join(str(p) for p in (*chain, base_path.resolve()))
            raise ConfigError(f"{path}: base '{base}' makes a cycle ({cycle}): a config cannot inherit from itself")
        inherited = load_inherited(base_path, chain, origins)
    if origins is not None:  # after the bases: this file's keys win
        origins.update({f"{s}.{k}" if isinstance(v, dict) else s: path for s, v in raw.items()
                        for k in (v if isinstance(v, dict) else [s])})
    return merge(inherited, raw)


def load(path: str | Path, overrides: list[str] = ()) -> Config:
    return from_dict(apply_overrides(load_inherited(path), list(overrides)))


def as_config(value: Any, kind: type = Config, from_mapping=from_dict, from_path=load, where: str = "config"):
    """`value` as a `kind` (a `Config` unless told): itself; a path (str or Path) to a YAML file, read
    by `from_path` (`load`: `base:` inheritance included); or a dict, validated by `from_mapping`
    (`from_dict`). Anything else is a one-line ConfigError. Every public function taking a config
    calls this (zoo.fit, zoo.compare with CompareConfig's readers)."""
    if isinstance(value, kind):
        return value
    if isinstance(value, str) or hasattr(value, "__fspath__"):
        return from_path(value)
    if isinstance(value, dict):
        return from_mapping(value)
    raise ConfigError(f"{where}: expected a {kind.__name__}, the path of a YAML config or a dict of its keys, got "
                      f"{type(value).__name__}: pass one of those")
