"""RunSetup setup: everything a config names, built and checked before anything is written — data,
model, optimizer, mesh — plus the selection metric, the checkpoint manager's options and the one
evaluator that training, `zoo eval`, import and predict share. It imports no training loop."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from zoo import checkpoint as ckpt
from zoo import models, tasks
from zoo.models import mlp
from zoo.config import Config
from zoo import data as data_lib
from zoo.data import DataSpec, Dataset, check_inputs, select_classes
from zoo.errors import ConfigError
from zoo.rundir import CHECKPOINTS
from zoo.training import augment as augment_lib, optim, state as state_lib, step as step_lib


@dataclasses.dataclass
class RunSetup:
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

    @property
    def task(self) -> tasks.Task:
        """The run's task (zoo.tasks): loss, metrics, selection, predictions."""
        return tasks.for_run(self.config, self.spec)

    def sample_input(self):
        return jax.ShapeDtypeStruct((1, *self.spec.input_shape), np.dtype(self.spec.dtype))

    @property
    def ema(self) -> bool:
        """Whether the run keeps a moving average of its weights (train.ema) in its train state."""
        return self.config.train.ema.decay > 0

    def train_step(self, tx=None):
        """The run's pure train step `step(state, x, y)` (`step.train_step_fn` with the run's task,
        augmentation and moving average; `tx`: another optimizer, e.g. a population member's)."""
        c = self.config
        return step_lib.train_step_fn(self.model, tx or self.tx, self.task, augment=c.data.augment, ema=c.train.ema)

    def abstract_state(self):
        """The train state's shapes, dtypes and (replicated) shardings, without computing it."""
        shapes = jax.eval_shape(lambda x: state_lib.create(self.model, self.tx, self.config.seed, x, self.ema),
                                self.sample_input())
        sharding = step_lib.replicated(self.mesh)
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)

    def init_state(self):
        sample = np.zeros((1, *self.spec.input_shape), self.spec.dtype)
        create = step_lib.jit_init(lambda x: state_lib.create(self.model, self.tx, self.config.seed, x, self.ema),
                                   self.mesh)
        return create(sample)


def build_setup(config: Config, dataset: Dataset | None = None, training: bool = True) -> RunSetup:
    """Builds and checks everything a config names (data, model, optimizer) without writing anything.

    `training=False` (evaluation) skips the checks only training needs, such as the batch splitting
    over this machine's devices (a run trained elsewhere evaluates anywhere)."""
    check_model_task(config)
    dataset = prepare_dataset(config, dataset)
    check_inputs(dataset.spec, dataset.x_train[:1])
    spec = dataset.spec
    if training:
        augment_lib.check(config.data.augment, spec.kind, config.task)
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
    return assemble_setup(config, spec, dataset)


def check_model_task(config: Config) -> None:
    """Refuses a model whose registry entry does not take the config's task (Entry.tasks)."""
    supported = getattr(models.get_entry(config.model.name), "tasks", ("classify", "regress"))
    if config.task not in supported:
        raise ConfigError(f"model '{config.model.name}' does not do task '{config.task}' (it does "
                          f"{' and '.join(supported)}): choose a model for {config.task} (`zoo list`) or set task")


def prepare_dataset(config: Config, dataset: Dataset | None = None) -> Dataset:
    """The config's data (or `dataset`): the classes it keeps, its validation split, normalisation
    (and a regression's target standardisation); refuses data that does not fit the task."""
    dataset = select_classes(dataset or data_lib.load(config.data, config.task), config.data.classes)
    check_task_data(config.task, dataset)
    return data_lib.prepare(dataset, config.data)


def check_task_data(task: str, dataset: Dataset) -> None:
    """Refuses arrays (a dataset given to zoo.fit) whose y do not fit the task: class ids [N] for
    classify, float targets for regress, a next token at every position [N, T] for lm."""
    spec, y = dataset.spec, dataset.y_train
    fits = {"classify": spec.targets is None and np.ndim(y) == 1, "regress": spec.targets is not None,
            "lm": spec.kind == "tokens" and np.ndim(y) == 2}[task]
    if not fits:
        needs = {"classify": "one integer class id per example (regression targets need task: regress)",
                 "regress": "float targets: build it with zoo.Dataset.from_arrays(..., task='regress')",
                 "lm": "token windows x [N, T] with the next token at every position y [N, T]"}[task]
        raise ConfigError(f"dataset '{spec.name}' does not fit task '{task}', which needs {needs}")


def assemble_setup(config: Config, spec: DataSpec, dataset: Dataset | None = None) -> RunSetup:
    """Model, optimizer (frozen parameters included) and mesh for `spec`; the dataset may be absent
    (a run rebuilt from a checkpoint's stored spec to restore it)."""
    model = models.build(config.model.name, spec.num_classes, spec.vocab_size, **config.model.hparams)
    steps_per_epoch = max(spec.train_size // config.data.batch_size, 1)
    total_steps = config.total_steps(steps_per_epoch)
    tx = optim.with_frozen(optim.make_optimizer(config.optimizer, total_steps), config.freeze)
    tx = optim.accumulate(tx, config.train.accumulate)
    run = RunSetup(config, dataset, model, tx, step_lib.make_mesh(), total_steps, steps_per_epoch,
              None if dataset is not None else spec)
    xla_options_of(run)  # XLA refuses options it does not know here, before anything is written
    shapes = run.abstract_state()  # traces init: a model that cannot take this data fails here
    optim.check_patterns(shapes.params, config.freeze, "freeze")
    return run


def xla_options_of(run: RunSetup) -> dict:
    """The XLA options the run's jitted functions compile with (recorded in checkpoint meta)."""
    return step_lib.compiler_options(run.config.train.deterministic, family=run.model.info.family,
                                     options=run.config.train.xla_options)


def selection_metric(config: Config) -> tuple[str, str]:
    """The checkpoint metric that ranks steps ('val_accuracy' or 'val_loss'; the config leaves it to the
    task) and its direction: selection reads the validation split only, never test."""
    metric = config.checkpoint.metric
    return f"val_{metric}", tasks.describe(config.task).mode(metric)


def checkpoints_for(run_dir: Path, config: Config, read_only: bool = False,
                    has_validation: bool = True) -> ckpt.Checkpoints:
    c = config.checkpoint
    metric, mode = selection_metric(config)
    return ckpt.Checkpoints(Path(run_dir) / CHECKPOINTS, keep=c.keep,
                            keep_best=c.keep_best if has_validation else 0,
                            metric=metric, mode=mode, async_save=c.async_save, read_only=read_only)


class Evaluator:
    """The one evaluator: the task's metrics (classify: loss and accuracy) of a train state on the
    validation and test splits, in batches of `data.eval_batch_size` rounded up to the device count
    (padding is masked). Training, `zoo eval` and import all evaluate through it, so their numbers
    agree to the bit."""

    def __init__(self, setup: RunSetup):
        config = setup.config
        self.setup, self.task = setup, setup.task
        self.batch_size = -(-config.data.eval_batch_size // jax.device_count()) * jax.device_count()
        self.eval_step = step_lib.jit_eval_step(setup.model, self.task, setup.mesh,
                                                config.train.deterministic, config.train.xla_options)

    def split(self, state, x, y, weights: str | None = None) -> dict:
        """The task's metrics ({'loss', 'accuracy'} for classify) of `state` on the arrays `x`, `y`, with
        its moving average where it keeps one, unless `weights` is 'raw' (state.weights)."""
        params, model_state = state_lib.weights(state, weights)
        return step_lib.evaluate_arrays(self.eval_step, self.setup.mesh, params, model_state,
                                        x, y, self.batch_size, self.task)

    def splits(self, state, weights: str | None = None) -> dict:
        """Flat metrics of one state: val_<metric> (when there is a validation split) and test_<metric>
        for each of the task's metrics (val_loss, val_accuracy, test_loss, test_accuracy for classify),
        as recorded in checkpoints and compared by `zoo eval`. A state with a moving average (train.ema)
        is measured with it, and, unless `weights` chooses, with its raw weights too: raw_val_<metric>,
        raw_test_<metric>."""
        metrics = self._splits(state, weights)
        if weights is None and state_lib.has_ema(state):
            metrics.update({f"raw_{k}": v for k, v in self._splits(state, "raw").items()})
        return metrics

    def _splits(self, state, weights: str | None) -> dict:
        dataset, metrics = self.setup.dataset, {}
        if dataset.has_validation:
            metrics.update({f"val_{k}": v for k, v in self.split(state, dataset.x_val, dataset.y_val, weights).items()})
        metrics.update({f"test_{k}": v for k, v in self.split(state, dataset.x_test, dataset.y_test, weights).items()})
        return metrics


def auto_steps_per_call(family: str, backend: str | None = None) -> int:
    """Steps per call where the config leaves it open. On CPU only MLP steps are short enough to
    gain (XLA:CPU runs convolutions inside a scan ~20x slower); on GPU and TPU the zoo's small
    models are dispatch-bound whatever the family, and a scan costs nothing there."""
    if (backend or jax.default_backend()) == "cpu":
        return 10 if family == mlp.FAMILY else 1
    return 10

