"""`fit(config, workdir)`: the one training loop, resuming from the run directory's latest good step.

The loop itself only steps: `_train_steps` runs the jitted step over the data and yields a
`hooks.StepEnd` after every call; everything periodic (logging, evaluation and early stopping,
checkpoints) is a hook in `zoo.training.hooks`, run where it is due."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np

from zoo import distributed
from zoo import models
from zoo import rundir
from zoo.config import Config
from zoo import data as data_lib
from zoo.data import BatchIterator, Dataset, check_inputs
from zoo.data.batching import Position
from zoo.data.pipeline import Rows
from zoo.errors import RunError
from zoo.metrics import Discard, JsonlWriter, Progress, Silent, TensorBoardWriter, Tee
from zoo.rundir import CONFIG_FILE, METRICS_FILE, RESULT_FILE
from zoo.training import hooks as hooks_lib, step as step_lib
from zoo.training.restore import init_from, restore_latest_good
from zoo.training.setup import (Evaluator, RunSetup, auto_steps_per_call, build_setup, checkpoints_for,
                                xla_options_of)
from zoo.util import atomic_write


class DevicePrefetch:
    """Each call's batches, gathered and put on the mesh one call ahead: the host work and the
    transfer overlap the step already dispatched. `position` is the data position after the batches
    handed out, not after those fetched ahead: the one a checkpoint must save to resume exactly."""

    def __init__(self, batches, call_size, put):
        self._batches, self._call_size, self._put = batches, call_size, put
        self.position = dataclasses.replace(batches.position)
        self._ahead = None  # (step, count, device batches or the error raised fetching them, position)

    def _fetch(self, step: int):
        count = self._call_size(step)
        try:
            x, y = next(self._batches) if count == 1 else self._batches.take(count)
            loaded = self._put(x, y, count)
        except Exception as error:  # noqa: BLE001 - raised when that batch is consumed, not before
            loaded = error
        return step, count, loaded, dataclasses.replace(self._batches.position)

    def fetch_ahead(self, step: int) -> None:
        """Starts loading the batches of the call that will start at `step`."""
        self._ahead = self._fetch(step)

    def close(self) -> None:
        self._batches.close()

    def next(self, step: int):
        """(count, x, y) on the devices for the call starting at `step`."""
        ahead, self._ahead = self._ahead, None
        assert ahead is None or ahead[0] == step, "batches fetched ahead for another step"
        ahead = ahead or self._fetch(step)
        _, count, loaded, self.position = ahead
        if isinstance(loaded, Exception):
            raise loaded
        return (count, *loaded)


class CompiledSteps:
    """Compiles the train step ahead of time (timed) for 1 and K steps per call."""

    def __init__(self, run: RunSetup):
        c = run.config
        self.run, self.k = run, c.train.steps_per_call or auto_steps_per_call(run.model.info.family)
        self.compile_seconds = 0.0
        self._compiled = {}

    def get(self, count: int, state, x, y):
        if count not in self._compiled:
            c = self.run.config
            jitted = step_lib.jit_train_step(self.run.model, self.run.tx, self.run.task, 0.0, self.run.mesh, count,
                                             c.train.deterministic, c.train.xla_options, c.data.augment, c.train.ema)
            start = time.perf_counter()
            self._compiled[count] = jitted.lower(state, x, y).compile()
            self.compile_seconds += time.perf_counter() - start
        return self._compiled[count]


def fit(config: Config | str | Path | dict, workdir: str | Path, progress: Progress | None = None,
        dataset: Dataset | None = None) -> dict:
    """Trains `config` (a Config, the path of a YAML config or a dict of its keys) in `workdir` (resuming
    if it holds checkpoints); returns the run's summary."""
    from zoo.config import as_config

    config = as_config(config, where="zoo.fit")
    progress = progress if progress is not None and distributed.is_primary() else Silent()  # process 0 reports
    run_dir = Path(workdir)
    # Bad input is refused before anything is written, by every process at once.
    setup = distributed.agreed(lambda: build_setup(config, dataset))
    stored = distributed.agreed(lambda: rundir.check_same_config(run_dir, config))
    initial = None
    if config.init_from.run and not rundir.has_started(run_dir):  # a resumed fine-tune needs no source run
        initial = distributed.agreed(lambda: init_from(setup, config.init_from))
    with rundir.claim_run_dir(run_dir):
        return _train(setup, run_dir, progress, stored, initial, in_memory=_in_memory(config, dataset))


def _in_memory(config: Config, dataset: Dataset | None) -> bool:
    """True when the data came from Python arrays that the run directory cannot reload by name."""
    if dataset is None:
        return False
    return (dataset.spec.source or {}).get("kind") != config.data.name  # arrays, or not what the config reads


@dataclasses.dataclass
class _Start:
    """Where a run starts: step 0 with a fresh (or fine-tuned) state, or a restored checkpoint."""

    step: int
    state: object
    position: Position
    early_stopping: hooks_lib.EarlyStopping | None


def _start(setup: RunSetup, checkpoints, run_dir: Path, progress, stored: Config | None, initial,
           fresh=None) -> _Start:
    """`fresh()` makes the state of a run that starts from nothing (default: `setup.init_state`)."""
    config = setup.config
    step, state, meta = restore_latest_good(checkpoints, setup, progress)
    if state is not None and step > setup.total_steps:
        raise RunError(f"run directory '{run_dir}' is at step {step}, past the {setup.total_steps} steps "
                       f"asked for: give train.steps above {step} to continue it")
    watch = hooks_lib.EarlyStopping(config.train.early_stopping) if config.train.early_stopping.patience else None
    if state is None:
        state = fresh() if fresh is not None else setup.init_state()
        if initial is not None:
            state = initial(state)
            progress.log(f"initialised from {config.init_from.run} (step {config.init_from.step})")
        return _Start(0, state, Position(), watch)
    if watch:
        watch.load(meta.get("early_stopping"))
    _report_resume(setup, progress, stored, step, meta, watch)
    return _Start(step, state, Position(**meta["position"]), watch)


def _report_resume(setup: RunSetup, progress, stored: Config | None, step: int, meta: dict, watch) -> None:
    """What a resumed run tells: where it resumes, and what will differ from an uninterrupted run."""
    progress.log(f"resuming from step {step}")
    total = setup.total_steps
    previous = stored.total_steps(setup.steps_per_epoch) if stored else total
    if previous != total:
        progress.log(f"continuing a {previous}-step run to {total} steps: the learning-rate "
                     f"schedule is recomputed for {total} steps from step {step} on")
    if watch and watch.stopped_at is not None:
        progress.log(f"this run stopped early at step {watch.stopped_at} ({watch.reason()}): "
                     "nothing more to train")
    if meta.get("devices", jax.device_count()) != jax.device_count():
        progress.log(f"note: step {step} was saved on {meta['devices']} devices, this run has "
                     f"{jax.device_count()}: results will differ from an uninterrupted run in the last bits")
    if "xla_options" in meta and meta["xla_options"] != xla_options_of(setup):
        progress.log(f"note: step {step} was saved with XLA options {meta['xla_options']}, this run "
                     f"compiles with {xla_options_of(setup)}: results will differ from an uninterrupted run "
                     "in the last bits")


def _metrics_log(setup: RunSetup, run_dir: Path, start_step: int, stored: Config | None, progress: Progress):
    """The metrics log (process 0 owns it; TensorBoard beside it when asked), cut back to `start_step`,
    and the run's config.json. A writer that can refuse (TensorBoard without tensorboardX) is made
    first: a refused run leaves the files of the directory's earlier run as they were."""
    config = setup.config
    if not distributed.is_primary():
        return Discard()
    tensorboard = (TensorBoardWriter(run_dir, config.to_dict(), setup.task.main().name) if config.logging.tensorboard
                   else None)
    replaced = rundir.write_json_once(run_dir / CONFIG_FILE, config.to_dict())
    if replaced and stored is None and start_step == 0:  # check_same_config let another config start over
        progress.log(f"run directory '{run_dir}' holds no checkpoint of its earlier config: starting over "
                     "with this one")
    metrics_log = JsonlWriter(run_dir / METRICS_FILE, warn=progress.log)
    if tensorboard is not None:
        metrics_log = Tee(metrics_log, tensorboard)
    metrics_log.truncate_after(start_step)
    return metrics_log


def _feed(setup: RunSetup, position: Position, hooks: list, steps: CompiledSteps) -> DevicePrefetch:
    """The training batches, put on the mesh one call ahead, K steps per call unless a hook is due first."""
    spec, mesh = setup.spec, setup.mesh
    batches = train_batches(setup, position)

    def call_size(step: int) -> int:
        return steps_in_call(step, setup.total_steps, hooks, steps.k)

    def put(x, y, count: int):
        check_inputs(spec, x[0] if count > 1 else x)
        leading = 1 if count > 1 else 0
        return _put_rows(mesh, x, leading), _put_rows(mesh, y, leading)

    return DevicePrefetch(batches, call_size, put)


def train_batches(setup: RunSetup, position: Position) -> BatchIterator:
    """The run's training batches in the order its seed fixes, from `position` on (this process's rows)."""
    config = setup.config
    workers = (config.data.workers if config.data.workers is not None
               else data_lib.default_workers(setup.dataset.x_train))
    return BatchIterator(setup.dataset.x_train, setup.dataset.y_train, config.data.batch_size, config.seed,
                         position=position, workers=workers, rows=Rows.of_jax_processes())


def steps_in_call(step: int, total: int, hooks: list, k: int) -> int:
    """K steps in the call starting at `step`, unless a hook is due (or the run ends) sooner: then 1."""
    next_event = min(total, *(hooks_lib.next_multiple(step, hook.every) for hook in hooks))
    return k if next_event - step >= k else 1


def _train_steps(state, start_step: int, total: int, feed: DevicePrefetch, steps: CompiledSteps, logger,
                 stop: dict):
    """The step generator: runs the jitted step call after call and yields a `StepEnd` after each."""
    step = start_step
    while step < total:
        count, xd, yd = feed.next(step)
        compile_before = steps.compile_seconds
        compiled = steps.get(count, state, xd, yd)
        state, metrics = compiled(state, xd, yd)
        logger.add(step, count, metrics, steps.compile_seconds - compile_before)
        step += count
        if step < total:
            feed.fetch_ahead(step)  # while the step just dispatched runs
        yield hooks_lib.StepEnd(step, total, state, stop=hooks_lib.agreed_stop(stop["signal"]))


def _train(setup: RunSetup, run_dir: Path, progress: Progress, stored: Config | None = None, initial=None,
           in_memory: bool = False) -> dict:
    config = setup.config
    checkpoints = checkpoints_for(run_dir, config, has_validation=setup.dataset.has_validation)
    start = _start(setup, checkpoints, run_dir, progress, stored, initial)
    metrics_log = _metrics_log(setup, run_dir, start.step, stored, progress)
    steps = CompiledSteps(setup)
    param_count = models.count_params(start.state.params)
    meta = run_meta(setup, param_count, in_memory)
    feed = None
    logger, hooks = hooks_lib.make_hooks(setup, Evaluator(setup), checkpoints, metrics_log, progress, meta,
                                         lambda: dataclasses.asdict(feed.position), start.early_stopping)
    feed = _feed(setup, start.position, hooks, steps)
    watch, end = start.early_stopping, None
    progress.start(setup.total_steps, start.step)
    if not (watch and watch.stopped_at is not None):
        with hooks_lib.stop_requests() as stop:
            for end in _train_steps(start.state, start.step, setup.total_steps, feed, steps, logger, stop):
                hooks_lib.run_due(hooks, end)
                if end.stop or end.early_stop:
                    break
    feed.close()
    checkpoints.wait()
    progress.close()
    if isinstance(metrics_log, Tee):
        metrics_log.close()
    if end is not None and end.stop:
        checkpoints.close()
        return {"run_dir": str(run_dir), "stopped": end.stop, "step": end.step}
    return _finish(setup, run_dir, checkpoints, param_count, steps, logger, start.step, watch, in_memory)


def run_meta(setup: RunSetup, param_count: int, in_memory: bool) -> dict:
    """What every checkpoint of the run records besides its state, position and metrics."""
    config = setup.config
    return {"config": config.to_dict(), "spec": setup.spec.to_json(), "model": config.model.name,
            "family": setup.model.info.family, "param_count": param_count, "devices": jax.device_count(),
            "in_memory": in_memory, "platform": jax.default_backend(), "xla_options": xla_options_of(setup)}


def _finish(setup, run_dir, checkpoints, param_count, steps, logger, start_step, watch, in_memory,
            extra: dict | None = None) -> dict:
    """Writes result.json (process 0) once every process's last save is on disk; the summary (with
    `extra`'s keys: a population member's)."""
    primary = distributed.is_primary()
    distributed.barrier("fit:saved")  # process 0's last commit is on disk for every process
    if primary:
        result = _summary(setup, run_dir, checkpoints, param_count, steps, logger.train_seconds,
                          logger.timed_steps, start_step)
        result["early_stopped"] = ({"step": watch.stopped_at, "best_step": watch.best_step,
                                    "reason": watch.reason()} if watch and watch.stopped_at is not None else None)
        result["in_memory"] = in_memory
        result.update(extra or {})
    checkpoints.close()
    if primary:
        atomic_write(run_dir / RESULT_FILE, json.dumps(result, indent=2))
    distributed.barrier("fit:result")
    if not primary:  # the same summary on every process: the one process 0 wrote
        result = json.loads((run_dir / RESULT_FILE).read_text())
    return result


def _put_rows(mesh, rows: np.ndarray, leading: int):
    """Places this process's rows of a global batch (the pipeline reads only those) on the mesh."""
    if jax.process_count() == 1:
        return step_lib.put_batch(mesh, rows, leading)
    return step_lib.put_local_rows(mesh, rows, leading)


def _summary(setup, run_dir, checkpoints, param_count, steps, train_seconds, timed_steps, start_step):
    config, main = setup.config, setup.task.main().name  # best_accuracy for classify
    final_step = checkpoints.latest_step()
    best_step = checkpoints.best_step()
    final_meta = checkpoints.read_meta(final_step)
    best_meta = checkpoints.read_meta(best_step) if best_step is not None else None
    return {
        "run_dir": str(run_dir),
        "name": config.name,
        "model": config.model.name,
        "family": setup.model.info.family,
        "dataset": setup.spec.name,
        "seed": config.seed,
        "params": param_count,
        "steps": setup.total_steps,
        "resumed_from": start_step,
        "final_step": final_step,
        "final": final_meta["metrics"],
        # The validation-best step (None without a validation split): test there is reported, not chosen on.
        "best_checkpoint": {"step": best_step, **best_meta["metrics"]} if best_meta else None,
        f"best_{main}": best_meta["metrics"][f"test_{main}"] if best_meta else None,
        "validation_size": setup.spec.val_size,
        "compile_seconds": steps.compile_seconds,
        "train_seconds": train_seconds,
        "ms_per_step": 1000 * train_seconds / max(timed_steps, 1),
        "examples_per_sec": timed_steps * config.data.batch_size / max(train_seconds, 1e-9),
        "devices": jax.device_count(),
        "platform": jax.default_backend(),
        "xla_options": xla_options_of(setup),
    }


