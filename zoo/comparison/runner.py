"""`compare(config, workdir)`: every (model, seed) of a compare config trained by `fit()`, then a report.

The config is `zoo.comparison.schema`'s (its docstring shows one). Each (model, seed) is an ordinary
run directory `<workdir>/runs/<model config name>/seed<k>` (a swept model: `runs/<name>/<setting>/seed<k>`)
that `zoo eval` restores. A finished run (its result.json and
config.json match) is reused; an unfinished one is resumed by `fit()` itself. A sweep trains every
setting on the first `select.seeds` seeds, picks the setting by the validation metric alone, then
trains the other seeds at that setting. The report goes to `<workdir>/report/`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

import jax
import numpy as np

from zoo import data as data_lib
from zoo import distributed, tasks
from zoo.comparison import report
from zoo.comparison.cost import PROBE_STEPS, CALIBRATION_STEPS, forward_flops, measure_step
from zoo.comparison.schema import (Arm, CompareConfig, SweepConfig, describe_setting, short_key, load_compare,
                                     setting_tag)
from zoo.config import Config, from_dict
from zoo.errors import ConfigError, ZooError
from zoo.data import Dataset
from zoo.metrics import Progress, Silent
from zoo.rundir import CONFIG_FILE, RESULT_FILE
from zoo.training import fit, population
from zoo.util import atomic_write, clock

RUN_TIMES_FILE = "run_times.json"  # {"<run dir under runs/>": seconds of the fit() call that finished it}
CALIBRATION_FILE = "calibration.json"  # {"<run dir under runs/>": {"seconds_per_step", "flops_per_step"}}
_now = time.perf_counter  # the clock behind --budget-s, run times and the ETA (tests replace it)


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
            flags.append(f"{short_key(key)} at the top of the grid: widen it")
        elif value == min(numbers) and value != 0:
            flags.append(f"{short_key(key)} at the bottom of the grid: widen it")
    return flags


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


def _plan(config: CompareConfig) -> dict:
    """{model config name: runs planned}: a sweep's settings on its tuning seeds, then its other seeds."""
    plan = {}
    for arm in config.arms:
        runs = len(config.seeds)
        if arm.sweep:
            tuning = len(config.seeds[:arm.sweep.select.seeds])
            runs += len(arm.sweep.settings(config.seed)) * tuning - tuning
        plan[arm.base.name] = runs
    return plan


class _Runner:
    """Trains or reuses one (arm, setting, seed) at a time; keeps times, calibrations and the clock."""

    def __init__(self, config: CompareConfig, workdir: Path, datasets: dict, progress: Progress,
                 budget_s: float | None):
        self.config, self.workdir, self.datasets, self.progress = config, workdir, datasets, progress
        self.started = _now()
        self.deadline = self.started + budget_s if budget_s else None
        self.times_path = workdir / RUN_TIMES_FILE
        self.times = _read_json(self.times_path)
        self.calibration_path = workdir / CALIBRATION_FILE
        self.calibration = _read_json(self.calibration_path)
        self.left = _plan(config)  # {model config name: runs not started yet}
        self.planned, self.done = sum(self.left.values()), 0
        self.trained, self.reused, self.skipped = 0, 0, []
        self.run_seconds = []
        # For the ETA: each model's run times, the training its budget promised (steps x measured step
        # time, {seconds: S} budgets) and every run's wall time over what it was promised
        self.walls, self.promised, self.overheads = {}, {}, []
        self.records = {}  # run dir -> record, for this invocation
        self.main = tasks.describe(config.task).main().name  # the metric progress lines show: accuracy, r2, bpc

    def key(self, run_dir: Path) -> str:
        return str(run_dir.relative_to(self.workdir / "runs"))

    def steps_for(self, arm: Arm, setting: dict) -> int | None:
        """Steps under a seconds or FLOPs budget (calibrated once per arm and setting, then stored)."""
        budget = self.config.budget_spec
        if budget.kind in ("steps", "epochs"):
            return None
        cal = self.measured(arm, setting, timed=budget.kind == "seconds")
        if budget.kind == "seconds":  # process 0's timing decides: every process trains the same steps
            steps = distributed.broadcast_ints([max(1, int(budget.seconds / cal["seconds_per_step"]))])[0]
            self.promised[arm.base.name] = steps * cal["seconds_per_step"]
            return steps
        if not cal.get("flops_per_step"):
            raise ConfigError(f"budget: {{flops: ...}} needs XLA's cost analysis, which this backend does not "
                              f"give for {arm.base.name}: use {{steps: N}} or {{seconds: S}}")
        return max(1, int(budget.flops / cal["flops_per_step"]))

    def measured(self, arm: Arm, setting: dict, timed: bool) -> dict:
        """`measure_step` of the arm at `setting`, measured once and kept in the workdir's calibration.json
        (a rerun then gives every run the same steps)."""
        probe = self.config.run_config(arm, self.config.seeds[0], PROBE_STEPS, setting)
        key = str(run_dir_for(Path("runs"), probe, 0, setting).parent.relative_to("runs"))
        cal = self.calibration.get(key)
        if cal is None or (timed and cal.get("seconds_per_step") is None):
            what = f"{CALIBRATION_STEPS} timed steps" if timed else "FLOPs"
            self.progress.log(f"{arm.base.name}{' at ' + describe_setting(setting) if setting else ''}: measuring the "
                              f"train step ({what})")
            cal = measure_step(probe, self.datasets[arm.dataset], CALIBRATION_STEPS if timed else 0)
            self.calibration[key] = cal
            _write_json(self.calibration_path, self.calibration)
        return cal

    def run(self, arm: Arm, setting: dict, seed: int, why: str) -> dict | None:
        """The finished run's record, or None when `--budget-s` ran out before it could start."""
        return self.run_many(arm, [(setting, seed)], why)[0]

    def run_many(self, arm: Arm, jobs: list, why: str) -> list:
        """The records of `jobs`, (setting, seed) pairs of one arm, in order (None: skipped by
        `--budget-s`). Finished runs are reused; the others train as populations where their configs
        differ only in seed, learning rate and weight decay (population: auto), else one by one."""
        planned = [self._begin(arm, setting, seed) for setting, seed in jobs]
        pending = list({job["run_dir"]: job for job in planned if "tag" in job and not self._reuse(job)}.values())
        if self.config.population == "off":
            batches = [[job] for job in pending]
        else:
            batches = [[pending[i] for i in group] for group in population.groups([job["config"] for job in pending])]
        for batch in batches:
            self._train(arm, batch, why)
        return [self.records.get(job["run_dir"]) for job in planned]

    def _begin(self, arm: Arm, setting: dict, seed: int) -> dict:
        """A job: its config and run directory, and (unless this invocation has its record already: a sweep
        trial that is also a final run) its place in the plan."""
        steps = self.steps_for(arm, setting)
        config = self.config.run_config(arm, seed, steps, setting)
        job = {"config": config, "run_dir": run_dir_for(self.workdir, config, seed, setting), "setting": setting,
               "seed": seed}
        if job["run_dir"] in self.records:
            return job
        self.done += 1
        self.left[arm.base.name] -= 1
        job["number"] = self.done
        job["tag"] = f"[{self.done}/{self.planned}] {config.name}{' ' + describe_setting(setting) if setting else ''} seed {seed}"
        return job

    def _reuse(self, job: dict) -> bool:
        """Records a run finished earlier (True), or says it must train (False)."""
        result = finished_result(job["run_dir"], job["config"])
        if result is None:
            return False
        self.reused += 1
        self.progress.log(f"{job['tag']}: finished earlier, reused (val {self.main} "
                          f"{_fmt(result['final'].get(f'val_{self.main}'))})")
        self._record(job, result)
        return True

    def _record(self, job: dict, result: dict) -> None:
        self.records[job["run_dir"]] = {"config": job["config"], "run_dir": job["run_dir"], "result": result,
                                        "setting": job["setting"], "seed": job["seed"],
                                        "wall_seconds": self.times.get(self.key(job["run_dir"]))}

    def _train(self, arm: Arm, batch: list, why: str) -> None:
        """Trains `batch` (one run, or the members of one population) unless `--budget-s` is spent; each
        run's time is the batch's wall time divided among them."""
        if self.deadline is not None and distributed.any_true(_now() > self.deadline):
            for job in batch:
                self.skipped.append({"dataset": arm.dataset, "config": job["config"].name, "setting": job["setting"],
                                     "seed": job["seed"], "why": why})
                self.progress.log(f"{job['tag']}: skipped, --budget-s is spent")
            return
        first, dataset = batch[0], self.datasets[arm.dataset]
        model, start = first["config"].model.name, _now()
        if len(batch) == 1:
            self.progress.log(f"{first['tag']}: training {model} ({why}) in {first['run_dir']}  ETA {self.eta()}")
            results = [fit(first["config"], first["run_dir"], _child(self.progress, first["tag"]), dataset=dataset)]
        else:
            tag = f"[{first['number']}-{batch[-1]['number']}/{self.planned}] {first['config'].name}"
            self.progress.log(f"{tag}: training {model} ({why}): {len(batch)} runs as one population  ETA {self.eta()}")
            results = population.fit_population([job["config"] for job in batch], [job["run_dir"] for job in batch],
                                                _child(self.progress, tag), dataset, self.config.population_memory_mib)
        stopped = next((result for result in results if result.get("stopped")), None)
        if stopped:
            raise _Stopped(stopped["stopped"], Path(stopped["run_dir"]))
        elapsed = (_now() - start) / len(batch)
        for job, result in zip(batch, results):
            self.times[self.key(job["run_dir"])] = elapsed
            self.run_seconds.append(elapsed)
            self.walls.setdefault(arm.base.name, []).append(elapsed)
            if self.promised.get(arm.base.name):
                self.overheads.append(elapsed / self.promised[arm.base.name])
            self.trained += 1
            self.progress.log(f"{job['tag']}: val {self.main} {_fmt(result['final'].get(f'val_{self.main}'))} in "
                              f"{clock(elapsed)}  ETA {self.eta()}")
            self._record(job, result)
        _write_json(self.times_path, self.times)

    def eta(self) -> str:
        """The time left: every run not started yet at its own model's expected time."""
        if not self.run_seconds:
            return "?"
        return clock(sum(left * self.expected_seconds(name) for name, left in self.left.items() if left > 0))

    def expected_seconds(self, name: str) -> float:
        """One more run of model config `name`: the mean of its runs so far; else the training its budget
        promises (steps x its measured step time; S of {seconds: S} before its step is measured) times
        the wall/promised ratio of the runs so far; else the mean of every run so far."""
        if self.walls.get(name):
            return float(np.mean(self.walls[name]))
        promised = self.promised.get(name) or self.config.budget_spec.seconds
        if promised and self.overheads:
            return promised * float(np.mean(self.overheads))
        return float(np.mean(self.run_seconds))


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def compare(config: CompareConfig | str | Path | dict, workdir: str | Path, progress: Progress | None = None,
            command: str | None = None, dataset: Dataset | None = None, budget_s: float | None = None) -> dict:
    """Trains (or reuses) every run of `config` (a CompareConfig, the path of a YAML compare config or a
    dict of its keys) under `workdir`, then writes `workdir/report/`.

    `budget_s` stops launching new runs once that many seconds have passed (the report lists what was
    skipped; rerun to finish). `dataset` replaces the loaded data (single-dataset compares only).
    Returns {"report_dir", "table", "rows", "models", "trials", "skipped", "wall_seconds", "trained",
    "reused"}, or {"stopped": signal name, ...} when a run was stopped (rerun to resume).
    """
    from zoo.comparison.schema import parse_compare
    from zoo.config import as_config

    config = as_config(config, CompareConfig, parse_compare, load_compare, where="zoo.compare")
    progress = progress if progress is not None and distributed.is_primary() else Silent()  # process 0 reports
    workdir = Path(workdir)
    datasets = {}
    for label in config.datasets:
        arm = next(a for a in config.arms if a.dataset == label)
        datasets[label] = dataset if dataset is not None else data_lib.load(arm.base.data, arm.base.task)

    runner = _Runner(config, workdir, datasets, progress, budget_s)
    progress.log(f"compare '{config.name}' on {config.dataset}: {len(config.arms)} models x "
                 f"{len(config.seeds)} seeds, {config.budget} each; {runner.planned} runs planned")
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
    if config.task != "classify":  # a classification's report stays as it was before tasks
        meta.update(task=config.task, baselines=_baselines(config, datasets) if config.task == "regress" else {})
    if config.task == "lm" and config.samples.count and distributed.is_primary():
        meta["samples"] = samples(config.samples, rows, workdir, config.seeds)
    written = (report.write_report(workdir / "report", rows, meta, workdir, trials=trials) if distributed.is_primary()
               else {"table": "", "models": []})  # process 0 writes the report
    progress.log(f"compare '{config.name}' done in {clock(wall)}: report in {workdir / 'report'}"
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
        for record in runner.run_many(arm, [(chosen, seed) for seed in config.seeds], "final"):
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
    records = iter(runner.run_many(arm, [(setting, seed) for setting in settings for seed in tuning_seeds],
                                   "sweep trial"))
    for setting in settings:
        values = []
        for seed in tuning_seeds:
            record = next(records)
            if record is None:
                continue
            values.append(validation_score(record["result"], metric))
            main = tasks.describe(arm.base.task).main().name  # classify: val_accuracy
            trials.append({"dataset": arm.dataset, "config": arm.base.name, "label": arm.label,
                           "setting": setting, "tag": setting_tag(setting), "seed": seed,
                           f"val_{main}": record["result"]["final"].get(f"val_{main}"),
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
        runner.progress.log(f"{arm.base.name}: chose {describe_setting(chosen)} by {metric} over "
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
        # per metric of the task's report (classify: final_accuracy, final_val_accuracy, best_accuracy)
        **_metric_cells(result, tasks.describe(run_config.task)),
        "final_loss": result["final"]["test_loss"],
        "final_step": result["final_step"],
        "resumed_from": result.get("resumed_from", 0),
        "run_dir": run_dir,
        "population": (result.get("population") or {}).get("size"),  # trained as a member of N (report only)
    }


def _metric_cells(result: dict, task) -> dict:
    """A run's final test and validation values of each report metric of its task, and the test value
    at the validation-best step (`best_<metric>`: selected on validation, never on test)."""
    best = result.get("best_checkpoint") or {}
    cells = {}
    for metric in (m.name for m in task.report):
        cells[f"final_{metric}"] = result["final"][f"test_{metric}"]
        cells[f"final_val_{metric}"] = result["final"].get(f"val_{metric}")
        cells[f"best_{metric}"] = result.get(f"best_{metric}", best.get(f"test_{metric}"))
    return cells


def samples(spec, rows: list[dict], workdir: Path, seeds) -> dict:
    """{"settings": spec's keys, "models": [{dataset, label, run_dir, seed, texts | error}]}: `spec.count`
    continuations of `spec.prompt` from each model's run of its first seed (final checkpoint), sampling
    seeds spec.seed, spec.seed + 1, ...; what `zoo sample RUN_DIR --seed S` prints for each."""
    from zoo.inference.loaded import load_run

    seeds = list(seeds)
    order = lambda r: (seeds.index(r["seed"]) if r["seed"] in seeds else len(seeds), r["seed"])  # noqa: E731
    first = {}  # (dataset, label) -> the row of its first seed, in the order of the report's rows
    for row in rows:
        key = (row["dataset"], row["label"])
        if key not in first or order(row) < order(first[key]):
            first[key] = row
    out = []
    for (dataset, label), row in first.items():
        entry = {"dataset": dataset, "label": label, "run_dir": row["run_dir"], "seed": row["seed"]}
        try:
            run = load_run(workdir / row["run_dir"])
            entry["texts"] = [run.sample(spec.prompt, spec.max_tokens, spec.temperature, spec.top_k, spec.top_p,
                                         spec.seed + i) for i in range(spec.count)]
        except ZooError as error:  # e.g. a prompt character outside a character-level vocabulary
            entry["error"] = str(error)
        out.append(entry)
    return {"settings": dataclasses.asdict(spec), "models": out}


def _baselines(config: CompareConfig, datasets: dict) -> dict:
    """{dataset: ordinary least squares on it (`least_squares`)} for a regression compare."""
    out = {}
    for label in config.datasets:
        arm = next(a for a in config.arms if a.dataset == label)
        out[label] = least_squares(data_lib.prepare(datasets[label], arm.base.data))
    return out


def least_squares(dataset: Dataset) -> dict:
    """Ordinary least squares with an intercept (`np.linalg.lstsq`), fit on the training rows the models
    train on (a prepared dataset: its validation rows held out by the same data.seed) and scored on the
    test split with the regression task's own metrics, in the targets' original units: the linear
    baseline a regression report prints beside the models."""
    spec = dataset.spec

    def design(x):
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        return np.hstack([x, np.ones((len(x), 1))])

    coefficients, *_ = np.linalg.lstsq(design(dataset.x_train), np.asarray(dataset.y_train, np.float64), rcond=None)
    predicted = (design(dataset.x_test) @ coefficients).astype(np.float32)
    task = tasks.Regress(spec.num_classes, tuple(spec.targets["mean"]), tuple(spec.targets["std"]))
    sums = task.eval_sums(predicted, np.asarray(dataset.y_test, np.float32), np.ones(len(predicted), np.float32))
    metrics = task.finish({key: np.asarray(value, np.float64) for key, value in sums.items()})
    return {"method": "ordinary least squares (np.linalg.lstsq, with intercept)", "train_rows": len(dataset.x_train),
            "test_rows": len(predicted), **{key: metrics[key] for key in ("r2", "rmse", "mae")}}


def _machine() -> dict:
    import platform

    devices = jax.devices()
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "jax": jax.__version__,
            "backend": jax.default_backend(), "devices": len(devices),
            "device_kind": devices[0].device_kind if devices else None,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
