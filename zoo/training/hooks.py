"""What happens between training steps, one hook each: the logger (train metrics, progress,
divergence), the evaluation (validation and test metrics, early stopping) and the checkpointer.

The loop (`zoo.training.loop`) yields a `StepEnd` after every jitted call and runs the hooks that are
due; a hook decides its own timing from its `every`. At a step where any hook is due the logger
runs first (it is the sync point that turns the pending device metrics into numbers), the
evaluation runs at its own steps and at every checkpoint (a checkpoint records metrics), and the
checkpointer saves at its steps, at the end, on a stop request and when early stopping ends the run.
Stop requests (SIGTERM, Ctrl-C) are turned into a flag here too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time

import jax
import numpy as np

from zoo import checkpoint as ckpt
from zoo import distributed
from zoo.errors import RunError
from zoo.training import optim

REPEAT_SECONDS = 1.0
SPLITS = ("val", "test", "raw_val", "raw_test")  # the evaluated splits, as metrics.jsonl names them


@dataclasses.dataclass
class StepEnd:
    """Where training stands after one jitted call: what the hooks read and what they decide."""

    step: int  # steps done
    total: int
    state: object
    stop: str | None = None  # the signal name of an agreed stop request
    eval_metrics: dict | None = None  # set by the evaluation hook when it ran at this step
    early_stop: bool = False  # set by the evaluation hook: early stopping ends the run here

    @property
    def final(self) -> bool:
        return self.step >= self.total


def next_multiple(step: int, every: int) -> int:
    return (step // every + 1) * every


class Hook:
    """Runs every `every` steps and at the end of the run."""

    every: int

    def due(self, end: StepEnd) -> bool:
        return end.step % self.every == 0 or end.final

    def __call__(self, end: StepEnd) -> None:
        raise NotImplementedError


class TrainLogger(Hook):
    """The task's train metrics (loss and accuracy for classify; means over the steps since the last
    sync), learning rate and throughput to the metrics log and the progress display; refuses a
    non-finite loss."""

    def __init__(self, every: int, metrics_log, progress, schedule, batch_size: int, checkpoints,
                 names: tuple = ("loss", "accuracy")):
        self.every, self.metrics_log, self.progress = every, metrics_log, progress
        self.schedule, self.batch_size, self.checkpoints = schedule, batch_size, checkpoints
        self.names = names  # the task's train metrics, in the order they are logged
        self.pending = []  # (first step, steps, device metrics) of the calls since the last sync
        self.timed_steps, self.train_seconds = 0, 0.0
        self.last_sync = time.perf_counter()

    def add(self, step: int, count: int, metrics, compile_seconds: float = 0.0) -> None:
        self.pending.append((step, count, metrics))
        self.last_sync += compile_seconds  # compile time is reported apart

    def seconds_so_far(self) -> float:
        return self.train_seconds + time.perf_counter() - self.last_sync

    def examples_per_sec(self) -> float:
        return self.timed_steps * self.batch_size / max(self.train_seconds, 1e-9)

    def between(self, end: StepEnd) -> None:
        """A progress update between log steps (off a terminal at least every 30 s), read without
        consuming the pending metrics: the logged metrics stay the same whenever this runs."""
        if not self.progress.due():
            return
        seconds = self.seconds_so_far()
        done = self.timed_steps + sum(count for _, count, _ in self.pending)
        losses = (np.concatenate([np.atleast_1d(m["loss"]) for _, _, m in jax.device_get(self.pending)])
                  if self.pending else [])
        self.progress.update(end.step, {"loss": float(np.mean(losses))} if len(losses) else None,
                             examples_per_sec=done * self.batch_size / max(seconds, 1e-9),
                             eta_seconds=(end.total - end.step) * seconds / max(done, 1))

    def __call__(self, end: StepEnd) -> None:
        metrics = drain(self.pending, self.names)
        now = time.perf_counter()
        self.train_seconds += now - self.last_sync
        self.timed_steps += metrics.pop("steps")
        bad_step = metrics.pop("first_bad_step")
        if bad_step is not None:
            raise diverged("loss", bad_step, self.checkpoints)
        rate = self.examples_per_sec()
        self.metrics_log.write({"step": end.step, "split": "train", **metrics,
                                "lr": float(self.schedule(end.step - 1)), "examples_per_sec": rate})
        self.progress.update(end.step, {"loss": metrics["loss"]}, examples_per_sec=rate,
                             eta_seconds=(end.total - end.step) * self.train_seconds / max(self.timed_steps, 1))

    def resync(self) -> None:
        """Starts the next timing interval (after the other hooks ran: their time is not training)."""
        self.last_sync = time.perf_counter()


class Evaluation(Hook):
    """Validation and test metrics of the current state (`setup.Evaluator`: the task's metrics), to the
    metrics log and the progress display (the task's main metric); owns early stopping. Runs at its
    own steps and at every checkpoint."""

    def __init__(self, every: int, checkpoint_every: int, evaluator, metrics_log, progress, checkpoints,
                 early_stopping: EarlyStopping | None):
        self.every, self.checkpoint_every, self.evaluator = every, checkpoint_every, evaluator
        self.metrics_log, self.progress, self.checkpoints = metrics_log, progress, checkpoints
        self.early_stopping = early_stopping
        self.last = None  # the metrics of the latest evaluation

    def due(self, end: StepEnd) -> bool:
        return super().due(end) or end.step % self.checkpoint_every == 0 or end.stop is not None

    def __call__(self, end: StepEnd) -> None:
        metrics = self.evaluator.splits(end.state)
        if not math.isfinite(metrics["test_loss"]):  # finite losses, but the last update was not
            raise diverged("evaluation loss", end.step, self.checkpoints)
        task = self.evaluator.task
        for split in SPLITS:  # raw_*: the raw weights of a run that evaluates its moving average (train.ema)
            if f"{split}_loss" in metrics:
                self.metrics_log.write({"step": end.step, "split": split,
                                        **{name: metrics[f"{split}_{name}"] for name in task.metrics}})
        main = task.main().name
        shown = "  ".join(f"{split} {main} {metrics[f'{split}_{main}']:.4f}"
                          for split in SPLITS if f"{split}_{main}" in metrics)
        self.progress.log(f"step {end.step}/{end.total}  {shown}  test loss {metrics['test_loss']:.4f}")
        self.last = end.eval_metrics = metrics
        if self.early_stopping and self.early_stopping.observe(end.step, metrics):
            self.progress.log(f"stopping early at step {end.step}: {self.early_stopping.reason()}")
            end.early_stop = True


class Checkpointer(Hook):
    """Saves the train state with the run's metadata, the data position and the latest evaluation."""

    def __init__(self, every: int, checkpoints: ckpt.Checkpoints, meta: dict, position, evaluation: Evaluation):
        self.every, self.checkpoints, self.meta = every, checkpoints, meta
        self.position, self.evaluation = position, evaluation  # position(): the data position to save

    def due(self, end: StepEnd) -> bool:
        return super().due(end) or end.stop is not None or end.early_stop

    def __call__(self, end: StepEnd) -> None:
        watch = self.evaluation.early_stopping
        extra = {"early_stopping": watch.state()} if watch else {}
        self.checkpoints.save(end.step, end.state, {**self.meta, "position": self.position(), **extra},
                              self.evaluation.last)


class EarlyStopping:
    """Stops when the validation metric has not improved by more than `min_delta` for `patience`
    evaluations in a row. Its state is saved in every checkpoint, so a resumed run stops where an
    uninterrupted one would."""

    def __init__(self, cfg):
        self.metric, self.patience, self.min_delta = f"val_{cfg.metric}", cfg.patience, cfg.min_delta
        self.sign = 1.0 if cfg.metric == "accuracy" else -1.0  # higher is better for accuracy; loss: lower
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


def make_hooks(setup, evaluator, checkpoints, metrics_log, progress, meta: dict, position,
               early_stopping: EarlyStopping | None) -> tuple[TrainLogger, list[Hook]]:
    """The logger and the hooks in the order they run, from the run's config."""
    config = setup.config
    every_checkpoint = config.checkpoint.every
    logger = TrainLogger(config.train.log_every, metrics_log, progress,
                         optim.make_schedule(config.optimizer, setup.total_steps), config.data.batch_size,
                         checkpoints, evaluator.task.train_metrics)
    evaluation = Evaluation(config.train.eval_every or every_checkpoint, every_checkpoint, evaluator,
                            metrics_log, progress, checkpoints, early_stopping)
    return logger, [logger, evaluation, Checkpointer(every_checkpoint, checkpoints, meta, position, evaluation)]


def run_due(hooks: list[Hook], end: StepEnd) -> bool:
    """Runs the hooks due at `end` (the logger first, whenever any is due); False when none was."""
    logger, *others = hooks
    if not any(hook.due(end) for hook in hooks):
        logger.between(end)
        return False
    logger(end)
    for hook in others:
        if hook.due(end):  # the checkpointer reads what the evaluation decided at this step
            hook(end)
    logger.resync()
    return True


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


def agreed_stop(requested: str | None) -> str | None:
    """The stop request of the lowest process that has one (a signal's name), on every process."""
    if distributed.count() == 1:
        return requested
    number = distributed.first_signal(signal.Signals[requested].value if requested else 0)
    return signal.Signals(number).name if number else None


def diverged(what: str, step: int, checkpoints: ckpt.Checkpoints) -> RunError:
    checkpoints.wait()
    last = checkpoints.latest_step()
    kept = "no checkpoint was written" if last is None else f"the last good checkpoint (step {last}) is kept"
    return RunError(f"training diverged: the {what} is not finite at step {step}; {kept}. "
                    "Lower optimizer.learning_rate or set optimizer.clip_norm")


def drain(pending: list, names: tuple = ("loss", "accuracy")) -> dict:
    """Mean train metrics (`names`, in that order) over the steps since the last sync, and the first
    non-finite step."""
    values, first_bad, steps = {name: [] for name in names}, None, 0
    for start, count, metrics in jax.device_get(pending):
        bad = np.flatnonzero(~np.isfinite(np.atleast_1d(metrics["loss"])))
        if first_bad is None and bad.size:
            first_bad = start + int(bad[0]) + 1
        for name in names:
            values[name].append(np.atleast_1d(metrics[name]))
        steps += count
    pending.clear()
    return {**{name: float(np.mean(np.concatenate(parts))) for name, parts in values.items()}, "steps": steps,
            "first_bad_step": first_bad}
