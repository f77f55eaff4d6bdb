"""RunSetup setup: everything a config names, built and checked before anything is written — data,
model, optimizer, mesh — plus the selection metric, the checkpoint manager's options and the one
evaluator that training, `zoo eval`, import and predict share. It imports no training loop."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from zoo import checkpoint as ckpt
from zoo import models
from zoo.models import mlp
from zoo.config import Config
from zoo import data as data_lib
from zoo.data import DataSpec, Dataset, check_inputs, select_classes
from zoo.errors import ConfigError
from zoo.rundir import CHECKPOINTS
from zoo.training import optim, state as state_lib, step as step_lib


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


def build_setup(config: Config, dataset: Dataset | None = None, training: bool = True) -> RunSetup:
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
    return assemble_setup(config, spec, dataset)


def prepare_dataset(config: Config, dataset: Dataset | None = None) -> Dataset:
    """The config's data (or `dataset`): the classes it keeps, its validation split, normalisation."""
    dataset = select_classes(dataset or data_lib.load(config.data), config.data.classes)
    return data_lib.prepare(dataset, config.data)


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
    shapes = run.abstract_state()  # traces init: a model that cannot take this data fails here
    optim.check_patterns(shapes.params, config.freeze, "freeze")
    return run


def xla_options_of(run: RunSetup) -> dict:
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
    return ckpt.Checkpoints(Path(run_dir) / CHECKPOINTS, keep=c.keep,
                            keep_best=c.keep_best if has_validation else 0,
                            metric=metric, mode=mode, async_save=c.async_save, read_only=read_only)


class Evaluator:
    """The one evaluator: loss and accuracy of a train state on the validation and test splits, in
    batches of `data.eval_batch_size` rounded up to the device count (padding is masked). Training,
    `zoo eval` and import all evaluate through it, so their numbers agree to the bit."""

    def __init__(self, setup: RunSetup):
        config = setup.config
        self.setup = setup
        self.batch_size = -(-config.data.eval_batch_size // jax.device_count()) * jax.device_count()
        self.eval_step = step_lib.jit_eval_step(setup.model, setup.spec.num_classes, setup.mesh,
                                                config.train.deterministic, config.train.xla_options)

    def split(self, state, x, y) -> dict:
        """{'loss', 'accuracy'} of `state` on the arrays `x`, `y`."""
        return step_lib.evaluate_arrays(self.eval_step, self.setup.mesh, state.params, state.model_state,
                                        x, y, self.batch_size)

    def splits(self, state) -> dict:
        """Flat metrics of one state: val_loss/val_accuracy (when there is a validation split) and
        test_loss/test_accuracy, as recorded in checkpoints and compared by `zoo eval`."""
        dataset, metrics = self.setup.dataset, {}
        if dataset.has_validation:
            metrics.update({f"val_{k}": v for k, v in self.split(state, dataset.x_val, dataset.y_val).items()})
        metrics.update({f"test_{k}": v for k, v in self.split(state, dataset.x_test, dataset.y_test).items()})
        return metrics


def auto_steps_per_call(family: str, backend: str | None = None) -> int:
    """Steps per call where the config leaves it open. On CPU only MLP steps are short enough to
    gain (XLA:CPU runs convolutions inside a scan ~20x slower); on GPU and TPU the zoo's small
    models are dispatch-bound whatever the family, and a scan costs nothing there."""
    if (backend or jax.default_backend()) == "cpu":
        return 10 if family == mlp.FAMILY else 1
    return 10

