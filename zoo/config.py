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


@dataclasses.dataclass(frozen=True)
class DataConfig:
    # digits | mnist1d | mnist1d_shuffled (built in), or a file format: npz | csv | image_folder | idx |
    # cifar10 | cifar100, read from `path`
    name: str = "digits"
    path: str | None = None  # a file or folder, relative to the working directory or absolute
    batch_size: int = 64
    eval_batch_size: int = 500
    shift: int = 0  # augmentation: random shift of up to this many pixels/steps (0: none)
    validation: float = 0.1  # fraction of train held out for selection (stratified); 0: none
    seed: int = 0  # fixes the validation split and any carved test split (independent of the run's seed)
    test: float | None = None  # csv, image_folder: fraction carved out as test when there is no test split
    test_path: str | None = None  # csv: a separate file for the test split
    label: str | None = None  # csv: the label column
    image_size: tuple[int, ...] | None = None  # image_folder: resize every image to [H, W]
    channels: int | None = None  # image_folder: 1 (grey) or 3 (RGB); default from the first image
    label_mode: Literal["fine", "coarse"] = "fine"  # cifar100
    vocab_size: int | None = None  # npz: integer 2-D inputs are token ids below this
    # Standardise inputs by the training split's mean/std (per channel; per column for csv).
    # null: yes for file sources, no for the built-in datasets (already scaled to [0, 1]).
    normalize: bool | None = None
    workers: int | None = None  # decoding processes; null: from the cores for lazily decoded sources, else 0
    classes: tuple[int, ...] | None = None  # keep only these classes, relabelled 0..k-1 (names kept)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"
    # Checked against the model by zoo.models.build. Every model takes precision: float32 | bfloat16
    # (bfloat16 compute; parameters, BatchNorm statistics, softmax and loss stay float32).
    hparams: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    name: Literal["sgd", "adam", "adamw", "rmsprop"] = "adamw"
    learning_rate: float = 1e-3
    momentum: float = 0.9  # sgd and rmsprop
    nesterov: bool = False
    weight_decay: float = 0.0  # decoupled for adamw, added to the gradient otherwise
    schedule: Literal["constant", "cosine", "warmup_cosine", "step"] = "cosine"
    warmup_steps: int = 0
    decay_boundaries: tuple[float, ...] = (0.5, 0.75)  # "step": fractions of the run where lr drops
    decay_factor: float = 0.1
    clip_norm: float | None = None  # global-norm clipping


@dataclasses.dataclass(frozen=True)
class EarlyStoppingConfig:
    metric: Literal["accuracy", "loss"] = "accuracy"  # on the validation split, never test
    patience: int = 0  # evaluations without improvement before stopping (0: off)
    min_delta: float = 0.0  # a change smaller than this is no improvement


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int | None = None  # give steps or epochs
    epochs: int | None = None
    eval_every: int = 0  # steps between test evaluations (0: at checkpoints and at the end)
    log_every: int = 50
    label_smoothing: float = 0.0
    # Training steps per jitted call (lax.scan over batches). null: on CPU 10 for MLPs, where
    # dispatch dominates, 1 otherwise (XLA on CPU runs convolutions inside a scan ~20x slower);
    # on GPU and TPU 10 for every family.
    steps_per_call: int | None = None
    early_stopping: EarlyStoppingConfig = dataclasses.field(default_factory=EarlyStoppingConfig)
    # Gradient accumulation: each step's batch of data.batch_size examples (the optimizer's batch) is
    # split into this many micro-batches, run one after another, and their averaged gradients make one
    # optimizer step (optax.MultiSteps). Steps, epochs, the schedule and checkpoints count optimizer
    # steps, so results match the unsplit batch while activation memory shrinks by this factor.
    # data.batch_size must divide by it. On CPU it costs speed (convolutions run slower inside a scan).
    accumulate: int = 1
    # Deterministic ops where the platform needs asking (GPU: XLA's --xla_gpu_deterministic_ops, so
    # scatter-based backwards and autotuned kernels give the same bits every run). CPU and TPU
    # already are; nothing is set there.
    deterministic: bool = True
    # XLA compiler options for the jitted train, eval and predict functions ({name: value}, e.g.
    # {xla_cpu_experimental_ynn_fusion_type: LIBRARY_FUSION_TYPE_DOT}); replaces the model family's
    # measured CPU defaults (zoo/training/step.py CPU_FAMILY_OPTIONS_BY_ISA). null: those defaults; {}: none.
    xla_options: dict | None = None


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every: int = 500  # steps between checkpoints; one is always written at the end
    keep: int = 2  # latest N
    keep_best: int = 1  # best K by `metric`
    metric: Literal["accuracy", "loss"] = "accuracy"
    async_save: bool = True


@dataclasses.dataclass(frozen=True)
class InitFromConfig:
    run: str | None = None  # a run directory whose checkpoint initialises this run (fine-tuning)
    step: int | str = "latest"  # "latest", "best" (validation) or a step number
    skip: tuple[str, ...] = ()  # parameter patterns re-initialised instead (e.g. a new head)


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    tensorboard: bool = False  # event files beside metrics.jsonl (needs the tensorboard extra)


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = "run"
    seed: int = 0
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


# Ranges: (field path) -> (test, what it must be).
_RANGES = {
    # The name is the default run directory runs/<name>: one plain path component, no way out.
    "name": (lambda v: re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v) is not None,
             "letters, digits, '_', '.' or '-', starting with a letter or digit (it names runs/<name>)"),
    "seed": (lambda v: v >= 0, "at least 0"),
    "data.batch_size": (lambda v: v >= 1, "at least 1"),
    "data.eval_batch_size": (lambda v: v >= 1, "at least 1"),
    "data.shift": (lambda v: v >= 0, "at least 0"),
    "data.validation": (lambda v: 0 <= v < 1, "in [0, 1): the fraction of train held out (0: none)"),
    "data.seed": (lambda v: v >= 0, "at least 0"),
    "data.test": (lambda v: v is None or 0 < v < 1, "in (0, 1) (or null: the source's own test split)"),
    "data.image_size": (lambda v: v is None or (len(v) == 2 and min(v) >= 1), "[height, width], positive"),
    "data.channels": (lambda v: v in (None, 1, 3), "1 (grey) or 3 (RGB)"),
    "data.vocab_size": (lambda v: v is None or v >= 2, "at least 2 (or null)"),
    "data.workers": (lambda v: v is None or v >= 0, "at least 0 (or null: automatic)"),
    "optimizer.learning_rate": (lambda v: v > 0, "greater than 0"),
    "optimizer.momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "optimizer.weight_decay": (lambda v: v >= 0, "at least 0"),
    "optimizer.warmup_steps": (lambda v: v >= 0, "at least 0"),
    "optimizer.decay_boundaries": (lambda v: all(0 < b < 1 for b in v), "fractions in (0, 1)"),
    "optimizer.decay_factor": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "optimizer.clip_norm": (lambda v: v is None or v > 0, "greater than 0 (or null)"),
    "train.steps": (lambda v: v is None or v >= 1, "at least 1 (or null)"),
    "train.epochs": (lambda v: v is None or v >= 1, "at least 1 (or null)"),
    "train.eval_every": (lambda v: v >= 0, "at least 0"),
    "train.log_every": (lambda v: v >= 1, "at least 1"),
    "train.label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "train.steps_per_call": (lambda v: v is None or v >= 1, "at least 1 (or null: automatic)"),
    "train.accumulate": (lambda v: v >= 1, "at least 1 (1: no accumulation)"),
    "train.xla_options": (lambda v: v is None or all(
        isinstance(k, str) and isinstance(x, (str, bool, int)) and not isinstance(x, float) for k, x in v.items()),
        "a mapping of XLA option names to strings, true/false or integers (or null: the family's defaults)"),
    "train.early_stopping.patience": (lambda v: v >= 0, "at least 0 (0: off)"),
    "train.early_stopping.min_delta": (lambda v: v >= 0, "at least 0"),
    "data.classes": (lambda v: v is None or (len(v) >= 2 and len(set(v)) == len(v) and min(v) >= 0),
                     "a list of at least two distinct class indices (or null: all)"),
    "init_from.step": (lambda v: v in ("latest", "best") if isinstance(v, str) else v >= 0,
                       "'latest', 'best' or a step number"),
    "checkpoint.every": (lambda v: v >= 1, "at least 1"),
    "checkpoint.keep": (lambda v: v >= 1, "at least 1"),
    "checkpoint.keep_best": (lambda v: v >= 0, "at least 0"),
}


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            dict: "a mapping", type(None): "null"}.get(tp, str(tp))


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


def _build(cls, raw: Any, path: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping of keys, got {raw!r}")
    if cls is ModelConfig:
        name = raw.get("name", ModelConfig.name)
        if not isinstance(name, str):
            raise ConfigError(f"{path}.name: expected a string, got {name!r}")
        return ModelConfig(name, {k: v for k, v in raw.items() if k != "name"})
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
            values[name] = _build(tp, raw[name], key_path)
        else:
            values[name] = coerce(raw[name], tp, key_path)
        rule = _RANGES.get(key_path) or field.metadata.get("range")  # schemas beside Config carry their own
        if rule:
            test, must = rule
            if not test(values[name]):
                raise ConfigError(f"{key_path}: {values[name]!r} is out of range; it must be {must}")
    return cls(**values)


def from_dict(raw: dict) -> Config:
    config = _build(Config, raw, "")
    if (config.train.steps is None) == (config.train.epochs is None):
        raise ConfigError("train: give exactly one of train.steps or train.epochs")
    if config.data.batch_size % config.train.accumulate:
        raise ConfigError(f"train.accumulate {config.train.accumulate} does not divide data.batch_size "
                          f"{config.data.batch_size} (the optimizer's batch, split into micro-batches): use a "
                          "divisor of it")
    if config.init_from.skip and not config.init_from.run:
        raise ConfigError("init_from.skip needs init_from.run: the run directory to initialise from")
    return config


def load_yaml(path: str | Path) -> dict:
    """Reads a YAML mapping with yaml.safe_load; every failure is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist: check the path (configs live in configs/)")
    try:
        raw = yaml.safe_load(path.read_text())
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
    return raw


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Applies `a.b=value` strings (values parsed as YAML) to a raw config mapping."""
    raw = json.loads(json.dumps(raw))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.path=value, e.g. optimizer.learning_rate=3e-4")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = value
    return raw


def merge(base: dict, child: dict) -> dict:
    """`base` with `child`'s keys put in, section by section (mappings merge, other values replace)."""
    out = dict(base)
    for key, value in child.items():
        both_sections = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge(out[key], value) if both_sections else value
    return out


def load_inherited(path: str | Path, _chain: tuple = ()) -> dict:
    """A config mapping with its `base:` resolved: `base: ../mnist1d/cnn.yaml` (relative to the file)
    names a config whose keys this one starts from; the file then gives only the keys that differ.
    Bases may have bases; a cycle or a missing base is a ConfigError naming the file."""
    path = Path(path)
    raw = load_yaml(path)
    if "base" not in raw:
        return raw
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
    return merge(load_inherited(base_path, chain), raw)


def load(path: str | Path, overrides: list[str] = ()) -> Config:
    return from_dict(apply_overrides(load_inherited(path), list(overrides)))
