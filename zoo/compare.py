"""`compare(config, workdir)`: every (model, seed) of a compare config trained by `fit()`, then a report.

A compare config names one dataset, a list of model configs, the seeds and one budget shared by all:

    name: digits
    dataset: digits
    seeds: [0, 1, 2]          # default [0, 1, 2]
    budget: {steps: 600}      # or {epochs: N}; replaces every model config's train.steps/epochs
    eval_every: 100           # optional: replaces every model config's train.eval_every
    models: [configs/digits/mlp.yaml, configs/digits/cnn.yaml]
    reference:                # optional: published accuracies shown beside ours
      source: "Author et al. 2024"
      accuracy: {digits_mlp: 0.9}

Each (model, seed) is an ordinary run directory `<workdir>/runs/<model config name>/seed<k>` that
`zoo eval` restores. A finished run (its result.json and config.json match) is reused; an
unfinished one is resumed by `fit()` itself. The report goes to `<workdir>/report/`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import jax
import numpy as np

from zoo import models, report
from zoo.config import Config, apply_overrides, from_dict, load_inherited, load_yaml
from zoo.data import Dataset, DataSpec, list_datasets, load_dataset
from zoo.errors import ConfigError, did_you_mean
from zoo.metrics import Progress, Silent
from zoo.training import fit
from zoo.training.loop import CONFIG_FILE, RESULT_FILE
from zoo.util import atomic_write, clock

DEFAULT_SEEDS = (0, 1, 2)
RUN_TIMES_FILE = "run_times.json"  # {"<model config name>/seed<k>": seconds of the fit() call that finished it}
_KEYS = ("name", "dataset", "seeds", "budget", "models", "eval_every", "reference", "tensorboard")
_REQUIRED = ("name", "dataset", "budget", "models")
_BUDGET_KEYS = ("steps", "epochs")
_REFERENCE_KEYS = ("source", "accuracy")


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """A validated compare config; `models` holds each model's resolved config (seed and budget not yet set)."""

    name: str
    dataset: str
    models: tuple[Config, ...]
    model_paths: tuple[str, ...]
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    steps: int | None = None
    epochs: int | None = None
    eval_every: int | None = None
    reference: dict | None = None  # {"source": str, "accuracy": {model config name: float}}
    path: str | None = None
    tensorboard: bool = False  # every run writes TensorBoard events: --logdir <workdir>/runs shows model/seedK

    @property
    def budget(self) -> str:
        return f"{self.steps} steps" if self.steps else f"{self.epochs} epochs"

    def run_config(self, model: Config, seed: int) -> Config:
        """`model` with this compare's seed, budget and evaluation interval."""
        raw = model.to_dict()
        raw["seed"] = seed
        raw["train"]["steps"], raw["train"]["epochs"] = self.steps, self.epochs
        if self.eval_every:
            raw["train"]["eval_every"] = self.eval_every
        if self.tensorboard:
            raw["logging"] = {"tensorboard": True}
        return from_dict(raw)

    def to_dict(self) -> dict:
        return {"name": self.name, "dataset": self.dataset, "seeds": list(self.seeds),
                "budget": {"steps": self.steps} if self.steps else {"epochs": self.epochs},
                "eval_every": self.eval_every, "models": list(self.model_paths),
                "reference": self.reference}


def _unknown_key(where: str, key, valid) -> ConfigError:
    return ConfigError(f"{where}unknown key '{key}': {did_you_mean(key, valid)}valid keys: {', '.join(valid)}")


def _positive_int(value, what: str, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{what}: expected an integer of at least {minimum}, got {value!r}")
    return value


def _resolve(model_path: str, compare_path: Path | None) -> Path:
    """A model config path as given (relative to the current directory), else next to the compare config."""
    path = Path(model_path)
    if path.is_file() or path.is_absolute() or compare_path is None:
        return path
    beside = compare_path.parent / path
    return beside if beside.is_file() else path


def parse_compare(raw: dict, path: str | Path | None = None) -> CompareConfig:
    """Validates a raw compare mapping; every problem is a ConfigError naming the file and the key."""
    where = f"{path}: " if path else ""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}a compare config must be a mapping of keys, got {type(raw).__name__}")
    for key in raw:
        if key not in _KEYS:
            raise _unknown_key(where, key, _KEYS)
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise ConfigError(f"{where}missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}: a compare "
                          "config needs name, dataset, budget and models (see configs/compare/digits.yaml)")
    name, dataset = raw["name"], raw["dataset"]
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}name: expected a non-empty string, got {name!r}")
    if dataset not in list_datasets():
        raise ConfigError(f"{where}dataset: '{dataset}' is not a dataset: {did_you_mean(dataset, list_datasets())}"
                          f"choose one of {', '.join(list_datasets())}")

    seeds = raw.get("seeds", list(DEFAULT_SEEDS))
    if not isinstance(seeds, list) or not seeds:
        raise ConfigError(f"{where}seeds: expected a non-empty list of integers, e.g. [0, 1, 2], got {seeds!r}")
    seeds = tuple(_positive_int(s, f"{where}seeds[{i}]", 0) for i, s in enumerate(seeds))
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}seeds: {list(seeds)} repeats a seed; give each seed once")

    budget = raw["budget"]
    if not isinstance(budget, dict):
        raise ConfigError(f"{where}budget: expected a mapping like {{steps: 600}} or {{epochs: 20}}, got {budget!r}")
    for key in budget:
        if key not in _BUDGET_KEYS:
            raise _unknown_key(f"{where}budget: ", key, _BUDGET_KEYS)
    if len(budget) != 1:
        raise ConfigError(f"{where}budget: give exactly one of steps or epochs, e.g. {{steps: 600}}")
    steps = _positive_int(budget["steps"], f"{where}budget.steps") if "steps" in budget else None
    epochs = _positive_int(budget["epochs"], f"{where}budget.epochs") if "epochs" in budget else None
    eval_every = raw.get("eval_every")
    if eval_every is not None:
        eval_every = _positive_int(eval_every, f"{where}eval_every")

    paths = raw["models"]
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise ConfigError(f"{where}models: expected a non-empty list of model config paths, "
                          f"e.g. [configs/{dataset}/mlp.yaml], got {paths!r}")
    compare_path = Path(path) if path else None
    configs, names = [], {}
    for model_path in paths:
        resolved = _resolve(model_path, compare_path)
        try:
            config = from_dict(load_inherited(resolved))
        except ConfigError as error:
            raise ConfigError(f"{where}models: {model_path}: {error}") from None
        if config.data.name != dataset:
            raise ConfigError(f"{where}models: {model_path} trains on '{config.data.name}' but this compare is on "
                              f"'{dataset}': use a model config with data.name {dataset} "
                              f"(e.g. configs/{dataset}/)")
        if config.name in names:
            raise ConfigError(f"{where}models: {model_path} and {names[config.name]} share the name "
                              f"'{config.name}' (runs go to runs/<name>/): give each model config its own name")
        names[config.name] = model_path
        configs.append(config)

    reference = raw.get("reference")
    if reference is not None:
        reference = _check_reference(reference, names, where)
    compare = CompareConfig(name, dataset, tuple(configs), tuple(paths), seeds, steps, epochs, eval_every,
                            reference, str(path) if path else None, _tensorboard(raw, where))
    for config in configs:  # the budget must give a valid train section for every model
        try:
            compare.run_config(config, seeds[0])
        except ConfigError as error:
            raise ConfigError(f"{where}{config.name} with this budget: {error}") from None
    return compare


def _check_reference(reference, names: dict, where: str) -> dict:
    if not isinstance(reference, dict):
        raise ConfigError(f"{where}reference: expected a mapping {{source: ..., accuracy: {{name: value}}}}, "
                          f"got {reference!r}")
    for key in reference:
        if key not in _REFERENCE_KEYS:
            raise _unknown_key(f"{where}reference: ", key, _REFERENCE_KEYS)
    source, accuracy = reference.get("source", "reference"), reference.get("accuracy", {})
    if not isinstance(source, str):
        raise ConfigError(f"{where}reference.source: expected a string, got {source!r}")
    if not isinstance(accuracy, dict):
        raise ConfigError(f"{where}reference.accuracy: expected a mapping of model config name to accuracy, "
                          f"got {accuracy!r}")
    for key, value in accuracy.items():
        if key not in names:
            raise _unknown_key(f"{where}reference.accuracy: ", key, list(names))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f"{where}reference.accuracy.{key}: expected a fraction in [0, 1], got {value!r}")
    return {"source": source, "accuracy": {k: float(v) for k, v in accuracy.items()}}


def _tensorboard(raw: dict, where: str) -> bool:
    value = raw.get("tensorboard", False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}tensorboard: expected true or false, got {value!r}")
    return value


def load_compare(path: str | Path, overrides: list[str] = ()) -> CompareConfig:
    """Reads and validates a compare config (YAML, safe); `overrides` are `key=value` strings."""
    return parse_compare(apply_overrides(load_yaml(path), list(overrides)), path)


# ---------------------------------------------------------------------------------------------------
# FLOPs


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


def forward_flops(config: Config, spec: DataSpec) -> float | None:
    """FLOPs per example of the compiled inference forward pass, from XLA's cost analysis.

    Scans (RNN time steps) are unrolled first so their bodies count once per step; None when the
    backend gives no cost analysis.
    """
    from jax.extend import core

    model = models.build(config.model.name, spec.num_classes, spec.vocab_size, **config.model.hparams)
    dtype = np.dtype(spec.dtype)
    batch = config.data.batch_size
    variables = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, *spec.input_shape), dtype))
    x = jax.ShapeDtypeStruct((batch, *spec.input_shape), dtype)
    forward = lambda v, inputs: model.apply(v, inputs)[0]  # noqa: E731
    try:
        closed = jax.make_jaxpr(forward)(variables, x)
        unrolled = core.jaxpr_as_fun(closed.replace(jaxpr=_unroll_scans(closed.jaxpr)))
        flops = _cost_flops(unrolled, *jax.tree.leaves((variables, x)))
    except Exception:  # noqa: BLE001 - jaxpr internals may change; the plain count is still a count
        flops = _cost_flops(forward, variables, x)
    return flops / batch if flops is not None else None


# ---------------------------------------------------------------------------------------------------
# Running


@dataclasses.dataclass
class _Job:
    config: Config
    seed: int
    run_dir: Path
    steps: int
    finished: dict | None  # the stored summary of a finished run


def finished_result(run_dir: Path, config: Config) -> dict | None:
    """The stored summary when `run_dir` holds a finished run of exactly `config`, else None."""
    try:
        stored = json.loads((run_dir / CONFIG_FILE).read_text())
        result = json.loads((run_dir / RESULT_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if stored != config.to_dict() or result.get("final_step") != result.get("steps"):
        return None
    return result


def run_dir_for(workdir: Path, config: Config, seed: int) -> Path:
    return Path(workdir) / "runs" / config.name / f"seed{seed}"


def _child(progress: Progress, prefix: str) -> Progress:
    if isinstance(progress, Silent):
        return progress
    return Progress(stream=progress.stream, interactive=progress.interactive, prefix=prefix)


def _eta(jobs: list[_Job], index: int, seconds_per_step: dict, run_seconds: list) -> str:
    """Time left for jobs[index:], from this invocation's measured runs (same model first)."""
    if not run_seconds:
        return "?"
    total = 0.0
    for job in jobs[index:]:
        if job.finished is not None:
            continue
        rate = seconds_per_step.get(job.config.name)
        total += rate * job.steps if rate is not None else float(np.mean(run_seconds))
    return clock(total)


def compare(config: CompareConfig | str | Path, workdir: str | Path, progress: Progress | None = None,
            command: str | None = None, dataset: Dataset | None = None) -> dict:
    """Trains (or reuses) every (model, seed) of `config` under `workdir`, then writes `workdir/report/`.

    Returns {"report_dir", "table", "rows", "models", "wall_seconds", "trained", "reused"}, or
    {"stopped": signal name, ...} when a run was stopped (rerun to resume).
    """
    started = time.perf_counter()
    if not isinstance(config, CompareConfig):
        config = load_compare(config)
    progress = progress or Silent()
    workdir = Path(workdir)
    dataset = dataset or load_dataset(config.dataset)

    jobs = []
    for model in config.models:
        for seed in config.seeds:
            run_config = config.run_config(model, seed)
            run_dir = run_dir_for(workdir, run_config, seed)
            steps = run_config.total_steps(dataset.spec.train_size // run_config.data.batch_size)
            jobs.append(_Job(run_config, seed, run_dir, steps, finished_result(run_dir, run_config)))
    to_train = sum(job.finished is None for job in jobs)
    progress.log(f"compare '{config.name}' on {config.dataset}: {len(config.models)} models x "
                 f"{len(config.seeds)} seeds, {config.budget} each; {to_train} runs to train, "
                 f"{len(jobs) - to_train} finished earlier")

    flops = {}
    for model in config.models:
        flops[model.name] = forward_flops(model, dataset.spec)

    times_path = workdir / RUN_TIMES_FILE
    times = _read_times(times_path)
    rows, seconds_per_step, run_seconds, trained = [], {}, [], 0
    for index, job in enumerate(jobs):
        tag = f"[{index + 1}/{len(jobs)}] {job.config.name} seed {job.seed}"
        if job.finished is not None:
            result = job.finished
            progress.log(f"{tag}: finished earlier, reused (test accuracy {result['final']['test_accuracy']:.4f})")
        else:
            progress.log(f"{tag}: training {job.config.model.name} in {job.run_dir}  "
                         f"ETA {_eta(jobs, index, seconds_per_step, run_seconds)}")
            run_start = time.perf_counter()
            result = fit(job.config, job.run_dir, _child(progress, tag), dataset=dataset)
            if result.get("stopped"):
                return {"stopped": result["stopped"], "run_dir": str(job.run_dir),
                        "wall_seconds": time.perf_counter() - started}
            elapsed = time.perf_counter() - run_start
            times[_time_key(job)] = elapsed
            _write_times(times_path, times)
            run_seconds.append(elapsed)
            trained += 1
            done_steps = result["steps"] - result.get("resumed_from", 0)
            if done_steps > 0:
                seconds_per_step[job.config.name] = elapsed / done_steps
            progress.log(f"{tag}: test accuracy {result['final']['test_accuracy']:.4f} in {clock(elapsed)}  "
                         f"ETA {_eta(jobs, index + 1, seconds_per_step, run_seconds)}")
        rows.append(_row(config, job, result, flops[job.config.name], workdir, times.get(_time_key(job))))

    wall = time.perf_counter() - started
    meta = {"name": config.name, "dataset": config.dataset, "budget": config.budget,
            "seeds": list(config.seeds), "models": list(config.model_paths), "command": command,
            "compare_config": config.path,
            "wall_seconds": wall, "trained": trained, "reused": len(jobs) - trained,
            "reference": config.reference, "machine": _machine()}
    written = report.write_report(workdir / "report", rows, meta, workdir)
    progress.log(f"compare '{config.name}' done in {clock(wall)}: report in {workdir / 'report'}")
    return {"report_dir": str(workdir / "report"), "table": written["table"], "rows": rows,
            "models": written["models"], "wall_seconds": wall, "trained": trained,
            "reused": len(jobs) - trained}


def _time_key(job: _Job) -> str:
    return f"{job.config.name}/seed{job.seed}"


def _read_times(path: Path) -> dict:
    try:
        times = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return times if isinstance(times, dict) else {}


def _write_times(path: Path, times: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(times, indent=2))


def _row(config: CompareConfig, job: _Job, result: dict, flops: float | None, workdir: Path,
         wall_seconds: float | None) -> dict:
    try:
        run_dir = str(job.run_dir.relative_to(workdir))
    except ValueError:
        run_dir = str(job.run_dir)
    return {
        "compare": config.name,
        "dataset": config.dataset,
        "config": job.config.name,
        "model": result["model"],
        "family": result["family"],
        "seed": job.seed,
        "params": result["params"],
        "flops_per_example": flops,
        "batch_size": job.config.data.batch_size,
        "steps": result["steps"],
        "compile_seconds": result["compile_seconds"],
        "ms_per_step": result["ms_per_step"],
        "examples_per_sec": result["examples_per_sec"],
        "train_seconds": result["train_seconds"],
        "wall_seconds": wall_seconds,
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
