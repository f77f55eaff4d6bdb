"""`fit(config, workdir)`: the one training loop. Resumes from the run directory's latest good step."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import secrets
import signal
import threading
import time
from pathlib import Path

import jax
import numpy as np

from zoo import checkpoint as ckpt
from zoo import distributed
from zoo import models
from zoo.config import Config, from_dict
from zoo import data as data_lib
from zoo.data import BatchIterator, DataSpec, Dataset, check_inputs, select_classes
from zoo.data.batching import Position
from zoo.data.pipeline import Rows
from zoo.errors import CheckpointError, ConfigError, DamagedCheckpointError, RunError, ZooError
from zoo.metrics import Discard, JsonlWriter, Progress, Silent, TensorBoardWriter, Tee
from zoo.training import optim, state as state_lib, step as step_lib
from zoo.util import atomic_write

CONFIG_FILE, METRICS_FILE, RESULT_FILE, LOCK_FILE = "config.json", "metrics.jsonl", "result.json", ".lock"
TOKEN_FILE = ".processes"  # process 0 writes a fresh token at each start; the others must read it
SHARED_WAIT_SECONDS = 5.0  # how long the others look for the token (network filesystems lag)


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
    stored_spec: DataSpec | None = None  # a run rebuilt from its checkpoint alone has no dataset

    @property
    def spec(self):
        return self.stored_spec or self.dataset.spec

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
    dataset = prepare_dataset(config, dataset)
    check_inputs(dataset.spec, dataset.x_train[:1])
    spec = dataset.spec
    if training and config.train.early_stopping.patience and not dataset.has_validation:
        raise ConfigError("train.early_stopping reads the validation split, and this run has none "
                          "(data.validation: 0): set data.validation, e.g. 0.1, or drop train.early_stopping")
    devices = jax.device_count()
    if training and config.data.batch_size % devices:
        raise ConfigError(f"data.batch_size {config.data.batch_size} does not split over {devices} devices: "
                          f"use a multiple of {devices}")
    if config.data.batch_size > spec.train_size:
        raise ConfigError(f"data.batch_size {config.data.batch_size} is larger than the {spec.train_size} "
                          f"training examples of '{spec.name}'")
    return assemble_run(config, spec, dataset)


def prepare_dataset(config: Config, dataset: Dataset | None = None) -> Dataset:
    """The config's data (or `dataset`): the classes it keeps, its validation split, normalisation."""
    dataset = select_classes(dataset or data_lib.load(config.data), config.data.classes)
    return data_lib.prepare(dataset, config.data)


def assemble_run(config: Config, spec: DataSpec, dataset: Dataset | None = None) -> Run:
    """Model, optimizer (frozen parameters included) and mesh for `spec`; the dataset may be absent
    (a run rebuilt from a checkpoint's stored spec to restore it)."""
    model = models.build(config.model.name, spec.num_classes, spec.vocab_size, **config.model.hparams)
    steps_per_epoch = max(spec.train_size // config.data.batch_size, 1)
    total_steps = config.total_steps(steps_per_epoch)
    tx = optim.with_frozen(optim.make_optimizer(config.optimizer, total_steps), config.freeze)
    tx = optim.accumulate(tx, config.train.accumulate)
    run = Run(config, dataset, model, tx, step_lib.make_mesh(), total_steps, steps_per_epoch,
              None if dataset is not None else spec)
    shapes = run.abstract_state()  # traces init: a model that cannot take this data fails here
    optim.check_patterns(shapes.params, config.freeze, "freeze")
    return run


def xla_options_of(run: Run) -> dict:
    """The XLA options the run's jitted functions compile with (recorded in checkpoint meta)."""
    return step_lib.compiler_options(run.config.train.deterministic, family=run.model.info.family,
                                     options=run.config.train.xla_options)


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


REPEAT_SECONDS = 1.0


@contextlib.contextmanager
def stop_requests():
    """Turns SIGTERM and Ctrl-C into a flag checked between steps (main thread only); a second
    signal acts at once (checkpoints are atomic, so that is safe too). A repeat within
    REPEAT_SECONDS is the same request delivered twice (a scheduler signals every process of a job,
    and a multi-process run's supervisor forwards it as well), not a second one."""
    requested = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    first = [0.0]

    def handler(signum, _frame):
        if requested["signal"] is None:
            requested["signal"], first[0] = signal.Signals(signum).name, time.monotonic()
        elif time.monotonic() - first[0] > REPEAT_SECONDS:
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# What may change when a run is continued: its length (the schedule is recomputed) and cadences.
CHANGEABLE = ("train.steps", "train.epochs", "train.log_every", "train.eval_every", "checkpoint.every",
              "train.xla_options")


def _check_same_config(run_dir: Path, config: Config) -> Config | None:
    """The config the run directory was trained with (None for a new run); refuses any change
    but those in CHANGEABLE."""
    path = run_dir / CONFIG_FILE
    if not path.exists():
        return None
    try:  # through from_dict: keys added to the schema since it was written take their defaults
        stored = from_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, ZooError):
        return None  # written atomically; an unreadable one is not ours to judge, the checkpoint's is
    keys = sorted(key for key in _diff_keys(stored.to_dict(), config.to_dict()) if key not in CHANGEABLE)
    if keys:
        raise RunError(f"run directory '{run_dir}' holds a run of another config (differs in "
                       f"{', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}; a run continues with "
                       f"only {', '.join(CHANGEABLE)} changed): use another --workdir")
    return stored


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
    atomic_write(path, json.dumps(data, indent=2))


def restore_latest_good(checkpoints: ckpt.Checkpoints, run: Run, progress: Progress):
    """The newest step that restores and verifies. Damaged newer steps are reported and set aside
    (a resumed run will write those step numbers again); if every step is damaged, refuses.

    With several processes, process 0's list of steps is the one tried; every process restores each
    step and a step damaged for any process is damaged for all, so all restore the same step."""
    damaged = []
    for step in reversed(distributed.broadcast_ints(checkpoints.listed_steps())):
        try:
            state, meta = checkpoints.restore(step, run.abstract_state())
            error = None
        except DamagedCheckpointError as raised:
            error = raised
        if distributed.any_true(error is not None):
            progress.log(f"skipping: {error or f'checkpoint step {step} is damaged (seen by another process)'}")
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


def auto_steps_per_call(family: str, backend: str | None = None) -> int:
    """Steps per call where the config leaves it open. On CPU only MLP steps are short enough to
    gain (XLA:CPU runs convolutions inside a scan ~20x slower); on GPU and TPU the zoo's small
    models are dispatch-bound whatever the family, and a scan costs nothing there."""
    if (backend or jax.default_backend()) == "cpu":
        return 10 if family == "dnn" else 1
    return 10


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

    def next(self, step: int):
        """(count, x, y) on the devices for the call starting at `step`."""
        ahead, self._ahead = self._ahead, None
        assert ahead is None or ahead[0] == step, "batches fetched ahead for another step"
        ahead = ahead or self._fetch(step)
        _, count, loaded, self.position = ahead
        if isinstance(loaded, Exception):
            raise loaded
        return (count, *loaded)


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
                                             c.train.label_smoothing, self.run.mesh, count,
                                             c.train.deterministic, c.train.xla_options)
            start = time.perf_counter()
            self._compiled[count] = jitted.lower(state, x, y).compile()
            self.compile_seconds += time.perf_counter() - start
        return self._compiled[count]


def fit(config: Config, workdir: str | Path, progress: Progress | None = None,
        dataset: Dataset | None = None) -> dict:
    """Trains `config` in `workdir` (resuming if it holds checkpoints); returns the run's summary."""
    progress = progress if progress is not None and distributed.is_primary() else Silent()  # process 0 reports
    run_dir = Path(workdir)
    # Bad input is refused before anything is written, by every process at once.
    run = distributed.agreed(lambda: build_run(config, dataset))
    stored = distributed.agreed(lambda: _check_same_config(run_dir, config))
    initial = None
    started = any(p.name.isdigit() for p in (run_dir / "checkpoints").glob("*"))
    if config.init_from.run and not started:  # a resumed fine-tune needs no source run any more
        from zoo.training import restore

        initial = distributed.agreed(lambda: restore.init_from(run, config.init_from))
    with claim_run_dir(run_dir):
        return _train(run, run_dir, progress, stored, initial, in_memory=_in_memory(config, dataset))


@contextlib.contextmanager
def claim_run_dir(run_dir: Path):
    """Process 0 creates the run directory and holds its lock for the run. With several processes it
    also leaves a fresh token there that every other process must read: a directory they do not
    share (disks local to each host) is refused by all in one line instead of hanging at a save."""
    if distributed.count() == 1:
        run_dir.mkdir(parents=True, exist_ok=True)
        with run_lock(run_dir):
            yield
        return
    token = distributed.broadcast_ints([secrets.randbits(62)])[0]
    with contextlib.ExitStack() as held:
        def claim():
            if distributed.is_primary():
                run_dir.mkdir(parents=True, exist_ok=True)
                held.enter_context(run_lock(run_dir))
                atomic_write(run_dir / TOKEN_FILE, str(token))

        distributed.agreed(claim)
        distributed.agreed(lambda: distributed.is_primary() or _see_token(run_dir, token))
        yield


def _see_token(run_dir: Path, token: int) -> bool:
    deadline = time.monotonic() + SHARED_WAIT_SECONDS
    while True:
        try:
            if (run_dir / TOKEN_FILE).read_text().strip() == str(token):
                return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RunError(f"run directory '{run_dir}' is not shared: process {distributed.index()} does not see "
                           "the token process 0 wrote there; give every process the same --workdir on a "
                           "filesystem they all mount (NFS, Lustre, GCS FUSE)")
        time.sleep(0.1)


def _in_memory(config: Config, dataset: Dataset | None) -> bool:
    """True when the data came from Python arrays that the run directory cannot reload by name."""
    if dataset is None:
        return False
    return (dataset.spec.source or {}).get("kind") != config.data.name  # arrays, or not what the config reads


def _train(run: Run, run_dir: Path, progress: Progress, stored: Config | None = None, initial=None,
           in_memory: bool = False) -> dict:
    config, spec, mesh = run.config, run.spec, run.mesh
    checkpoints = checkpoints_for(run_dir, config, has_validation=run.dataset.has_validation)
    start_step, state, meta = restore_latest_good(checkpoints, run, progress)
    if state is not None and start_step > run.total_steps:
        raise RunError(f"run directory '{run_dir}' is at step {start_step}, past the {run.total_steps} steps "
                       f"asked for: give train.steps above {start_step} to continue it")
    primary = distributed.is_primary()  # process 0 owns the bookkeeping files
    if primary:
        _write_json_once(run_dir / CONFIG_FILE, config.to_dict())
    metrics_log = JsonlWriter(run_dir / METRICS_FILE) if primary else Discard()
    if config.logging.tensorboard and primary:
        metrics_log = Tee(metrics_log, TensorBoardWriter(run_dir, config.to_dict()))
    position = Position()
    watch = EarlyStopping(config.train.early_stopping) if config.train.early_stopping.patience else None
    if state is None:
        state, start_step = run.init_state(), 0
        if initial is not None:
            state = initial(state)
            progress.log(f"initialised from {config.init_from.run} (step {config.init_from.step})")
    else:
        position = Position(**meta["position"])
        if watch:
            watch.load(meta.get("early_stopping"))
        progress.log(f"resuming from step {start_step}")
        previous = stored.total_steps(run.steps_per_epoch) if stored else run.total_steps
        if previous != run.total_steps:
            progress.log(f"continuing a {previous}-step run to {run.total_steps} steps: the learning-rate "
                         f"schedule is recomputed for {run.total_steps} steps from step {start_step} on")
        if watch and watch.stopped_at is not None:
            progress.log(f"this run stopped early at step {watch.stopped_at} ({watch.reason()}): "
                         "nothing more to train")
        if meta.get("devices", jax.device_count()) != jax.device_count():
            progress.log(f"note: step {start_step} was saved on {meta['devices']} devices, this run has "
                         f"{jax.device_count()}: results will differ from an uninterrupted run in the "
                         "last bits")
        if "xla_options" in meta and meta["xla_options"] != xla_options_of(run):
            progress.log(f"note: step {start_step} was saved with XLA options {meta['xla_options']}, this run "
                         f"compiles with {xla_options_of(run)}: results will differ from an uninterrupted run "
                         "in the last bits")
    metrics_log.truncate_after(start_step)
    workers = config.data.workers if config.data.workers is not None else data_lib.default_workers(run.dataset.x_train)
    batches = BatchIterator(run.dataset.x_train, run.dataset.y_train, config.data.batch_size, config.seed,
                            shift=config.data.shift, position=position, workers=workers,
                            rows=Rows.of_jax_processes())
    eval_bs = -(-config.data.eval_batch_size // jax.device_count()) * jax.device_count()
    eval_step = step_lib.jit_eval_step(run.model, spec.num_classes, mesh, config.train.deterministic,
                                       config.train.xla_options)
    evaluate_split = lambda s, x, y: step_lib.evaluate_arrays(  # noqa: E731
        eval_step, mesh, s.params, s.model_state, x, y, eval_bs)
    steps = _Steps(run)
    param_count = models.count_params(state.params)
    meta_base = {"config": config.to_dict(), "spec": spec.to_json(), "model": config.model.name,
                 "family": run.model.info.family, "param_count": param_count, "devices": jax.device_count(),
                 "in_memory": in_memory, "platform": jax.default_backend(),
                 "xla_options": xla_options_of(run)}
    every_ckpt, every_eval = config.checkpoint.every, config.train.eval_every or config.checkpoint.every
    log_every, total = config.train.log_every, run.total_steps

    def call_size(step: int) -> int:  # K steps per call, unless a log, eval or checkpoint comes first
        next_event = min(total, _next_multiple(step, log_every), _next_multiple(step, every_eval),
                         _next_multiple(step, every_ckpt))
        return steps.k if next_event - step >= steps.k else 1

    def put(x, y, count: int):
        check_inputs(spec, x[0] if count > 1 else x)
        leading = 1 if count > 1 else 0
        return _put_rows(mesh, x, leading), _put_rows(mesh, y, leading)

    feed = DevicePrefetch(batches, call_size, put)
    pending, timed_steps, train_seconds = [], 0, 0.0
    step, last_sync = start_step, time.perf_counter()
    last_eval = None
    stopped_by = None
    progress.start(total, start_step)
    with stop_requests() as stop:
        while step < total and not stopped_by and not (watch and watch.stopped_at is not None):
            count, xd, yd = feed.next(step)
            compile_before = steps.compile_seconds
            compiled = steps.get(count, state, xd, yd)
            last_sync += steps.compile_seconds - compile_before  # compile time is reported apart
            state, metrics = compiled(state, xd, yd)
            pending.append((step, count, metrics))
            step += count
            if step < total:
                feed.fetch_ahead(step)  # while the step just dispatched runs
            stopped_by = _agreed_stop(stop["signal"])  # every process saves the same step
            at_log, at_eval = step % log_every == 0 or step == total, step % every_eval == 0 or step == total
            at_ckpt = step % every_ckpt == 0 or step == total or stopped_by
            if not (at_log or at_eval or at_ckpt):
                if progress.due():  # off a terminal: a line at least every 30 s between log steps
                    _progress_between(progress, pending, step, total, timed_steps,
                                      train_seconds + time.perf_counter() - last_sync, config.data.batch_size)
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
            progress.update(step, {"loss": train_metrics["loss"]}, examples_per_sec=examples_per_sec,
                            eta_seconds=(total - step) * train_seconds / max(timed_steps, 1))
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
                if watch and watch.observe(step, last_eval):
                    progress.log(f"stopping early at step {step}: {watch.reason()}")
                    at_ckpt = True
            if at_ckpt:
                extra = {"early_stopping": watch.state()} if watch else {}
                checkpoints.save(step, state, {**meta_base, "position": dataclasses.asdict(feed.position),
                                               **extra}, last_eval)
            last_sync = time.perf_counter()
    batches.close()
    checkpoints.wait()
    progress.close()
    if isinstance(metrics_log, Tee):
        metrics_log.close()
    if stopped_by:
        checkpoints.close()
        return {"run_dir": str(run_dir), "stopped": stopped_by, "step": step}
    distributed.barrier("fit:saved")  # process 0's last commit is on disk for every process
    if primary:
        result = _summary(run, run_dir, checkpoints, param_count, steps, train_seconds, timed_steps, start_step)
        result["early_stopped"] = ({"step": watch.stopped_at, "best_step": watch.best_step,
                                    "reason": watch.reason()} if watch and watch.stopped_at is not None else None)
        result["in_memory"] = in_memory
    checkpoints.close()
    if primary:
        atomic_write(run_dir / RESULT_FILE, json.dumps(result, indent=2))
    distributed.barrier("fit:result")
    if not primary:  # the same summary on every process: the one process 0 wrote
        result = json.loads((run_dir / RESULT_FILE).read_text())
    return result


def _agreed_stop(requested: str | None) -> str | None:
    """The stop request of the lowest process that has one (a signal's name), on every process."""
    if distributed.count() == 1:
        return requested
    number = distributed.first_signal(signal.Signals[requested].value if requested else 0)
    return signal.Signals(number).name if number else None


def _put_rows(mesh, rows: np.ndarray, leading: int):
    """Places this process's rows of a global batch (the pipeline reads only those) on the mesh."""
    if jax.process_count() == 1:
        return step_lib.put_batch(mesh, rows, leading)
    return step_lib.put_local_rows(mesh, rows, leading)


class EarlyStopping:
    """Stops when the validation metric has not improved by more than `min_delta` for `patience`
    evaluations in a row. Its state is saved in every checkpoint, so a resumed run stops where an
    uninterrupted one would."""

    def __init__(self, cfg):
        self.metric, self.patience, self.min_delta = f"val_{cfg.metric}", cfg.patience, cfg.min_delta
        self.sign = 1.0 if cfg.metric == "accuracy" else -1.0  # higher is better for accuracy
        self.best, self.best_step, self.bad_evals, self.stopped_at = None, None, 0, None

    def load(self, saved: dict | None) -> None:
        for key, value in (saved or {}).items():
            setattr(self, key, value)

    def state(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals,
                "stopped_at": self.stopped_at}

    def observe(self, step: int, metrics: dict) -> bool:
        """Records one evaluation; True when training should stop now."""
        value = float(metrics[self.metric])
        if self.best is None or self.sign * (value - self.best) > self.min_delta:
            self.best, self.best_step, self.bad_evals = value, step, 0
        else:
            self.bad_evals += 1
        if self.bad_evals >= self.patience:
            self.stopped_at = step
        return self.stopped_at is not None

    def reason(self) -> str:
        return (f"{self.metric} did not improve by more than {self.min_delta:g} in {self.patience} "
                f"evaluations (best {self.best:.4f} at step {self.best_step})")


def _diverged(what: str, step: int, checkpoints: ckpt.Checkpoints) -> RunError:
    checkpoints.wait()
    last = checkpoints.latest_step()
    kept = "no checkpoint was written" if last is None else f"the last good checkpoint (step {last}) is kept"
    return RunError(f"training diverged: the {what} is not finite at step {step}; {kept}. "
                    "Lower optimizer.learning_rate or set optimizer.clip_norm")


def _progress_between(progress, pending, step, total, timed_steps, seconds, batch_size) -> None:
    """A progress update from the steps since the last log step, read without consuming them (the
    logged metrics stay the same whenever this runs)."""
    done = timed_steps + sum(count for _, count, _ in pending)
    losses = np.concatenate([np.atleast_1d(m["loss"]) for _, _, m in jax.device_get(pending)]) if pending else []
    metrics = {"loss": float(np.mean(losses))} if len(losses) else None
    progress.update(step, metrics, examples_per_sec=done * batch_size / max(seconds, 1e-9),
                    eta_seconds=(total - step) * seconds / max(done, 1))


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
        "platform": jax.default_backend(),
        "xla_options": xla_options_of(run),
    }


def load_run_config(run_dir: str | Path) -> Config:
    """The config a run directory was trained with (from its checkpoint's stored copy)."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        return from_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"'{path}' cannot be read ({error}): is '{run_dir}' a zoo run directory?") from None
