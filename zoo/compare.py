"""`compare(config, workdir)`: every (model, seed) of a compare config trained by `fit()`, then a report.

A compare config names the data, a list of model configs, the seeds and one budget shared by all:

    name: digits
    dataset: digits           # or datasets: [digits, mnist1d, {name: npz, path: ...}] (one report)
    seeds: [0, 1, 2]          # default [0, 1, 2]
    budget: {steps: 600}      # or {epochs: N}, {seconds: S} (measured step time), {flops: F} (training FLOPs)
    eval_every: 100           # optional: replaces every model config's train.eval_every
    models: [configs/digits/mlp.yaml, {config: configs/digits/cnn.yaml, sweep: {...}}]
    sweep:                    # optional, per model overridable: dotted keys -> lists (a grid)
      optimizer.learning_rate: [1.0e-3, 3.0e-3]
      random: 4               # optional: that many grid points, sampled with `seed`
      select: {metric: val_accuracy, seeds: 1}
    reference:                # optional: published accuracies shown beside ours
      source: "Author et al. 2024"
      accuracy: {digits_mlp: 0.9}

Each (model, seed) is an ordinary run directory `<workdir>/runs/<model config name>/seed<k>` (a swept
model: `runs/<name>/<setting>/seed<k>`) that `zoo eval` restores. A finished run (its result.json and
config.json match) is reused; an unfinished one is resumed by `fit()` itself. A sweep trains every
setting on the first `select.seeds` seeds, picks the setting by the validation metric alone, then
trains the other seeds at that setting. The report goes to `<workdir>/report/`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Literal

import jax
import numpy as np

from zoo import models, report
from zoo import data as data_lib
from zoo.config import Config, _build, apply_overrides, coerce, from_dict, load_inherited, load_yaml
from zoo.data import Dataset, DataSpec, list_datasets
from zoo.errors import ConfigError, did_you_mean
from zoo.metrics import Progress, Silent
from zoo.training import fit
from zoo.training.loop import CONFIG_FILE, RESULT_FILE
from zoo import distributed
from zoo.util import atomic_write

DEFAULT_SEEDS = (0, 1, 2)
RUN_TIMES_FILE = "run_times.json"  # {"<run dir under runs/>": seconds of the fit() call that finished it}
CALIBRATION_FILE = "calibration.json"  # {"<run dir under runs/>": {"seconds_per_step", "flops_per_step"}}
CALIBRATION_STEPS = 20  # timed steps (after one warm-up call) behind a {seconds: S} budget
_now = time.perf_counter  # the clock behind --budget-s (tests replace it)
_PROBE_STEPS = 100_000  # the schedule length of the config that is measured (step cost does not depend on it)


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
    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    seeds: int = dataclasses.field(default=1, metadata=_rule(lambda v: v >= 1, "at least 1"))


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
    dataset: str | None = None
    datasets: tuple[str | dict, ...] | None = None
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    seed: int = 0  # samples `random` sweeps
    budget: BudgetConfig = dataclasses.field(default_factory=BudgetConfig)
    eval_every: int | None = dataclasses.field(default=None, metadata=_rule(lambda v: v is None or v >= 1,
                                                                            "at least 1"))
    models: tuple[str | dict, ...] = ()
    sweep: dict | None = None
    reference: ReferenceConfig = dataclasses.field(default_factory=ReferenceConfig)


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

    @property
    def dataset(self) -> str:
        return self.datasets[0] if len(self.datasets) == 1 else "+".join(self.datasets)

    @property
    def models(self) -> tuple[Config, ...]:
        return tuple(arm.base for arm in self.arms)

    @property
    def budget(self) -> str:
        return self.budget_spec.describe()

    def run_config(self, arm: Arm | Config, seed: int, steps: int | None = None, setting: dict | None = None) -> Config:
        """The arm's config with this compare's seed, budget (`steps` for seconds/FLOPs budgets), the
        sweep `setting` and the evaluation interval."""
        base = arm.base if isinstance(arm, Arm) else arm
        raw = base.to_dict()
        for key, value in (setting or {}).items():
            _set_dotted(raw, key, value)
        raw["seed"] = seed
        b = self.budget_spec
        if b.kind in ("steps", "epochs"):
            raw["train"]["steps"], raw["train"]["epochs"] = b.steps, b.epochs
        else:
            raw["train"]["steps"], raw["train"]["epochs"] = steps or 1, None
        if self.eval_every:
            raw["train"]["eval_every"] = self.eval_every
        return from_dict(raw)


def _set_dotted(raw: dict, key: str, value) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"'{key}': '{part}' is not a section")
    node[parts[-1]] = value


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
    built = _build(_SweepOptions, options, where)
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
                                  f"choose one of "
                                  f"{', '.join(list_datasets())}, or give a data mapping")
            entries.append((entry, None))
        else:
            data = dict(entry)
            label = data.pop("label", None)
            if "name" not in data:
                raise ConfigError(f"{where}{key}: a data mapping needs name, e.g. {{name: npz, path: data.npz}}")
            label = label or str(data["name"]) + (f"_{Path(str(data['path'])).stem}" if data.get("path") else "")
            entries.append((str(label), data))
    labels = [label for label, _ in entries]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}datasets: {labels} repeats a dataset; give each a distinct label")
    return entries


def _arm_config(path: str, compare_path, label: str, data: dict | None, multi: bool, where: str) -> Config:
    resolved = _resolve(path, compare_path)
    try:
        raw = load_inherited(resolved)
        if multi or data:
            section = raw.setdefault("data", {})
            if data:
                section.update(data)
            elif section.get("name") != label:
                section["name"] = label
            if multi and not str(raw.get("name", "")).startswith(f"{label}_"):
                raw["name"] = f"{label}_{raw.get('name', 'run')}"
        return from_dict(raw)
    except ConfigError as error:
        raise ConfigError(f"{where}models: {path}: {error}") from None


def parse_compare(raw: dict, path: str | Path | None = None) -> CompareConfig:
    """Validates a raw compare mapping; every problem is a ConfigError naming the file and the key."""
    where = f"{path}: " if path else ""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}a compare config must be a mapping of keys, got {type(raw).__name__}")
    missing = [key for key in ("name", "budget", "models") if key not in raw]
    if "dataset" not in raw and "datasets" not in raw:
        missing.insert(1, "dataset")
    if missing and all(key in {f.name for f in dataclasses.fields(_CompareSchema)} for key in raw):
        raise ConfigError(f"{where}missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}: a compare "
                          "config needs name, dataset (or datasets), budget and models "
                          "(see configs/compare/digits.yaml)")
    try:
        schema = _build(_CompareSchema, raw, "")
    except ConfigError as error:
        raise ConfigError(f"{where}{error}") from None
    budget = schema.budget
    given = [f.name for f in dataclasses.fields(budget) if getattr(budget, f.name) is not None]
    if len(given) != 1:
        raise ConfigError(f"{where}budget: give exactly one of steps, epochs, seconds or flops, e.g. {{steps: 600}}"
                          + (f" (got {', '.join(given)})" if given else ""))
    seeds = schema.seeds
    if not seeds or any(s < 0 for s in seeds):
        raise ConfigError(f"{where}seeds: expected a non-empty list of integers of at least 0, e.g. [0, 1, 2], "
                          f"got {list(seeds)!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}seeds: {list(seeds)} repeats a seed; give each seed once")
    if not schema.models:
        raise ConfigError(f"{where}models: expected a non-empty list of model config paths, "
                          "e.g. [configs/digits/mlp.yaml]")
    datasets = _dataset_entries(schema, where)
    multi = len(datasets) > 1
    default_sweep = _parse_sweep(schema.sweep, "sweep", where)

    compare_path = Path(path) if path else None
    entries = []
    for i, item in enumerate(schema.models):
        try:
            entry = _build(_ModelEntry, item, f"models[{i}]") if isinstance(item, dict) else _ModelEntry(item)
        except ConfigError as error:
            raise ConfigError(f"{where}{error}") from None
        if not (isinstance(entry.config, str) or all(isinstance(v, str) for v in entry.config.values())):
            raise ConfigError(f"{where}models[{i}].config: expected a path or a mapping of dataset to path")
        sweep = default_sweep if entry.sweep is None else _parse_sweep(entry.sweep, f"models[{i}].sweep", where)
        entries.append((entry, sweep))

    arms, names, paths = [], {}, []
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
            arm_label = entry.label or report.label_for(config.name, label)
            arms.append(Arm(label, arm_label, config, model_path, sweep))

    reference = None
    if schema.reference.accuracy or "reference" in raw:
        accuracy = {}
        for key, value in schema.reference.accuracy.items():
            if key not in names:
                raise ConfigError(f"{where}reference.accuracy: unknown key '{key}': {did_you_mean(key, names)}valid keys: "
                                  f"{', '.join(names)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ConfigError(f"{where}reference.accuracy.{key}: expected a fraction in [0, 1], got {value!r}")
            accuracy[key] = float(value)
        reference = {"source": schema.reference.source, "accuracy": accuracy}

    compare = CompareConfig(schema.name, tuple(label for label, _ in datasets), tuple(arms), tuple(paths), seeds,
                            budget, schema.eval_every, reference, str(path) if path else None, schema.seed)
    for arm in arms:  # the budget and every sweep setting must give a valid config for every model
        for setting in (arm.sweep.settings(schema.seed) if arm.sweep else [{}]):
            try:
                compare.run_config(arm, seeds[0], 1, setting)
            except ConfigError as error:
                what = f" at {_describe(setting)}" if setting else ""
                raise ConfigError(f"{where}{arm.base.name} with this budget{what}: {error}") from None
    return compare


def load_compare(path: str | Path, overrides: list[str] = ()) -> CompareConfig:
    """Reads and validates a compare config (YAML, safe); `overrides` are `key=value` strings."""
    return parse_compare(apply_overrides(load_yaml(path), list(overrides)), path)


# ---------------------------------------------------------------------------------------------------
# Sweeps: settings, their directory names, and selection on validation


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _describe(setting: dict) -> str:
    return ", ".join(f"{_short(k)}={_value_text(v)}" for k, v in setting.items())


def _value_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else json.dumps(value, separators=(",", ":"))


def setting_tag(setting: dict) -> str:
    """A directory name for a sweep setting, e.g. 'learning_rate=0.001_weight_decay=0'."""
    text = "_".join(f"{_short(k)}={_value_text(v)}" for k, v in setting.items())
    return re.sub(r"[^A-Za-z0-9._=,+-]", "-", text)


def validation_score(result: dict, metric: str) -> float:
    """The selection metric of a finished run: its last step's validation value (never test)."""
    if not metric.startswith("val_"):
        raise ValueError(f"selection reads validation metrics only, not '{metric}'")
    value = (result.get("final") or {}).get(metric)
    if value is None:
        raise ConfigError("sweep selection needs a validation split: set data.validation above 0")
    return float(value)


def select_setting(scores: list[list[float]], metric: str) -> int | None:
    """The index of the best setting by its mean validation score (None when no setting has one)."""
    means = [float(np.mean(s)) if s else math.nan for s in scores]
    if all(math.isnan(m) for m in means):
        return None
    sign = 1.0 if metric == "val_accuracy" else -1.0
    return max((i for i, m in enumerate(means) if not math.isnan(m)), key=lambda i: (sign * means[i], -i))


def edge_flags(sweep: SweepConfig, chosen: dict) -> list[str]:
    """'learning_rate at the top of the grid: widen it' for every swept number chosen at an edge."""
    flags = []
    for key, values in sweep.grid:
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) < 2 or len(numbers) != len(values) or key not in chosen:
            continue
        value = chosen[key]
        if value == max(numbers):
            flags.append(f"{_short(key)} at the top of the grid: widen it")
        elif value == min(numbers) and value != 0:
            flags.append(f"{_short(key)} at the bottom of the grid: widen it")
    return flags


# ---------------------------------------------------------------------------------------------------
# FLOPs and step time


def _unroll_scans(jaxpr):
    """The jaxpr with every scan fully unrolled (XLA's cost analysis counts a loop body once)."""
    from jax.extend import core

    eqns = []
    for eqn in jaxpr.eqns:
        params = dict(eqn.params)
        if eqn.primitive.name == "scan":
            params["unroll"] = params["length"]
        for key, value in params.items():
            if isinstance(value, core.ClosedJaxpr):
                params[key] = value.replace(jaxpr=_unroll_scans(value.jaxpr))
            elif isinstance(value, core.Jaxpr):
                params[key] = _unroll_scans(value)
        eqns.append(eqn.replace(params=params))
    return jaxpr.replace(eqns=eqns)


def _cost_flops(fn, *args) -> float | None:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops >= 0 else None


def _unrolled_flops(fn, *args) -> float | None:
    """XLA's FLOPs of the compiled `fn`, scans unrolled first so their bodies count once per step."""
    from jax.extend import core

    try:
        closed = jax.make_jaxpr(fn)(*args)
        unrolled = core.jaxpr_as_fun(closed.replace(jaxpr=_unroll_scans(closed.jaxpr)))
        return _cost_flops(unrolled, *jax.tree.leaves(args))
    except Exception:  # noqa: BLE001 - jaxpr internals may change; the plain count is still a count
        return _cost_flops(fn, *args)


def forward_flops(config: Config, spec: DataSpec) -> float | None:
    """FLOPs per example of the compiled inference forward pass, from XLA's cost analysis (None when
    the backend gives none); RNN time steps count once each."""
    model = models.build(config.model.name, spec.num_classes, spec.vocab_size, **config.model.hparams)
    dtype = np.dtype(spec.dtype)
    batch = config.data.batch_size
    variables = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, *spec.input_shape), dtype))
    x = jax.ShapeDtypeStruct((batch, *spec.input_shape), dtype)
    flops = _unrolled_flops(lambda v, inputs: model.apply(v, inputs)[0], variables, x)
    return flops / batch if flops is not None else None


def measure_step(config: Config, dataset: Dataset, timed_steps: int = CALIBRATION_STEPS) -> dict:
    """{"flops_per_step": XLA FLOPs of one compiled train step (forward, backward, update), "seconds_per_step":
    measured step time excluding compilation (None when `timed_steps` is 0)}.

    The step is timed as the run will call it (`train.steps_per_call` steps per call), after one
    untimed warm-up call."""
    from zoo.training import build_run
    from zoo.training import step as step_lib
    from zoo.training.loop import auto_steps_per_call

    run = build_run(config, dataset)
    state = run.abstract_state()
    x = jax.ShapeDtypeStruct((config.data.batch_size, *run.spec.input_shape), np.dtype(run.spec.dtype))
    y = jax.ShapeDtypeStruct((config.data.batch_size,), np.int32)
    step = step_lib.train_step_fn(run.model, run.tx, run.spec.num_classes, config.train.label_smoothing)
    flops = _unrolled_flops(step, state, x, y)
    seconds = None
    if timed_steps:
        from zoo.data import BatchIterator

        k = config.train.steps_per_call or auto_steps_per_call(run.model.info.family)
        calls = max(1, -(-timed_steps // k))
        jitted = step_lib.jit_train_step(run.model, run.tx, run.spec.num_classes, config.train.label_smoothing,
                                         run.mesh, k, config.train.deterministic, config.train.xla_options)
        batches = BatchIterator(run.dataset.x_train, run.dataset.y_train, config.data.batch_size, config.seed,
                                shift=config.data.shift)
        leading = 1 if k > 1 else 0

        def put(batch):
            xs, ys = batch
            return step_lib.put_batch(run.mesh, xs, leading), step_lib.put_batch(run.mesh, ys, leading)

        take = (lambda: batches.take(k)) if k > 1 else (lambda: next(batches))
        train_state = run.init_state()
        data = [put(take()) for _ in range(calls + 1)]
        compiled = jitted.lower(train_state, *data[0]).compile()
        train_state, metrics = compiled(train_state, *data[0])  # warm-up
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for xs, ys in data[1:]:
            train_state, metrics = compiled(train_state, xs, ys)
        jax.block_until_ready(metrics)
        seconds = (time.perf_counter() - start) / (calls * k)
    return {"flops_per_step": flops, "seconds_per_step": seconds}


# ---------------------------------------------------------------------------------------------------
# Running


def finished_result(run_dir: Path, config: Config) -> dict | None:
    """The stored summary when `run_dir` holds a finished run of exactly `config`, else None.

    The stored config is read back through the schema, so keys added later with their defaults still
    match."""
    try:
        stored = json.loads((run_dir / CONFIG_FILE).read_text())
        result = json.loads((run_dir / RESULT_FILE).read_text())
        same = from_dict(stored) == config
    except (OSError, json.JSONDecodeError, ConfigError):
        return None
    if not same or result.get("final_step") != result.get("steps"):
        return None
    return result


def run_dir_for(workdir: Path, config: Config, seed: int, setting: dict | None = None) -> Path:
    base = Path(workdir) / "runs" / config.name
    return (base / setting_tag(setting) if setting else base) / f"seed{seed}"


def _child(progress: Progress, prefix: str) -> Progress:
    if isinstance(progress, Silent):
        return progress
    return Progress(stream=progress.stream, interactive=progress.interactive, prefix=prefix)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict) -> None:
    if distributed.is_primary():  # process 0 owns the bookkeeping files
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(data, indent=2))


class _Stopped(Exception):
    def __init__(self, signal_name: str, run_dir: Path):
        super().__init__(signal_name)
        self.signal_name, self.run_dir = signal_name, run_dir


class _Runner:
    """Trains or reuses one (arm, setting, seed) at a time; keeps times, calibrations and the clock."""

    def __init__(self, config: CompareConfig, workdir: Path, datasets: dict, progress: Progress,
                 budget_s: float | None, planned: int):
        self.config, self.workdir, self.datasets, self.progress = config, workdir, datasets, progress
        self.started = _now()
        self.deadline = self.started + budget_s if budget_s else None
        self.times_path = workdir / RUN_TIMES_FILE
        self.times = _read_json(self.times_path)
        self.calibration_path = workdir / CALIBRATION_FILE
        self.calibration = _read_json(self.calibration_path)
        self.planned, self.done = planned, 0
        self.trained, self.reused, self.skipped = 0, 0, []
        self.run_seconds = []
        self.records = {}  # run dir -> record, for this invocation

    def key(self, run_dir: Path) -> str:
        return str(run_dir.relative_to(self.workdir / "runs"))

    def steps_for(self, arm: Arm, setting: dict) -> int | None:
        """Steps under a seconds or FLOPs budget (calibrated once per arm and setting, then stored)."""
        budget = self.config.budget_spec
        if budget.kind in ("steps", "epochs"):
            return None
        cal = self.measured(arm, setting, timed=budget.kind == "seconds")
        if budget.kind == "seconds":  # process 0's timing decides: every process trains the same steps
            return distributed.broadcast_ints([max(1, int(budget.seconds / cal["seconds_per_step"]))])[0]
        if not cal.get("flops_per_step"):
            raise ConfigError(f"budget: {{flops: ...}} needs XLA's cost analysis, which this backend does not "
                              f"give for {arm.base.name}: use {{steps: N}} or {{seconds: S}}")
        return max(1, int(budget.flops / cal["flops_per_step"]))

    def measured(self, arm: Arm, setting: dict, timed: bool) -> dict:
        """`measure_step` of the arm at `setting`, measured once and kept in the workdir's calibration.json
        (a rerun then gives every run the same steps)."""
        probe = self.config.run_config(arm, self.config.seeds[0], _PROBE_STEPS, setting)
        key = str(run_dir_for(Path("runs"), probe, 0, setting).parent.relative_to("runs"))
        cal = self.calibration.get(key)
        if cal is None or (timed and cal.get("seconds_per_step") is None):
            what = f"{CALIBRATION_STEPS} timed steps" if timed else "FLOPs"
            self.progress.log(f"{arm.base.name}{' at ' + _describe(setting) if setting else ''}: measuring the "
                              f"train step ({what})")
            cal = measure_step(probe, self.datasets[arm.dataset], CALIBRATION_STEPS if timed else 0)
            self.calibration[key] = cal
            _write_json(self.calibration_path, self.calibration)
        return cal

    def run(self, arm: Arm, setting: dict, seed: int, why: str) -> dict | None:
        """The finished run's record, or None when `--budget-s` ran out before it could start."""
        steps = self.steps_for(arm, setting)
        config = self.config.run_config(arm, seed, steps, setting)
        run_dir = run_dir_for(self.workdir, config, seed, setting)
        if run_dir in self.records:  # a sweep trial that is also a final run
            return self.records[run_dir]
        self.done += 1
        tag = f"[{self.done}/{self.planned}] {config.name}{' ' + _describe(setting) if setting else ''} seed {seed}"
        result = finished_result(run_dir, config)
        if result is not None:
            self.reused += 1
            self.progress.log(f"{tag}: finished earlier, reused (val accuracy "
                              f"{_fmt(result['final'].get('val_accuracy'))})")
        else:
            if self.deadline is not None and distributed.any_true(_now() > self.deadline):
                self.skipped.append({"dataset": arm.dataset, "config": config.name, "setting": setting,
                                     "seed": seed, "why": why})
                self.progress.log(f"{tag}: skipped, --budget-s is spent")
                return None
            self.progress.log(f"{tag}: training {config.model.name} ({why}) in {run_dir}  ETA {self.eta()}")
            start = time.perf_counter()
            result = fit(config, run_dir, _child(self.progress, tag), dataset=self.datasets[arm.dataset])
            if result.get("stopped"):
                raise _Stopped(result["stopped"], run_dir)
            elapsed = time.perf_counter() - start
            self.times[self.key(run_dir)] = elapsed
            _write_json(self.times_path, self.times)
            self.run_seconds.append(elapsed)
            self.trained += 1
            self.progress.log(f"{tag}: val accuracy {_fmt(result['final'].get('val_accuracy'))} in "
                              f"{_clock(elapsed)}  ETA {self.eta()}")
        self.records[run_dir] = {"config": config, "run_dir": run_dir, "result": result, "setting": setting,
                                 "seed": seed, "wall_seconds": self.times.get(self.key(run_dir))}
        return self.records[run_dir]

    def eta(self) -> str:
        if not self.run_seconds:
            return "?"
        return _clock(float(np.mean(self.run_seconds)) * max(self.planned - self.done, 0))


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def compare(config: CompareConfig | str | Path, workdir: str | Path, progress: Progress | None = None,
            command: str | None = None, dataset: Dataset | None = None, budget_s: float | None = None) -> dict:
    """Trains (or reuses) every run of `config` under `workdir`, then writes `workdir/report/`.

    `budget_s` stops launching new runs once that many seconds have passed (the report lists what was
    skipped; rerun to finish). `dataset` replaces the loaded data (single-dataset compares only).
    Returns {"report_dir", "table", "rows", "models", "trials", "skipped", "wall_seconds", "trained",
    "reused"}, or {"stopped": signal name, ...} when a run was stopped (rerun to resume).
    """
    if not isinstance(config, CompareConfig):
        config = load_compare(config)
    progress = progress if progress is not None and distributed.is_primary() else Silent()  # process 0 reports
    workdir = Path(workdir)
    datasets = {}
    for label in config.datasets:
        arm = next(a for a in config.arms if a.dataset == label)
        datasets[label] = dataset if dataset is not None else data_lib.load(arm.base.data)

    planned = 0
    for arm in config.arms:
        if arm.sweep:
            tuning = len(config.seeds[:arm.sweep.select.seeds])
            planned += len(arm.sweep.settings(config.seed)) * tuning + len(config.seeds) - tuning
        else:
            planned += len(config.seeds)
    runner = _Runner(config, workdir, datasets, progress, budget_s, planned)
    progress.log(f"compare '{config.name}' on {config.dataset}: {len(config.arms)} models x "
                 f"{len(config.seeds)} seeds, {config.budget} each; {planned} runs planned")
    try:
        rows, trials, sweeps = _run_all(config, runner, workdir)
    except _Stopped as stop:
        return {"stopped": stop.signal_name, "run_dir": str(stop.run_dir),
                "wall_seconds": _now() - runner.started}

    wall = _now() - runner.started
    meta = {"name": config.name, "dataset": config.dataset, "datasets": list(config.datasets),
            "budget": config.budget, "budget_kind": config.budget_spec.kind,
            "seeds": list(config.seeds), "models": list(dict.fromkeys(config.model_paths)), "command": command,
            "compare_config": config.path, "wall_seconds": wall, "trained": runner.trained,
            "reused": runner.reused, "skipped": runner.skipped, "budget_s": budget_s, "sweeps": sweeps,
            "reference": config.reference, "machine": _machine()}
    written = (report.write_report(workdir / "report", rows, meta, workdir, trials=trials) if distributed.is_primary()
               else {"table": "", "models": []})  # process 0 writes the report
    progress.log(f"compare '{config.name}' done in {_clock(wall)}: report in {workdir / 'report'}"
                 + (f"; {len(runner.skipped)} runs skipped (--budget-s)" if runner.skipped else ""))
    return {"report_dir": str(workdir / "report"), "table": written["table"], "rows": rows,
            "models": written["models"], "trials": trials, "skipped": runner.skipped, "wall_seconds": wall,
            "trained": runner.trained, "reused": runner.reused}


def _run_all(config: CompareConfig, runner: _Runner, workdir: Path) -> tuple[list, list, list]:
    rows, trials, sweeps = [], [], []
    flops_cache = {}  # per arm: (forward FLOPs per example, train FLOPs per step)
    for arm in config.arms:
        chosen = {}
        if arm.sweep:
            chosen, arm_trials, summary = _tune(config, runner, arm)
            trials += arm_trials
            sweeps.append(summary)
            if chosen is None:  # no trial finished within --budget-s
                runner.skipped += [{"dataset": arm.dataset, "config": arm.base.name, "setting": {}, "seed": seed,
                                    "why": "final, at the setting no trial has chosen yet"}
                                   for seed in config.seeds]
                continue
        spec = runner.datasets[arm.dataset].spec
        for seed in config.seeds:
            record = runner.run(arm, chosen, seed, "final")
            if record is None:
                continue
            run_config = record["config"]
            if arm.base.name not in flops_cache:
                step_flops = runner.measured(arm, chosen, timed=False)["flops_per_step"]
                flops_cache[arm.base.name] = (forward_flops(run_config, spec), step_flops)
            rows.append(_row(config, arm, record, *flops_cache[arm.base.name], workdir))
    return rows, trials, sweeps


def _tune(config: CompareConfig, runner: _Runner, arm: Arm) -> tuple[dict | None, list, dict]:
    """Trains every setting on the tuning seeds; picks one by the validation metric alone."""
    sweep = arm.sweep
    metric = sweep.select.metric
    settings = sweep.settings(config.seed)
    tuning_seeds = config.seeds[:sweep.select.seeds]
    scores, trials = [], []
    for setting in settings:
        values = []
        for seed in tuning_seeds:
            record = runner.run(arm, setting, seed, "sweep trial")
            if record is None:
                continue
            values.append(validation_score(record["result"], metric))
            trials.append({"dataset": arm.dataset, "config": arm.base.name, "label": arm.label,
                           "setting": setting, "tag": setting_tag(setting), "seed": seed,
                           "val_accuracy": record["result"]["final"].get("val_accuracy"),
                           "val_loss": record["result"]["final"].get("val_loss"),
                           "run_dir": str(record["run_dir"].relative_to(runner.workdir)),
                           "wall_seconds": record["wall_seconds"], "chosen": False})
        scores.append(values)
    best = select_setting(scores, metric)
    chosen = settings[best] if best is not None else None
    for trial in trials:
        trial["chosen"] = chosen is not None and trial["setting"] == chosen
    summary = {"dataset": arm.dataset, "config": arm.base.name, "label": arm.label, "grid": sweep.to_dict(),
               "settings": len(settings), "tuning_seeds": list(tuning_seeds), "metric": metric,
               "chosen": chosen, "flags": edge_flags(sweep, chosen) if chosen else [],
               "finished_trials": len(trials)}
    if chosen is not None:
        runner.progress.log(f"{arm.base.name}: chose {_describe(chosen)} by {metric} over "
                            f"{len(trials)} trials" + "".join(f"; {f}" for f in summary["flags"]))
    return chosen, trials, summary


def _row(config: CompareConfig, arm: Arm, record: dict, flops: float | None, step_flops: float | None,
         workdir: Path) -> dict:
    result, run_config, run_dir = record["result"], record["config"], record["run_dir"]
    try:
        run_dir = str(run_dir.relative_to(workdir))
    except ValueError:
        run_dir = str(run_dir)
    return {
        "compare": config.name,
        "dataset": arm.dataset,
        "config": run_config.name,
        "label": arm.label,
        "model": result["model"],
        "family": result["family"],
        "seed": record["seed"],
        "setting": json.dumps(record["setting"]) if record["setting"] else "",
        "params": result["params"],
        "flops_per_example": flops,
        "flops_per_step": step_flops,
        "train_flops": step_flops * result["steps"] if step_flops else None,
        "batch_size": run_config.data.batch_size,
        "steps": result["steps"],
        "compile_seconds": result["compile_seconds"],
        "ms_per_step": result["ms_per_step"],
        "examples_per_sec": result["examples_per_sec"],
        "train_seconds": result["train_seconds"],
        "wall_seconds": record["wall_seconds"],
        "final_accuracy": result["final"]["test_accuracy"],
        "final_loss": result["final"]["test_loss"],
        "final_val_accuracy": result["final"].get("val_accuracy"),
        "best_accuracy": result["best_accuracy"],  # test accuracy at the validation-best step
        "final_step": result["final_step"],
        "resumed_from": result.get("resumed_from", 0),
        "run_dir": run_dir,
    }


def _machine() -> dict:
    import platform

    devices = jax.devices()
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "jax": jax.__version__,
            "backend": jax.default_backend(), "devices": len(devices),
            "device_kind": devices[0].device_kind if devices else None,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
