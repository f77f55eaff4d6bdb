"""`fit(config, workdir)`: the one training loop. Resumes from the run directory's latest good step."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import jax
import numpy as np

from zoo import checkpoint as ckpt
from zoo import models
from zoo.config import Config, from_dict
from zoo.data import BatchIterator, Dataset, check_inputs, load_dataset, with_validation
from zoo.data.batching import Position
from zoo.errors import CheckpointError, ConfigError, DamagedCheckpointError, RunError
from zoo.metrics import JsonlWriter, Progress, Silent, TensorBoardWriter, Tee
from zoo.training import optim, state as state_lib, step as step_lib

CONFIG_FILE, METRICS_FILE, RESULT_FILE, LOCK_FILE = "config.json", "metrics.jsonl", "result.json", ".lock"


@dataclasses.dataclass
class Run:
    """Everything built from a config: model, data, optimizer, mesh, jitted steps."""

    config: Config
    dataset: Dataset
    model: models.Model
    tx: object
    mesh: object
    total_steps: int
    steps_per_epoch: int

    @property
    def spec(self):
        return self.dataset.spec

    def sample_input(self):
        return jax.ShapeDtypeStruct((1, *self.spec.input_shape), np.dtype(self.spec.dtype))

    def abstract_state(self):
        """The train state's shapes, dtypes and (replicated) shardings, without computing it."""
        shapes = jax.eval_shape(lambda x: state_lib.create(self.model, self.tx, self.config.seed, x),
                                self.sample_input())
        sharding = step_lib.replicated(self.mesh)
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)

    def init_state(self):
        sample = np.zeros((1, *self.spec.input_shape), self.spec.dtype)
        create = jax.jit(lambda x: state_lib.create(self.model, self.tx, self.config.seed, x),
                         out_shardings=step_lib.replicated(self.mesh))
        return create(sample)


def build_run(config: Config, dataset: Dataset | None = None, training: bool = True) -> Run:
    """Builds and checks everything a config names (data, model, optimizer) without writing anything.

    `training=False` (evaluation) skips the checks only training needs, such as the batch splitting
    over this machine's devices (a run trained elsewhere evaluates anywhere)."""
    dataset = with_validation(dataset or load_dataset(config.data.name), config.data.validation, config.data.seed)
    check_inputs(dataset.spec, dataset.x_train[:1])
    spec = dataset.spec
    model = models.build(config.model.name, spec.num_classes, spec.vocab_size, **config.model.hparams)
    devices = jax.device_count()
    if training and config.data.batch_size % devices:
        raise ConfigError(f"data.batch_size {config.data.batch_size} does not split over {devices} devices: "
                          f"use a multiple of {devices}")
    if config.data.batch_size > spec.train_size:
        raise ConfigError(f"data.batch_size {config.data.batch_size} is larger than the {spec.train_size} "
                          f"training examples of '{spec.name}'")
    steps_per_epoch = spec.train_size // config.data.batch_size
    total_steps = config.total_steps(steps_per_epoch)
    tx = optim.make_optimizer(config.optimizer, total_steps)
    run = Run(config, dataset, model, tx, step_lib.make_mesh(), total_steps, steps_per_epoch)
    run.abstract_state()  # traces init: a model that cannot take this data fails here
    return run


def selection_metric(config: Config) -> tuple[str, str]:
    """The checkpoint metric that ranks steps ('val_accuracy' or 'val_loss') and its direction:
    selection reads the validation split only, never test."""
    metric = config.checkpoint.metric
    return f"val_{metric}", "max" if metric == "accuracy" else "min"


def checkpoints_for(run_dir: Path, config: Config, read_only: bool = False,
                    has_validation: bool = True) -> ckpt.Checkpoints:
    c = config.checkpoint
    metric, mode = selection_metric(config)
    return ckpt.Checkpoints(Path(run_dir) / "checkpoints", keep=c.keep,
                            keep_best=c.keep_best if has_validation else 0,
                            metric=metric, mode=mode, async_save=c.async_save, read_only=read_only)


def evaluate_splits(run: Run, evaluate_split, state) -> dict:
    """Flat metrics of one state: val_loss/val_accuracy (when there is a validation split) and
    test_loss/test_accuracy, as recorded in checkpoints and compared by `zoo eval`."""
    metrics = {}
    if run.dataset.has_validation:
        metrics.update({f"val_{k}": v for k, v in
                        evaluate_split(state, run.dataset.x_val, run.dataset.y_val).items()})
    metrics.update({f"test_{k}": v for k, v in
                    evaluate_split(state, run.dataset.x_test, run.dataset.y_test).items()})
    return metrics


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """One writer per run directory. flock dies with its process, so a killed run leaves no lock."""
    path = run_dir / LOCK_FILE
    handle = path.open("a")  # never written: an existing lock file stays untouched
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunError(f"run directory '{run_dir}' is in use by another `zoo train` (it holds the lock "
                       f"on {path}): wait for it to finish or use another --workdir") from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


@contextlib.contextmanager
def stop_requests():
    """Turns SIGTERM and Ctrl-C into a flag checked between steps (main thread only); a second
    signal acts at once (checkpoints are atomic, so that is safe too)."""
    requested = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum, _frame):
        requested["signal"] = signal.Signals(signum).name
        signal.signal(signum, previous[signum])

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _check_same_config(run_dir: Path, config: Config) -> None:
    path = run_dir / CONFIG_FILE
    if not path.exists():
        return
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return  # written atomically; an unreadable one is not ours to judge, the checkpoint's is
    current = config.to_dict()
    if stored != current:
        keys = sorted(_diff_keys(stored, current))
        raise RunError(f"run directory '{run_dir}' holds a run of another config (differs in "
                       f"{', '.join(keys[:4]) or 'structure'}): use another --workdir")


def _diff_keys(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in set(a) | set(b):
            yield from _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
    elif a != b:
        yield prefix.rstrip(".")


def _write_json_once(path: Path, data) -> None:
    """Writes `data` unless the file already holds it (a resumed run leaves its files untouched)."""
    try:
        if json.loads(path.read_text()) == data:
            return
    except (OSError, json.JSONDecodeError):
        pass
    _write_json_atomic(path, data)


def _write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def restore_latest_good(checkpoints: ckpt.Checkpoints, run: Run, progress: Progress):
    """The newest step that restores and verifies. Damaged newer steps are reported and set aside
    (a resumed run will write those step numbers again); if every step is damaged, refuses."""
    damaged = []
    for step in reversed(checkpoints.listed_steps()):
        try:
            state, meta = checkpoints.restore(step, run.abstract_state())
        except DamagedCheckpointError as error:
            progress.log(f"skipping: {error}")
            damaged.append(step)
            continue
        if damaged:
            where = checkpoints.set_aside(damaged)
            progress.log(f"falling back to step {step}, the newest good checkpoint; damaged step(s) "
                         f"{', '.join(map(str, damaged))} moved to {where}")
        return step, state, meta
    if damaged:
        raise CheckpointError(f"every checkpoint in '{checkpoints.directory}' is damaged (steps "
                              f"{', '.join(map(str, sorted(damaged)))}): move that directory aside to "
                              "start over, or use another --workdir")
    return None, None, None


def auto_steps_per_call(family: str) -> int:
    """Steps per call where the config leaves it open: only MLP steps are short enough to gain."""
    return 10 if family == "dnn" else 1


class _Steps:
    """Compiles the train step ahead of time (timed) for 1 and K steps per call."""

    def __init__(self, run: Run):
        c = run.config
        self.run, self.k = run, c.train.steps_per_call or auto_steps_per_call(run.model.info.family)
        self.compile_seconds = 0.0
        self._compiled = {}

    def get(self, count: int, state, x, y):
        if count not in self._compiled:
            c = self.run.config
            jitted = step_lib.jit_train_step(self.run.model, self.run.tx, self.run.spec.num_classes,
                                             c.train.label_smoothing, self.run.mesh, count)
            start = time.perf_counter()
            self._compiled[count] = jitted.lower(state, x, y).compile()
            self.compile_seconds += time.perf_counter() - start
        return self._compiled[count]


def fit(config: Config, workdir: str | Path, progress: Progress | None = None,
        dataset: Dataset | None = None) -> dict:
    """Trains `config` in `workdir` (resuming if it holds checkpoints); returns the run's summary."""
    progress = progress or Silent()
    run_dir = Path(workdir)
    run = build_run(config, dataset)  # bad input is refused before anything is written
    _check_same_config(run_dir, config)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        return _train(run, run_dir, progress)


def _train(run: Run, run_dir: Path, progress: Progress) -> dict:
    config, spec, mesh = run.config, run.spec, run.mesh
    checkpoints = checkpoints_for(run_dir, config, has_validation=run.dataset.has_validation)
    start_step, state, meta = restore_latest_good(checkpoints, run, progress)
    _write_json_once(run_dir / CONFIG_FILE, config.to_dict())
    metrics_log = JsonlWriter(run_dir / METRICS_FILE)
    if config.logging.tensorboard and jax.process_index() == 0:  # process 0 owns the bookkeeping
        metrics_log = Tee(metrics_log, TensorBoardWriter(run_dir, config.to_dict()))
    position = Position()
    if state is None:
        state, start_step = run.init_state(), 0
    else:
        position = Position(**meta["position"])
        progress.log(f"resuming from step {start_step}")
        if meta.get("devices", jax.device_count()) != jax.device_count():
            progress.log(f"note: step {start_step} was saved on {meta['devices']} devices, this run has "
                         f"{jax.device_count()}: results will differ from an uninterrupted run in the "
                         "last bits")
    metrics_log.truncate_after(start_step)
    batches = BatchIterator(run.dataset.x_train, run.dataset.y_train, config.data.batch_size,
                            config.seed, shift=config.data.shift, position=position)
    eval_bs = -(-config.data.eval_batch_size // jax.device_count()) * jax.device_count()
    eval_step = step_lib.jit_eval_step(run.model, spec.num_classes, mesh)
    evaluate_split = lambda s, x, y: step_lib.evaluate_arrays(  # noqa: E731
        eval_step, mesh, s.params, s.model_state, x, y, eval_bs)
    steps = _Steps(run)
    param_count = models.count_params(state.params)
    meta_base = {"config": config.to_dict(), "spec": spec.to_json(), "model": config.model.name,
                 "family": run.model.info.family, "param_count": param_count, "devices": jax.device_count()}
    every_ckpt, every_eval = config.checkpoint.every, config.train.eval_every or config.checkpoint.every
    log_every, total = config.train.log_every, run.total_steps

    pending, timed_steps, train_seconds = [], 0, 0.0
    step, last_sync = start_step, time.perf_counter()
    last_eval = None
    stopped_by = None
    progress.start(total, start_step)
    with stop_requests() as stop:
        while step < total and not stopped_by:
            next_event = min(total, _next_multiple(step, log_every), _next_multiple(step, every_eval),
                             _next_multiple(step, every_ckpt))
            count = steps.k if next_event - step >= steps.k else 1
            if count == 1:
                x, y = next(batches)
            else:
                x, y = batches.take(count)
            check_inputs(spec, x[0] if count > 1 else x)
            leading = 1 if count > 1 else 0
            xd, yd = step_lib.put_batch(mesh, x, leading), step_lib.put_batch(mesh, y, leading)
            compile_before = steps.compile_seconds
            compiled = steps.get(count, state, xd, yd)
            last_sync += steps.compile_seconds - compile_before  # compile time is reported apart
            state, metrics = compiled(state, xd, yd)
            pending.append((step, count, metrics))
            step += count
            if stop["signal"]:
                stopped_by = stop["signal"]
            at_log, at_eval = step % log_every == 0 or step == total, step % every_eval == 0 or step == total
            at_ckpt = step % every_ckpt == 0 or step == total or stopped_by
            if not (at_log or at_eval or at_ckpt):
                continue
            train_metrics = _drain(pending)
            now = time.perf_counter()
            train_seconds += now - last_sync
            timed_steps += train_metrics.pop("steps")
            bad_step = train_metrics.pop("first_bad_step")
            if bad_step is not None:
                raise _diverged("loss", bad_step, checkpoints)
            examples_per_sec = timed_steps * config.data.batch_size / max(train_seconds, 1e-9)
            record = {"step": step, "split": "train", **train_metrics,
                      "lr": float(optim.make_schedule(config.optimizer, total)(step - 1)),
                      "examples_per_sec": examples_per_sec}
            metrics_log.write(record)
            progress.update(step, {"loss": train_metrics["loss"]})
            if at_eval or at_ckpt:
                last_eval = evaluate_splits(run, evaluate_split, state)
                if not math.isfinite(last_eval["test_loss"]):  # finite losses, but the last update was not
                    raise _diverged("evaluation loss", step, checkpoints)
                for split in ("val", "test"):
                    if f"{split}_loss" in last_eval:
                        metrics_log.write({"step": step, "split": split, "loss": last_eval[f"{split}_loss"],
                                           "accuracy": last_eval[f"{split}_accuracy"]})
                shown = "  ".join(f"{split} accuracy {last_eval[f'{split}_accuracy']:.4f}"
                                  for split in ("val", "test") if f"{split}_accuracy" in last_eval)
                progress.log(f"step {step}/{total}  {shown}  test loss {last_eval['test_loss']:.4f}")
            if at_ckpt:
                checkpoints.save(step, state, {**meta_base, "position": dataclasses.asdict(batches.position)},
                                 last_eval)
            last_sync = time.perf_counter()
    checkpoints.wait()
    progress.close()
    if isinstance(metrics_log, Tee):
        metrics_log.close()
    if stopped_by:
        checkpoints.close()
        return {"run_dir": str(run_dir), "stopped": stopped_by, "step": step}
    result = _summary(run, run_dir, checkpoints, param_count, steps, train_seconds, timed_steps, start_step)
    checkpoints.close()
    _write_json_atomic(run_dir / RESULT_FILE, result)
    return result


def _diverged(what: str, step: int, checkpoints: ckpt.Checkpoints) -> RunError:
    checkpoints.wait()
    last = checkpoints.latest_step()
    kept = "no checkpoint was written" if last is None else f"the last good checkpoint (step {last}) is kept"
    return RunError(f"training diverged: the {what} is not finite at step {step}; {kept}. "
                    "Lower optimizer.learning_rate or set optimizer.clip_norm")


def _next_multiple(step: int, every: int) -> int:
    return (step // every + 1) * every


def _drain(pending: list) -> dict:
    """Mean train metrics over the steps since the last sync, and the first non-finite step."""
    losses, accuracies, first_bad, steps = [], [], None, 0
    for start, count, metrics in jax.device_get(pending):
        loss, accuracy = np.atleast_1d(metrics["loss"]), np.atleast_1d(metrics["accuracy"])
        bad = np.flatnonzero(~np.isfinite(loss))
        if first_bad is None and bad.size:
            first_bad = start + int(bad[0]) + 1
        losses.append(loss), accuracies.append(accuracy)
        steps += count
    pending.clear()
    return {"loss": float(np.mean(np.concatenate(losses))),
            "accuracy": float(np.mean(np.concatenate(accuracies))), "steps": steps,
            "first_bad_step": first_bad}


def _summary(run, run_dir, checkpoints, param_count, steps, train_seconds, timed_steps, start_step):
    config = run.config
    final_step = checkpoints.latest_step()
    best_step = checkpoints.best_step()
    final_meta = checkpoints.read_meta(final_step)
    best_meta = checkpoints.read_meta(best_step) if best_step is not None else None
    return {
        "run_dir": str(run_dir),
        "name": config.name,
        "model": config.model.name,
        "family": run.model.info.family,
        "dataset": run.spec.name,
        "seed": config.seed,
        "params": param_count,
        "steps": run.total_steps,
        "resumed_from": start_step,
        "final_step": final_step,
        "final": final_meta["metrics"],
        # The validation-best step (None without a validation split): test there is reported, not chosen on.
        "best_checkpoint": {"step": best_step, **best_meta["metrics"]} if best_meta else None,
        "best_accuracy": best_meta["metrics"]["test_accuracy"] if best_meta else None,
        "validation_size": run.spec.val_size,
        "compile_seconds": steps.compile_seconds,
        "train_seconds": train_seconds,
        "ms_per_step": 1000 * train_seconds / max(timed_steps, 1),
        "examples_per_sec": timed_steps * config.data.batch_size / max(train_seconds, 1e-9),
        "devices": jax.device_count(),
    }


def load_run_config(run_dir: str | Path) -> Config:
    """The config a run directory was trained with (from its checkpoint's stored copy)."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        return from_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"'{path}' cannot be read ({error}): is '{run_dir}' a zoo run directory?") from None
