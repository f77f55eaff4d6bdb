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


MAX_SEEDS = 4096  # seeds one `--seeds` may name (each is a run directory)


def parse_seeds(text: str, where: str = "--seeds") -> tuple[int, ...]:
    """'0-7' (a range, both ends included), '0,3,5' or a mix ('0-3,10') -> distinct seeds in the order
    given; anything else is a one-line ConfigError."""
    must = f"{where} '{text}' must be seeds such as 0-7, 0,3,5 or 0-3,10 (integers from 0 to {SEED_MAX})"
    seeds = []
    for part in str(text).split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise ConfigError(must)
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high < low or high > SEED_MAX:
            raise ConfigError(must)
        if high - low + len(seeds) >= MAX_SEEDS:
            raise ConfigError(f"{where} '{text}' names more than {MAX_SEEDS} seeds: give at most {MAX_SEEDS}")
        seeds += range(low, high + 1)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where} '{text}' repeats a seed: give each seed once")
    return tuple(seeds)


def _seed(default: int) -> dataclasses.Field:
    return ranged(default, lambda v: 0 <= v <= SEED_MAX, f"an integer from 0 to {SEED_MAX}")


def _classes_ok(classes) -> bool:
    return len(classes) >= 2 and len(set(classes)) == len(classes) and all(
        isinstance(c, str) or c >= 0 for c in classes)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Training-batch augmentation on the device, inside the jitted step (zoo/training/augment.py),
    keyed by (seed, step); evaluation never augments. Images and signals only; mixup and cutmix need
    task classify (they make soft targets)."""

    # zero-pad every spatial axis by N, then a random crop of the original size (a random shift by up
    # to N pixels/steps); 0: none. The ResNet paper's CIFAR recipe: 4
    crop_pad: int = ranged(0, *_at_least(0, " (0: none)"))
    flip: bool = False  # mirror the width axis of each image with probability 1/2 (images only)
    mixup: float = ranged(0.0, lambda v: v >= 0, "at least 0: the Beta(alpha, alpha) of mixup (0: off)")
    cutmix: float = ranged(0.0, lambda v: v >= 0, "at least 0: the Beta(alpha, alpha) of cutmix (0: off)")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    # digits | mnist1d | mnist1d_shuffled | pydoc (built in), or a file format: npz | csv | image_folder | idx |
    # cifar10 | cifar100 | text, read from `path`
    name: str = "digits"
    path: str | None = None  # a file or folder, relative to the working directory or absolute
    batch_size: int = ranged(64, *_at_least(1))
    eval_batch_size: int = ranged(500, lambda v: 1 <= v <= MAX_EVAL_BATCH,
                                  f"from 1 to {MAX_EVAL_BATCH} (each evaluation batch is padded to it in memory)")
    # crop with padding, flips, mixup, cutmix of training batches (AugmentConfig); none by default
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    # fraction of train held out for selection (stratified); 0: none
    validation: float = ranged(0.1, lambda v: 0 <= v < 1, "in [0, 1): the fraction of train held out (0: none)")
    seed: int = _seed(0)  # fixes the validation split and any carved test split (independent of the run's seed)
    # csv, image_folder: fraction carved out as test when there is no test split; text: the corpus's last
    # block (null: 0.05), after a validation block of data.validation
    test: float | None = ranged(None, lambda v: v is None or 0 < v < 1,
                                "in (0, 1) (or null: the source's own test split)")
    test_path: str | None = None  # csv: a separate file for the test split
    # csv: the label column (task: regress: the target column, or a list of them)
    label: str | tuple[str, ...] | None = None
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
    # text, pydoc (zoo/data/text.py): tokens are bytes (256 ids) or the characters of the training text
    # (plus one id for unknown ones); null: byte
    vocabulary: Literal["byte", "char"] | None = None
    # text, pydoc: tokens per example window (the model predicts the next token at each); null: 128
    seq_len: int | None = ranged(None, *_at_least(1, " (or null: 128)"))


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
    # on the validation split, never test; null: the task's (classify: accuracy; regress, lm: loss)
    metric: Literal["accuracy", "loss"] | None = None
    # evaluations without improvement before stopping (0: off)
    patience: int = ranged(0, *_at_least(0, " (0: off)"))
    min_delta: float = ranged(0.0, lambda v: v >= 0, "at least 0")  # a change smaller than this is no improvement


@dataclasses.dataclass(frozen=True)
class EmaConfig:
    """An exponential moving average of the weights (params and BatchNorm statistics), kept in the train
    state: every `every` steps, average = decay * average + (1 - decay) * weights (optax's
    incremental_update), starting from the initial weights. Evaluation, selection, `zoo eval`,
    predict and export use the average (`--weights raw` for the raw weights)."""

    # 0: no average. The average spans about 1 / (1 - decay) steps: keep that well below the run's steps
    decay: float = ranged(0.0, lambda v: 0 <= v < 1, "in [0, 1) (0: no average; e.g. 0.99: about 100 steps)")
    every: int = ranged(1, *_at_least(1))  # steps between updates of the average


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int | None = ranged(None, *_at_least(1, " (or null)"))  # give steps or epochs
    epochs: int | None = ranged(None, *_at_least(1, " (or null)"))
    # steps between test evaluations (0: at checkpoints and at the end)
    eval_every: int = ranged(0, *_at_least(0))
    log_every: int = ranged(50, *_at_least(1))
    label_smoothing: float = ranged(0.0, lambda v: 0 <= v < 1, "in [0, 1)")  # task: classify only
    # classify, lm: cross_entropy; regress: mse or huber (delta 1 standard deviation of the target)
    # (zoo/tasks.py). null: the task's first
    loss: Literal["cross_entropy", "mse", "huber"] | None = None
    # Training steps per jitted call (lax.scan over batches). null: on CPU 10 for MLPs, where
    # dispatch dominates, 1 otherwise (XLA on CPU runs convolutions inside a scan ~20x slower);
    # on GPU and TPU 10 for every family.
    steps_per_call: int | None = ranged(None, *_at_least(1, " (or null: automatic)"))
    early_stopping: EarlyStoppingConfig = dataclasses.field(default_factory=EarlyStoppingConfig)
    ema: EmaConfig = dataclasses.field(default_factory=EmaConfig)  # a moving average of the weights; off by default
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
    # the validation metric of `keep_best` and "best"; null: the task's (classify: accuracy; regress, lm: loss)
    metric: Literal["accuracy", "loss"] | None = None
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
    # classify (class logits), regress (float targets) or lm (next-token logits): zoo/tasks.py, docs/tasks.md
    task: Literal["classify", "regress", "lm"] = "classify"
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
        if self.task == "classify":  # nor do those written before tasks (issue 24)
            del raw["task"]
        if self.train.loss is None:
            del raw["train"]["loss"]
        if self.train.ema == EmaConfig():  # nor those written before EMA and augmentation (issue 25)
            del raw["train"]["ema"]
        if self.data.augment == AugmentConfig():
            del raw["data"]["augment"]
        return json.loads(json.dumps(raw))  # tuples to lists: the YAML/JSON form

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.train.steps if self.train.steps else self.train.epochs * steps_per_epoch


# The only XLA options a config (train.xla_options, also as stored in a run directory) may name:
# performance options: those of the per-family table in zoo/training/step.py (a test checks it) and those benchmarks/ab_xla_options.py measured (benchmarks/NOTES.md),
# plus the GPU determinism option compiler_options sets itself. Anything else is refused: XLA has
# options that write files where they say (xla_dump_to, ...), and a run directory may come from anyone.
KNOWN_XLA_OPTIONS = tuple(sorted({
    "xla_cpu_experimental_ynn_fusion_type", "xla_cpu_enable_fast_min_max",
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
        choices = None  # the error of a Literal option ("did you mean ..."): the one worth showing
        for option in typing.get_args(tp):
            try:
                return coerce(value, option, path)
            except ConfigError as error:
                choices = error if typing.get_origin(option) is Literal else choices
        if choices is not None and value is not None:
            raise choices
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


# issue 25: data.shift (a random shift with zero fill, on the host) became data.augment.crop_pad (the same,
# on the device). Configs refuse the old key; configs stored in run directories written before are read
# with it translated.
SHIFT_MOVED = ("data.shift is now data.augment.crop_pad (the same random shift by up to N steps with zero "
               "padding, done on the device): write data: {augment: {crop_pad: N}}")


def _translate_shift(raw: dict) -> dict:
    """`raw` with a stored run's data.shift N as data.augment.crop_pad N (0: dropped)."""
    data = raw.get("data")
    if not isinstance(data, dict) or "shift" not in data:
        return raw
    data = dict(data)
    shift = data.pop("shift")
    if shift and isinstance(data.get("augment", {}), dict):
        data["augment"] = {"crop_pad": shift, **data.get("augment", {})}
    return {**raw, "data": data}


def refuse_shift(raw: dict, where: str) -> None:
    """Raises ConfigError when a config the user wrote (`where`) still names data.shift."""
    if isinstance(raw.get("data"), dict) and "shift" in raw["data"]:
        raise ConfigError(f"{where}: {SHIFT_MOVED}")


def from_dict(raw: dict) -> Config:
    config = build_section(Config, _translate_shift(raw), "")
    if (config.train.steps is None) == (config.train.epochs is None):
        raise ConfigError("train: give exactly one of train.steps or train.epochs")
    if config.data.batch_size % config.train.accumulate:
        raise ConfigError(f"train.accumulate {config.train.accumulate} does not divide data.batch_size "
                          f"{config.data.batch_size} (the optimizer's batch, split into micro-batches): use a "
                          "divisor of it")
    if config.init_from.skip and not config.init_from.run:
        raise ConfigError("init_from.skip needs init_from.run: the run directory to initialise from")
    return _resolve_task(config)


# train.loss per task (null: the first); zoo/tasks.py computes them
TASK_LOSSES = {"classify": ("cross_entropy",), "regress": ("mse", "huber"), "lm": ("cross_entropy",)}


def _resolve_task(config: Config) -> Config:
    """Refuses keys that mean nothing to the config's task (one line each) and fills the selection
    metrics it leaves open with the task's (classify: accuracy; regress, lm: loss)."""
    task, train = config.task, config.train
    chosen = "accuracy" if task == "classify" else "loss"
    if task != "classify":
        for key, value, why in (("train.label_smoothing", train.label_smoothing, "smooths class labels"),
                                ("data.classes", config.data.classes, "keeps a subset of classes")):
            if value:
                raise ConfigError(f"{key} {why}, and task '{task}' has no classes: remove it")
        for key, section in (("train.early_stopping.metric", train.early_stopping),
                             ("checkpoint.metric", config.checkpoint)):
            if section.metric == "accuracy":
                raise ConfigError(f"{key} 'accuracy' is a classification metric: task '{task}' selects on the "
                                  "validation loss; set it to loss or remove it")
    losses = TASK_LOSSES[task]
    if train.loss is not None and train.loss not in losses:
        raise ConfigError(f"train.loss '{train.loss}' does not fit task '{task}': choose {' or '.join(losses)} "
                          "(or remove it)")
    early = dataclasses.replace(train.early_stopping, metric=train.early_stopping.metric or chosen)
    return dataclasses.replace(config, train=dataclasses.replace(train, early_stopping=early),
                               checkpoint=dataclasses.replace(config.checkpoint,
                                                              metric=config.checkpoint.metric or chosen))


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
    raw = load_inherited(path)
    refuse_shift(raw, str(path))
    raw = apply_overrides(raw, list(overrides))
    refuse_shift(raw, "--set")
    return from_dict(raw)


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
