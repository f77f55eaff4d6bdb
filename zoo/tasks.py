"""What a run learns: `task: classify | regress | lm`. A task owns its loss, the metrics of a
training batch, the sums that reduce an evaluation split (padding masked) and the split's metrics
made from them, its selection metric (checkpoints, early stopping, sweeps), what prediction returns
and the metric columns of reports. The train step, the one evaluator, the hooks, reports, `zoo runs`,
predict and export ask the task; none of them names a metric itself.

A task object is built for one run (`for_run`): the class count, label smoothing, the target scaling
of a regression. Its class (`describe(name)`) holds what needs no run: names, selection, columns.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zoo.errors import ConfigError

TASKS = ("classify", "regress", "lm")
DEFAULT = "classify"
HUBER_DELTA = 1.0  # in standard deviations of the target (targets are standardised)
# train.loss per task: zoo.config.TASK_LOSSES (checked when a config is read)


@dataclasses.dataclass(frozen=True)
class Metric:
    """A metric a report shows: its key in the split metrics, which way is better, its title."""

    name: str
    mode: str  # "max" or "min"
    title: str  # in table headers: "final test acc"
    long: str = ""  # in sentences and axis labels: "accuracy" (default: the title)

    @property
    def words(self) -> str:
        return self.long or self.title


class Task:
    """The interface every task implements; class attributes describe it without a run."""

    name: str = ""
    metrics: tuple[str, ...] = ()  # what `finish` returns, in this order (metrics.jsonl, checkpoints)
    train_metrics: tuple[str, ...] = ()  # what `batch_metrics` returns, in this order
    selection: tuple[str, str] = ("loss", "min")  # the default validation metric that picks steps
    report: tuple[Metric, ...] = ()  # the report's metric columns; the first ranks the models
    outputs: str = ""  # what predict and export return

    @classmethod
    def main(cls) -> Metric:
        return cls.report[0]

    @classmethod
    def mode(cls, metric: str) -> str:
        """'max' when higher is better for `metric` (a split metric name, without val_/test_)."""
        return next((m.mode for m in cls.report if m.name == metric), "max" if metric == "accuracy" else "min")

    def loss(self, outputs, targets):
        """Per-example loss [B], float32: what training minimises (its mean over the batch)."""
        raise NotImplementedError

    def batch_metrics(self, outputs, targets, loss=None) -> dict:
        """The means over one training batch logged as train metrics; `loss`, when given, is the batch's
        mean loss already computed by the step (so the logged loss is the optimised one, to the bit)."""
        raise NotImplementedError

    def eval_sums(self, outputs, targets, mask) -> dict:
        """Sums over the real rows (mask 1) of one evaluation batch; added across batches and processes."""
        raise NotImplementedError

    def finish(self, sums: dict) -> dict:
        """A split's metrics (`metrics`, in order) from the sums over all its batches (NumPy values)."""
        raise NotImplementedError

    def predictions(self, outputs):
        """The model's outputs as predict and export return them (jittable)."""
        raise NotImplementedError

    def targets_of(self, batch_size: int, input_shape: tuple) -> tuple[tuple, str]:
        """(shape, dtype) of a batch's targets: class ids [B] (classify), floats [B, K] (regress), the
        next token at every position [B, T] (lm)."""
        raise NotImplementedError


def _soft(outputs, targets) -> bool:
    """Soft targets: a distribution per example (float [B, C]) rather than class ids [B]."""
    return jnp.ndim(targets) == jnp.ndim(outputs) and jnp.issubdtype(jnp.asarray(targets).dtype, jnp.floating)


@dataclasses.dataclass(frozen=True)
class Classify(Task):
    """Softmax cross-entropy over `num_classes` (label smoothing in training only); accuracy."""

    num_classes: int
    label_smoothing: float = 0.0

    name = "classify"
    metrics = ("loss", "accuracy")
    train_metrics = ("loss", "accuracy")
    selection = ("accuracy", "max")
    report = (Metric("accuracy", "max", "acc", "accuracy"),)
    outputs = "probabilities"

    def cross_entropy(self, logits, targets, label_smoothing: float = 0.0):
        """Per-example cross-entropy against class ids [B] or distributions [B, C] (mixup, cutmix)."""
        dist = targets.astype(jnp.float32) if _soft(logits, targets) else jax.nn.one_hot(targets, self.num_classes)
        return optax.softmax_cross_entropy(logits.astype(jnp.float32), optax.smooth_labels(dist, label_smoothing))

    def loss(self, outputs, targets):
        return self.cross_entropy(outputs, targets, self.label_smoothing)

    def _labels(self, outputs, targets):
        return jnp.argmax(targets, -1) if _soft(outputs, targets) else targets

    def batch_metrics(self, outputs, targets, loss=None) -> dict:
        loss = self.loss(outputs, targets).mean() if loss is None else loss
        return {"loss": loss, "accuracy": jnp.mean(jnp.argmax(outputs, -1) == self._labels(outputs, targets))}

    def eval_sums(self, outputs, targets, mask) -> dict:
        loss = self.cross_entropy(outputs, targets)
        correct = (jnp.argmax(outputs, -1) == self._labels(outputs, targets)).astype(jnp.float32)
        return {"loss": jnp.sum(loss * mask), "correct": jnp.sum(correct * mask), "count": jnp.sum(mask)}

    def finish(self, sums: dict) -> dict:
        return {"loss": sums["loss"] / sums["count"], "accuracy": sums["correct"] / sums["count"]}

    def predictions(self, outputs):
        return jax.nn.softmax(outputs.astype(jnp.float32), axis=-1)

    def targets_of(self, batch_size: int, input_shape: tuple) -> tuple[tuple, str]:
        return (batch_size,), "int32"


@dataclasses.dataclass(frozen=True)
class Regress(Task):
    """K float targets, standardised by the training split: MSE (or Huber) over them, mean over K.
    RMSE, MAE and R² are per target in the original units, then averaged over the K targets
    (scikit-learn's 'uniform_average'); R² uses the split's own mean, as `sklearn.metrics.r2_score`."""

    num_outputs: int
    mean: tuple = ()  # per target, original units: what standardisation subtracted
    std: tuple = ()  # per target: what it divided by
    loss_name: str = "mse"

    name = "regress"
    metrics = ("loss", "rmse", "mae", "r2")
    train_metrics = ("loss", "rmse")
    selection = ("loss", "min")
    report = (Metric("r2", "max", "R²"), Metric("rmse", "min", "RMSE"))
    outputs = "values"

    def _std(self):
        return jnp.asarray(self.std or (1.0,) * self.num_outputs, jnp.float32)

    def loss(self, outputs, targets):
        outputs, targets = outputs.astype(jnp.float32), targets.astype(jnp.float32)
        if self.loss_name == "huber":
            return jnp.mean(optax.huber_loss(outputs, targets, delta=HUBER_DELTA), axis=-1)
        return jnp.mean(jnp.square(outputs - targets), axis=-1)

    def batch_metrics(self, outputs, targets, loss=None) -> dict:
        loss = self.loss(outputs, targets).mean() if loss is None else loss
        errors = (outputs.astype(jnp.float32) - targets) * self._std()
        return {"loss": loss, "rmse": jnp.mean(jnp.sqrt(jnp.mean(jnp.square(errors), axis=0)))}

    def eval_sums(self, outputs, targets, mask) -> dict:
        outputs, targets = outputs.astype(jnp.float32), targets.astype(jnp.float32)
        rows = mask[:, None]
        errors = outputs - targets
        return {"loss": jnp.sum(self.loss(outputs, targets) * mask),
                "sse": jnp.sum(jnp.square(errors) * rows, axis=0), "sae": jnp.sum(jnp.abs(errors) * rows, axis=0),
                "sum_y": jnp.sum(targets * rows, axis=0), "sum_y2": jnp.sum(jnp.square(targets) * rows, axis=0),
                "count": jnp.sum(mask)}

    def finish(self, sums: dict) -> dict:
        count = float(sums["count"])
        std = np.asarray(self.std or (1.0,) * self.num_outputs, np.float64)
        sse, sae = np.asarray(sums["sse"], np.float64), np.asarray(sums["sae"], np.float64)
        total = np.asarray(sums["sum_y2"], np.float64) - np.square(np.asarray(sums["sum_y"], np.float64)) / count
        with np.errstate(divide="ignore", invalid="ignore"):  # a constant target: R² 1 if fitted exactly, else 0
            r2 = np.where(total > 0, 1 - sse / total, np.where(sse == 0, 1.0, 0.0))
        return {"loss": float(sums["loss"]) / count, "rmse": float(np.mean(std * np.sqrt(sse / count))),
                "mae": float(np.mean(std * sae / count)), "r2": float(np.mean(r2))}

    def predictions(self, outputs):
        """Values in the original units: the standardisation undone."""
        mean = jnp.asarray(self.mean or (0.0,) * self.num_outputs, jnp.float32)
        return outputs.astype(jnp.float32) * self._std() + mean

    def targets_of(self, batch_size: int, input_shape: tuple) -> tuple[tuple, str]:
        return (batch_size, self.num_outputs), "float32"


LN2 = math.log(2.0)


@dataclasses.dataclass(frozen=True)
class LanguageModel(Task):
    """Next-token cross-entropy at every position of a window (outputs [B, T, V], targets int [B, T];
    negative target ids are padding, never counted). Loss in nats per token, bpc = loss / ln 2 (bits
    per byte for a byte vocabulary, per character for a character one), perplexity = exp(loss)."""

    vocab_size: int

    name = "lm"
    metrics = ("loss", "bpc", "perplexity")
    train_metrics = ("loss", "bpc")
    selection = ("loss", "min")
    report = (Metric("bpc", "min", "bpc"),)
    outputs = "tokens"

    def _token_losses(self, outputs, targets):
        """(cross-entropy per token [B, T], 1 where the token counts [B, T])."""
        counted = targets >= 0
        losses = optax.softmax_cross_entropy_with_integer_labels(outputs.astype(jnp.float32),
                                                                 jnp.where(counted, targets, 0))
        return losses * counted, counted.astype(jnp.float32)

    def loss(self, outputs, targets):
        losses, counted = self._token_losses(outputs, targets)
        return jnp.sum(losses, axis=-1) / jnp.maximum(jnp.sum(counted, axis=-1), 1.0)

    def batch_metrics(self, outputs, targets, loss=None) -> dict:
        loss = self.loss(outputs, targets).mean() if loss is None else loss
        return {"loss": loss, "bpc": loss / LN2}

    def eval_sums(self, outputs, targets, mask) -> dict:
        losses, counted = self._token_losses(outputs, targets)
        counted = counted * mask.reshape(mask.shape + (1,) * (counted.ndim - mask.ndim))
        return {"loss": jnp.sum(losses * counted), "count": jnp.sum(counted)}

    def finish(self, sums: dict) -> dict:
        loss = float(sums["loss"]) / float(sums["count"])
        return {"loss": loss, "bpc": loss / LN2, "perplexity": math.exp(min(loss, 700.0))}

    def predictions(self, outputs):
        return jax.nn.softmax(outputs.astype(jnp.float32), axis=-1)

    def targets_of(self, batch_size: int, input_shape: tuple) -> tuple[tuple, str]:
        return (batch_size, *input_shape), "int32"


CLASSES = {"classify": Classify, "regress": Regress, "lm": LanguageModel}


def describe(name: str | None) -> type[Task]:
    """The task class of `name` (None: classify): names, selection and report columns, no run needed."""
    if (name or DEFAULT) not in CLASSES:
        raise ConfigError(f"task '{name}' is not a task: choose {', '.join(TASKS)}")
    return CLASSES[name or DEFAULT]


def for_run(config, spec) -> Task:
    """The task object of a run: its config's `task` and `train.loss`, and the data spec."""
    name = getattr(config, "task", DEFAULT)
    if name == "regress":
        targets = spec.targets or {}
        return Regress(spec.num_classes, tuple(targets.get("mean") or ()), tuple(targets.get("std") or ()),
                       config.train.loss or "mse")
    if name == "lm":
        return LanguageModel(spec.vocab_size or spec.num_classes)
    return Classify(spec.num_classes, config.train.label_smoothing)


def as_task(task, label_smoothing: float = 0.0) -> Task:
    """A Task as given, or (the older call) a class count: classification with `label_smoothing`."""
    if isinstance(task, Task):
        return task
    return Classify(int(task), label_smoothing)
