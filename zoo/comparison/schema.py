"""The compare config's schema and its loader `load_compare`.

A compare config names the data, a list of model configs, the seeds and one budget shared by all:

    name: digits
    dataset: digits           # or datasets: [digits, mnist1d, {name: npz, path: ...}] (one report)
    seeds: [0, 1, 2]          # default [0, 1, 2]
    budget: {steps: 600}      # or {epochs: N}, {seconds: S} (measured step time), {flops: F} (training FLOPs)
    eval_every: 100           # optional: replaces every model config's train.eval_every
    tensorboard: true         # optional: logging.tensorboard in every run (`tensorboard --logdir WORKDIR/runs`)
    population: auto          # auto (default): a model's seeds (and learning-rate or weight-decay settings)
                              # train as one vmapped population (docs/population.md); off: one run at a time
    population_memory_mib: 4096  # a population estimated above this trains in chunks
    samples: {prompt: "The ", max_tokens: 160, temperature: 0.8, count: 3}  # task lm only: text sampled
                              # from each model's first seed (final checkpoint) into the report
    models: [configs/digits/mlp.yaml, {config: configs/digits/cnn.yaml, sweep: {...}}]
    sweep:                    # optional, per model overridable: dotted keys -> lists (a grid)
      optimizer.learning_rate: [1.0e-3, 3.0e-3]
      random: 4               # optional: that many grid points, sampled with `seed`
      select: {metric: val_accuracy, seeds: 1}   # metric default: the task's (val_accuracy; val_loss)
    reference:                # optional: published accuracies shown beside ours
      source: "Author et al. 2024"
      accuracy: {digits_mlp: 0.9}

A dataset is a built-in name or a data mapping: the keys of a run's `data:` section (zoo.config's
DataConfig, checked by it) merged into every model config's, plus `display`, the dataset's name in the
report and its run names (default: the format and the file's stem, e.g. csv_wine):

    dataset: {name: csv, path: data/wine.csv, label: target, test: 0.2, display: wine}

A `{seconds: S}` budget counts training-step time only: each model's train step is timed once
(`cost.measure_step`, after compilation) and the model trains S / that time steps; compilation, data
loading, evaluation and checkpoints come on top of S. `{seconds: S}` and `{flops: F}` derive the step
count, so an interval written in steps (the compare's `eval_every`, `checkpoint.every`) is stretched
to give at most MAX_EVALUATIONS evaluations per run, checkpoints on evaluation steps; a model config's
own `train.eval_every` is kept when the compare sets none.

The runner (`zoo.comparison.runner.compare`) trains every (model, seed) it names and writes the report.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import math
import re
from pathlib import Path
from typing import Literal

import numpy as np

from zoo import models
from zoo.comparison import report
from zoo.config import (Config, DataConfig, apply_overrides, build_section, coerce, from_dict, load_inherited,
                        load_yaml, set_dotted)
from zoo.data import list_datasets
from zoo.errors import ConfigError, ModelError, did_you_mean

DEFAULT_SEEDS = (0, 1, 2)
MAX_EVALUATIONS = 20  # per run, under a budget that derives the step count ({seconds: S}, {flops: F})
_DISPLAY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a dataset's report name: it prefixes run names

# ---------------------------------------------------------------------------------------------------
# The schema: dataclasses validated by zoo.config's machinery (types, ranges, did-you-mean).


def _rule(test, must: str) -> dict:
    return {"range": (test, must)}


@dataclasses.dataclass(frozen=True)
class BudgetConfig:
    """Exactly one of: steps, epochs, seconds of measured step time, training FLOPs."""

    steps: int | None = dataclasses.field(default=None, metadata=_rule(lambda v: v is None or v >= 1, "at least 1"))
    epochs: int | None = dataclasses.field(default=None, metadata=_rule(lambda v: v is None or v >= 1, "at least 1"))
    seconds: float | None = dataclasses.field(default=None, metadata=_rule(lambda v: v is None or v > 0,
                                                                            "greater than 0"))
    flops: float | None = dataclasses.field(default=None, metadata=_rule(lambda v: v is None or v > 0,
                                                                          "greater than 0"))

    @property
    def kind(self) -> str:
        return next(f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None)

    def describe(self) -> str:
        value = getattr(self, self.kind)
        return {"steps": f"{value} steps", "epochs": f"{value} epochs",
                "seconds": f"{value:g} s of measured step time",
                "flops": f"{value:.3g} training FLOPs"}[self.kind]


@dataclasses.dataclass(frozen=True)
class SelectConfig:
    # null: the task's (classify: val_accuracy; regress, lm: val_loss)
    metric: Literal["val_accuracy", "val_loss"] | None = None
    seeds: int = dataclasses.field(default=1, metadata=_rule(lambda v: v >= 1, "at least 1"))


@dataclasses.dataclass(frozen=True)
class SamplesConfig:
    """What a language-model compare samples into its report: `count` continuations of `prompt` from
    each model's first-seed run (final checkpoint), sampling seeds seed, seed+1, ... (`zoo sample`)."""

    prompt: str = dataclasses.field(default="The ", metadata=_rule(lambda v: 0 < len(v) <= 1000,
                                                                   "1 to 1000 characters"))
    max_tokens: int = dataclasses.field(default=160, metadata=_rule(lambda v: 1 <= v <= 4096, "from 1 to 4096"))
    temperature: float = dataclasses.field(default=0.8, metadata=_rule(lambda v: 0 <= v < float("inf"),
                                                                       "a finite number >= 0 (0: greedy)"))
    top_k: int | None = dataclasses.field(default=None, metadata=_rule(lambda v: v is None or v >= 1, "at least 1"))
    top_p: float | None = dataclasses.field(default=None, metadata=_rule(lambda v: v is None or 0 < v <= 1,
                                                                         "in (0, 1]"))
    seed: int = dataclasses.field(default=0, metadata=_rule(lambda v: 0 <= v < 2**31, "from 0 to 2**31 - 1"))
    count: int = dataclasses.field(default=3, metadata=_rule(lambda v: 0 <= v <= 16, "from 0 (none) to 16"))


@dataclasses.dataclass(frozen=True)
class _SweepOptions:
    random: int | None = dataclasses.field(default=None, metadata=_rule(lambda v: v is None or v >= 1,
                                                                        "at least 1 (or null: the whole grid)"))
    select: SelectConfig = dataclasses.field(default_factory=SelectConfig)


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A grid over dotted config keys (or `random` points of it); selection reads validation only."""

    grid: tuple[tuple[str, tuple], ...]
    random: int | None = None
    select: SelectConfig = dataclasses.field(default_factory=SelectConfig)

    def settings(self, seed: int) -> list[dict]:
        keys = [key for key, _ in self.grid]
        points = [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in self.grid))]
        if self.random is not None and self.random < len(points):
            chosen = np.random.default_rng(seed).choice(len(points), size=self.random, replace=False)
            points = [points[i] for i in sorted(chosen)]
        return points

    def to_dict(self) -> dict:
        return {**{key: list(values) for key, values in self.grid}, "random": self.random,
                "select": dataclasses.asdict(self.select)}


@dataclasses.dataclass(frozen=True)
class ReferenceConfig:
    source: str = "reference"
    accuracy: dict = dataclasses.field(default_factory=dict)  # {model config name: fraction}


@dataclasses.dataclass(frozen=True)
class _ModelEntry:
    config: str | dict  # a path (may hold '{dataset}'), or {dataset: path}
    label: str | None = None  # the row name across datasets (default: the config name less the dataset)
    sweep: dict | None = None  # replaces the compare's sweep for this model ({}: no sweep)


@dataclasses.dataclass(frozen=True)
class _CompareSchema:
    """The raw compare config's keys and types (resolved into `CompareConfig` by `parse_compare`)."""

    name: str = ""
    dataset: str | dict | None = None
    datasets: tuple[str | dict, ...] | None = None
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    seed: int = 0  # samples `random` sweeps
    budget: BudgetConfig = dataclasses.field(default_factory=BudgetConfig)
    eval_every: int | None = dataclasses.field(default=None, metadata=_rule(lambda v: v is None or v >= 1,
                                                                            "at least 1"))
    models: tuple[str | dict, ...] = ()
    sweep: dict | None = None
    reference: ReferenceConfig = dataclasses.field(default_factory=ReferenceConfig)
    tensorboard: bool = False  # logging.tensorboard in every run
    population: Literal["auto", "off"] = "auto"
    population_memory_mib: int = dataclasses.field(default=4096, metadata=_rule(lambda v: v >= 1, "at least 1"))
    samples: SamplesConfig = dataclasses.field(default_factory=SamplesConfig)


@dataclasses.dataclass(frozen=True)
class Arm:
    """One model config on one dataset (seed, budget and sweep setting not yet applied)."""

    dataset: str  # the dataset's label in the report
    label: str  # the model's row label
    base: Config
    path: str
    sweep: SweepConfig | None = None


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """A validated compare config."""

    name: str
    datasets: tuple[str, ...]  # labels, in report order
    arms: tuple[Arm, ...]
    model_paths: tuple[str, ...]
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    budget_spec: BudgetConfig = BudgetConfig(steps=1)
    eval_every: int | None = None
    reference: dict | None = None  # {"source": str, "accuracy": {model config name: float}}
    path: str | None = None
    seed: int = 0
    tensorboard: bool = False
    population: str = "auto"  # auto: runs that can share a vmapped step train as one population; off
    population_memory_mib: int = 4096  # a population estimated above this trains in chunks
    samples: SamplesConfig = SamplesConfig()  # task lm: text sampled into the report

    @property
    def dataset(self) -> str:
        return self.datasets[0] if len(self.datasets) == 1 else "+".join(self.datasets)

    @property
    def task(self) -> str:
        """The task every model of the compare learns (one task per compare)."""
        return self.arms[0].base.task if self.arms else "classify"

    @property
    def models(self) -> tuple[Config, ...]:
        return tuple(arm.base for arm in self.arms)

    @property
    def budget(self) -> str:
        return self.budget_spec.describe()

    def run_config(self, arm: Arm | Config, seed: int, steps: int | None = None, setting: dict | None = None) -> Config:
        """The arm's config with this compare's seed, budget (`steps` for seconds/FLOPs budgets), the
        sweep `setting`, the evaluation interval and TensorBoard."""
        base = arm.base if isinstance(arm, Arm) else arm
        raw = base.to_dict()
        for key, value in (setting or {}).items():
            set_dotted(raw, key, value)
        raw["seed"] = seed
        b = self.budget_spec
        if b.kind in ("steps", "epochs"):
            raw["train"]["steps"], raw["train"]["epochs"] = b.steps, b.epochs
        else:
            raw["train"]["steps"], raw["train"]["epochs"] = steps or 1, None
        own_interval = bool(raw["train"]["eval_every"]) and not self.eval_every  # the model config's: kept
        if self.eval_every:
            raw["train"]["eval_every"] = self.eval_every
        if b.kind in ("seconds", "flops"):  # the step count is derived: intervals written in steps stretch
            _spread_evaluations(raw["train"], raw["checkpoint"], keep_eval_every=own_interval)
        if self.tensorboard:
            raw["logging"] = {**raw.get("logging", {}), "tensorboard": True}
        return from_dict(raw)


def _spread_evaluations(train: dict, checkpoint: dict, keep_eval_every: bool) -> None:
    """At most MAX_EVALUATIONS evaluations in a run of train["steps"] steps, besides the last:
    train.eval_every (unless `keep_eval_every`) and checkpoint.every (every checkpoint evaluates)
    raised to steps / MAX_EVALUATIONS, and checkpoints rounded up onto evaluation steps."""
    least = math.ceil(train["steps"] / MAX_EVALUATIONS)
    if train["eval_every"] and not keep_eval_every:
        train["eval_every"] = max(train["eval_every"], least)
    every, interval = max(checkpoint["every"], least), train["eval_every"]
    checkpoint["every"] = math.ceil(every / interval) * interval if interval else every


def _resolve(model_path: str, compare_path: Path | None) -> Path:
    """A model config path as given (relative to the current directory), else next to the compare config."""
    path = Path(model_path)
    if path.is_file() or path.is_absolute() or compare_path is None:
        return path
    beside = compare_path.parent / path
    return beside if beside.is_file() else path


def _parse_sweep(raw, key: str, where: str) -> SweepConfig | None:
    """The sweep at `key` ('sweep' or 'models[i].sweep'); `where` prefixes every error (the file)."""
    try:
        return _sweep(raw, key)
    except ConfigError as error:
        raise ConfigError(f"{where}{error}") from None


def _sweep(raw, where: str) -> SweepConfig | None:
    if raw is None or raw == {}:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of dotted keys to lists, e.g. "
                          "{optimizer.learning_rate: [1.0e-3, 3.0e-3]}")
    grid, options = [], {}
    for key, values in raw.items():
        if "." not in str(key):
            options[key] = values
            continue
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.{key}: expected a non-empty list of values, got {values!r}")
        grid.append((str(key), tuple(_number_or_text(v) for v in values)))
    built = build_section(_SweepOptions, options, where)
    if not grid:
        raise ConfigError(f"{where}: no dotted keys to sweep, e.g. optimizer.learning_rate: [1.0e-3, 3.0e-3]")
    return SweepConfig(tuple(grid), built.random, built.select)


def _number_or_text(value):
    """YAML 1.1 reads 3e-4 (no dot) as a string: such strings become numbers, other strings stay."""
    if isinstance(value, str):
        try:
            return coerce(value, float, "")
        except ConfigError:
            return value
    return value


def _dataset_entries(schema: _CompareSchema, where: str) -> list[tuple[str, dict | None]]:
    """[(label, data mapping or None)] from `dataset` or `datasets`."""
    if (schema.dataset is None) == (schema.datasets is None):
        raise ConfigError(f"{where}give exactly one of dataset (one) or datasets (a list, one report)")
    names = [schema.dataset] if schema.dataset is not None else list(schema.datasets)
    if not names:
        raise ConfigError(f"{where}datasets: expected a non-empty list, e.g. [digits, mnist1d]")
    entries = []
    for i, entry in enumerate(names):
        key = "dataset" if schema.dataset is not None else f"datasets[{i}]"
        if isinstance(entry, str):
            if entry not in list_datasets():
                raise ConfigError(f"{where}{key}: '{entry}' is not a dataset: {did_you_mean(entry, list_datasets())}"
                                  f"choose one of {', '.join(list_datasets())}, or give a data mapping, e.g. "
                                  "{name: csv, path: data/wine.csv, label: target, display: wine}")
            entries.append((entry, None))
        else:
            entries.append(_data_mapping(entry, key, where))
    labels = [label for label, _ in entries]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}datasets: {labels} repeats a dataset; give each data mapping its own name in the "
                          "report, e.g. display: digits_v20")
    return entries


def _data_mapping(entry: dict, key: str, where: str) -> tuple[str, dict]:
    """(the dataset's name in the report, the data section) of a data mapping at `key`: the keys of a
    run's `data:` section, checked by DataConfig, plus `display`, the name in the report."""
    data = dict(entry)
    known = [*(f.name for f in dataclasses.fields(DataConfig)), "display"]
    for name in data:
        if name not in known:
            raise ConfigError(f"{where}unknown key '{key}.{name}': {did_you_mean(name, known)}valid keys: "
                              f"{', '.join(known)}")
    display = data.pop("display", None)
    if display is not None and not (isinstance(display, str) and _DISPLAY_NAME.fullmatch(display)):
        raise ConfigError(f"{where}{key}.display: expected a name of letters, digits, '_', '.' or '-' (it names "
                          f"the dataset in the report and its runs), got {display!r}")
    if "name" not in data:
        raise ConfigError(f"{where}{key}: a data mapping needs name, e.g. {{name: csv, path: data/wine.csv, "
                          "label: target}")
    try:
        section = build_section(DataConfig, data, key)
    except ConfigError as error:
        raise ConfigError(f"{where}{error}") from None
    if section.label is not None and section.name != "csv":
        raise ConfigError(f"{where}{key}.label: '{section.label}' would be data.label, the class column of a csv "
                          f"file, and '{section.name}' has none: to name this dataset in the report, write "
                          f"display: {section.label}")
    return display or section.name + (f"_{Path(section.path).stem}" if section.path else ""), data


def _check_model(config: Config, origins: dict, resolved: Path) -> None:
    """Builds the config's model (no weights): an unknown model or hyperparameter fails when the compare
    config is read, before any run trains. The error names the base that set the bad key, if one did."""
    name, hparams = config.model.name, config.model.hparams
    # the name, then each hyperparameter alone (to know which key failed), then all together
    trials = [("name", {}), *((key, {key: value}) for key, value in hparams.items()), (None, hparams)]
    for key, given in trials:
        try:
            models.build(name, 2, **given)
        except ModelError as error:
            raise ConfigError(f"{error}{_set_in_base(f'model.{key}' if key else None, origins, resolved)}") from None


def _set_in_base(key: str | None, origins: dict, resolved: Path) -> str:
    """' (KEY is set in its base FILE)' when a base of the model config `resolved` set the dotted `key`
    (`origins` from load_inherited), else ''."""
    origin = origins.get(".".join(key.split(".")[:2])) if key else None
    return f" ({key} is set in its base {origin})" if origin is not None and Path(origin) != resolved else ""


def _arm_config(path: str, compare_path, label: str, data: dict | None, multi: bool, where: str) -> Config:
    resolved = _resolve(path, compare_path)
    origins = {}
    try:
        raw = load_inherited(resolved, origins=origins)
        if multi or data:
            section = raw.setdefault("data", {})
            if data:
                section.update(data)
            elif section.get("name") != label:
                section["name"] = label
            if multi and not str(raw.get("name", "")).startswith(f"{label}_"):
                raw["name"] = f"{label}_{raw.get('name', 'run')}"
        config = from_dict(raw)
    except ConfigError as error:  # a schema error starts with the key it is about
        key = re.match(r"(?:unknown key ')?([a-z_]+\.[a-z_][\w.]*)", str(error))
        raise ConfigError(f"{where}models: {path}: {error}{_set_in_base(key and key.group(1), origins, resolved)}"
                          ) from None
    try:
        _check_model(config, origins, resolved)
    except ConfigError as error:
        raise ConfigError(f"{where}models: {path}: {error}") from None
    return config


def parse_compare(raw: dict, path: str | Path | None = None) -> CompareConfig:
    """Validates a raw compare mapping; every problem is a ConfigError naming the file and the key."""
    where = f"{path}: " if path else ""
    schema = _read_schema(raw, where)
    datasets = _dataset_entries(schema, where)
    entries = _model_entries(schema, where)
    arms, names, paths = _arms(datasets, entries, Path(path) if path else None, where)
    reference = _reference(schema, raw, names, where)
    compare = CompareConfig(schema.name, tuple(label for label, _ in datasets), tuple(arms), tuple(paths),
                            schema.seeds, schema.budget, schema.eval_every, reference, str(path) if path else None,
                            schema.seed, schema.tensorboard, schema.population, schema.population_memory_mib,
                            schema.samples)
    if "samples" in raw and compare.task != "lm":
        raise ConfigError(f"{where}samples: only a language-model compare (task: lm) samples text into its report; "
                          f"this one's task is {compare.task}: remove the key")
    for arm in arms:  # the budget and every sweep setting must give a valid config and model for every arm
        for setting in (arm.sweep.settings(schema.seed) if arm.sweep else [{}]):
            try:
                run = compare.run_config(arm, schema.seeds[0], 1, setting)
                models.build(run.model.name, 2, **run.model.hparams)
            except (ConfigError, ModelError) as error:
                what = f" at {describe_setting(setting)}" if setting else ""
                raise ConfigError(f"{where}{arm.base.name} with this budget{what}: {error}") from None
    return compare


def _read_schema(raw, where: str) -> _CompareSchema:
    """The raw mapping through the schema, with the rules across keys: one budget, distinct seeds, models."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}a compare config must be a mapping of keys, got {type(raw).__name__}")
    missing = [key for key in ("name", "budget", "models") if key not in raw]
    if "dataset" not in raw and "datasets" not in raw:
        missing.insert(1, "dataset")
    if missing and all(key in {f.name for f in dataclasses.fields(_CompareSchema)} for key in raw):
        raise ConfigError(f"{where}missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}: a compare "
                          "config needs name, dataset (or datasets), budget and models "
                          "(see configs/compare/digits.yaml)")
    if raw.get("population") is False:  # YAML 1.1 reads a bare `off` as false: `population: off` means "off"
        raw = {**raw, "population": "off"}
    try:
        schema = build_section(_CompareSchema, raw, "")
    except ConfigError as error:
        raise ConfigError(f"{where}{error}") from None
    budget = schema.budget
    given = [f.name for f in dataclasses.fields(budget) if getattr(budget, f.name) is not None]
    if len(given) != 1:
        raise ConfigError(f"{where}budget: give exactly one of steps, epochs, seconds or flops, e.g. {{steps: 600}}"
                          + (f" (got {', '.join(given)})" if given else ""))
    if schema.tensorboard and importlib.util.find_spec("tensorboardX") is None:
        raise ConfigError(f"{where}tensorboard: true needs tensorboardX: pip install 'zoo[tensorboard]' "
                          "(or set tensorboard: false)")
    seeds = schema.seeds
    if not seeds or any(s < 0 for s in seeds):
        raise ConfigError(f"{where}seeds: expected a non-empty list of integers of at least 0, e.g. [0, 1, 2], "
                          f"got {list(seeds)!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}seeds: {list(seeds)} repeats a seed; give each seed once")
    if not schema.models:
        raise ConfigError(f"{where}models: expected a non-empty list of model config paths, "
                          "e.g. [configs/digits/mlp.yaml]")
    return schema


def _model_entries(schema: _CompareSchema, where: str) -> list[tuple[_ModelEntry, SweepConfig | None]]:
    """Each `models:` item as (entry, its sweep or the compare's)."""
    default_sweep = _parse_sweep(schema.sweep, "sweep", where)
    entries = []
    for i, item in enumerate(schema.models):
        try:
            entry = build_section(_ModelEntry, item, f"models[{i}]") if isinstance(item, dict) else _ModelEntry(item)
        except ConfigError as error:
            raise ConfigError(f"{where}{error}") from None
        if not (isinstance(entry.config, str) or all(isinstance(v, str) for v in entry.config.values())):
            raise ConfigError(f"{where}models[{i}].config: expected a path or a mapping of dataset to path")
        sweep = default_sweep if entry.sweep is None else _parse_sweep(entry.sweep, f"models[{i}].sweep", where)
        entries.append((entry, sweep))
    return entries


def _arms(datasets, entries, compare_path: Path | None, where: str) -> tuple[list, dict, list]:
    """(arms, {config name: model path}, model paths): one arm per dataset x model entry."""
    arms, names, paths = [], {}, []
    multi = len(datasets) > 1
    for label, data in datasets:
        for i, (entry, sweep) in enumerate(entries):
            if isinstance(entry.config, dict):
                if label not in entry.config:
                    raise ConfigError(f"{where}models[{i}].config: no path for dataset '{label}' "
                                      f"(has {', '.join(entry.config)})")
                model_path = entry.config[label]
            else:
                model_path = entry.config.replace("{dataset}", label)
            config = _arm_config(model_path, compare_path, label, data, multi, where)
            if not multi and data is None and config.data.name != label:
                raise ConfigError(f"{where}models: {model_path} trains on '{config.data.name}' but this compare is on "
                                  f"'{label}': use a model config with data.name {label} (e.g. configs/{label}/)")
            if config.name in names:
                raise ConfigError(f"{where}models: {model_path} and {names[config.name]} share the name "
                                  f"'{config.name}' (runs go to runs/<name>/): give each model config its own name")
            names[config.name] = model_path
            paths.append(model_path)
            if sweep and config.data.validation == 0:
                raise ConfigError(f"{where}sweep: {config.name} has data.validation 0, and a sweep selects on the "
                                  "validation split only: give it data.validation > 0 (e.g. 0.1)")
            _check_one_task(arms, config, model_path, where)
            sweep = _task_selection(sweep, config.task, where)
            arms.append(Arm(label, entry.label or report.label_for(config.name, label), config, model_path, sweep))
    return arms, names, paths


def _check_one_task(arms: list, config: Config, model_path: str, where: str) -> None:
    """Refuses a model config of another task than the compare's first: one report ranks one metric."""
    if arms and config.task != arms[0].base.task:
        raise ConfigError(f"{where}models: {model_path} is task '{config.task}', {arms[0].path} task "
                          f"'{arms[0].base.task}': a compare trains one task; split them into two compare configs")


def _task_selection(sweep: SweepConfig | None, task: str, where: str) -> SweepConfig | None:
    """The sweep with its selection metric: as given, or the task's (classify: val_accuracy; regress and
    lm: val_loss); val_accuracy on another task is refused."""
    if sweep is None:
        return None
    chosen = "val_accuracy" if task == "classify" else "val_loss"
    if sweep.select.metric == "val_accuracy" and task != "classify":
        raise ConfigError(f"{where}sweep.select.metric 'val_accuracy' is a classification metric: task '{task}' "
                          "selects on val_loss; set it to val_loss or remove it")
    return dataclasses.replace(sweep, select=dataclasses.replace(sweep.select, metric=sweep.select.metric or chosen))


def _reference(schema: _CompareSchema, raw: dict, names: dict, where: str) -> dict | None:
    """Published accuracies shown beside ours, keyed by model config name."""
    if not (schema.reference.accuracy or "reference" in raw):
        return None
    accuracy = {}
    for key, value in schema.reference.accuracy.items():
        if key not in names:
            raise ConfigError(f"{where}reference.accuracy: unknown key '{key}': {did_you_mean(key, names)}valid keys: "
                              f"{', '.join(names)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f"{where}reference.accuracy.{key}: expected a fraction in [0, 1], got {value!r}")
        accuracy[key] = float(value)
    return {"source": schema.reference.source, "accuracy": accuracy}


def load_compare(path: str | Path, overrides: list[str] = ()) -> CompareConfig:
    """Reads and validates a compare config (YAML, safe); `overrides` are `key=value` strings."""
    return parse_compare(apply_overrides(load_yaml(path), list(overrides)), path)


# ---------------------------------------------------------------------------------------------------
# Sweeps: settings, their directory names, and selection on validation


# Sweep settings as text: report lines and directory names.


def short_key(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def describe_setting(setting: dict) -> str:
    return ", ".join(f"{short_key(k)}={_value_text(v)}" for k, v in setting.items())


def _value_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else json.dumps(value, separators=(",", ":"))


def setting_tag(setting: dict) -> str:
    """A directory name for a sweep setting, e.g. 'learning_rate=0.001_weight_decay=0'."""
    text = "_".join(f"{short_key(k)}={_value_text(v)}" for k, v in setting.items())
    return re.sub(r"[^A-Za-z0-9._=,+-]", "-", text)
