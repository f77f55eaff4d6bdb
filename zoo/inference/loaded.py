"""`load_run(run_dir)`: a trained model back in your hands — model, variables, config, class names,
the run's preprocessing, and a jitted, batched `predict`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path

import jax
import numpy as np

from zoo.config import Config
from zoo.data import DataSpec, Dataset, preprocess
from zoo.errors import DataError, ZooError
from zoo.inference import inputs as inputs_lib
from zoo.models import Model
from zoo.training import restore as restore_lib, state as state_lib


@dataclasses.dataclass
class LoadedRun:
    """One checkpoint of a run, ready to predict. `variables` is what `model.apply` takes."""

    run_dir: Path
    step: int
    model: Model
    variables: dict
    config: Config
    spec: DataSpec
    meta: dict
    batch_size: int = 256

    @property
    def class_names(self) -> list[str]:
        names = self.spec.class_names
        return list(names) if names is not None else [str(i) for i in range(self.spec.num_classes)]

    @property
    def takes_raw_uint8(self) -> bool:
        """True when the run's source gave uint8 pixels (0..255) that its preprocessing scales."""
        return (self.spec.normalization or {}).get("scale", 1.0) != 1.0

    @property
    def takes(self) -> dict | None:
        """The value range of array inputs (`zoo.inference.inputs.contract`): for an image run, uint8 are
        pixels 0-255 and floats lie in `takes["float_range"]` ([0, 1] when the source gave uint8 pixels)."""
        return inputs_lib.contract(self.spec.kind, self.spec.normalization, (self.spec.source or {}).get("kind"))

    def preprocess(self, x) -> np.ndarray:
        """Inputs (a batch, or one example) as the model takes them; refuses the wrong shape, and values
        outside the range the run takes (see `takes`: uint8 pixels 0-255, or floats in its float range,
        [0, 1] for images read from uint8 files)."""
        x = np.asarray(x)
        shape = tuple(self.spec.input_shape)
        if x.shape == shape:
            x = x[None]
        elif x.shape[1:] == shape[:-1] and shape[-1] == 1 and self.spec.kind != "tokens":
            x = x[..., None]  # one-channel images and signals given without their channel axis
        if x.shape[1:] != shape:
            raise DataError(f"inputs of shape {tuple(x.shape[1:])} per example do not fit this run: it expects "
                            f"{shape} ({self.spec.kind}, {self.spec.dtype}), as a batch (N, {', '.join(map(str, shape))})")
        return preprocess(self.spec, inputs_lib.conform(x, self.takes, "the input"))

    @property
    def task(self):
        """The run's task (zoo.tasks): what `predict` returns."""
        from zoo import tasks

        return tasks.for_run(self.config, self.spec)

    @property
    def target_names(self) -> list[str] | None:
        """A regression's target names (one per column of `predict`'s values); None for other tasks."""
        return list(self.spec.targets["names"]) if self.spec.targets else None

    def check_predicts(self) -> None:
        """Refuses, in one line, a run whose task `predict` does not serve: a language model generates."""
        if self.config.task == "lm":
            raise ZooError(f"'{self.run_dir}' is a language model (task: lm): generate text with "
                           f"`zoo sample {self.run_dir} --prompt TEXT` (LoadedRun.sample), not predict")

    def predict(self, x) -> np.ndarray:
        """What the run's task predicts, computed in fixed-size batches: class probabilities (N, num_classes)
        for a classification; for a regression the predicted values (N, K) in the targets' original units
        (the training split's standardisation undone). A language model is refused: `sample` generates.
        Image arrays: uint8 are pixels 0-255, floats lie in the run's float range ([0, 1] for a run on
        image files); others are refused in one line (see `preprocess`)."""
        self.check_predicts()
        x = self.preprocess(x)
        out = []
        for start in range(0, len(x), self.batch_size):
            batch = x[start:start + self.batch_size]
            real = len(batch)
            if real < self.batch_size:  # one compiled shape: pad the last batch
                batch = np.concatenate([batch, np.zeros((self.batch_size - real, *batch.shape[1:]), batch.dtype)])
            out.append(np.asarray(self._predictions(self.variables, batch))[:real])
        return np.concatenate(out) if out else np.zeros((0, self.spec.num_classes), np.float32)

    def sample(self, prompt: str, max_tokens: int, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, seed: int = 0) -> str:
        """A continuation of `prompt` (the prompt not included) by this run's language model, decoded
        with the run's recorded vocabulary; same seed, same text; temperature 0: greedy. The step is
        the one `load_run` chose. Timing and details: `zoo.inference.sample.generate`."""
        from zoo.inference.sample import generate

        return generate(self, prompt, max_tokens, temperature, top_k, top_p, seed).text

    @property
    def _predictions(self):
        """The jitted forward pass and the task's predictions (softmax, or the targets' units)."""
        if not hasattr(self, "_jitted"):
            model, task = self.model, self.task
            from zoo.training import step as step_lib

            options = step_lib.compiler_options(self.config.train.deterministic, family=step_lib.family_of(model),
                                                options=self.config.train.xla_options)
            self._jitted = jax.jit(lambda variables, x: task.predictions(model.apply(variables, x, train=False)[0]),
                                   compiler_options=options or None)
        return self._jitted


def load_run(run_dir: str | Path, step: int | str = "latest", dataset: Dataset | None = None,
             batch_size: int = 256, weights: str | None = None) -> LoadedRun:
    """One checkpoint of `run_dir`: "latest", "best" (by the validation metric) or a step number.

    Needs no data: the model is rebuilt from the config and data spec stored in the checkpoint.
    `dataset` (the arrays of a run trained in memory) is accepted for symmetry with `evaluate` and
    checked against the stored spec. A run with a moving average of its weights (train.ema) predicts
    with it, unless `weights` is 'raw'."""
    with _absl_warnings_muted():
        restored = restore_lib.restore(run_dir, step)
    if dataset is not None and tuple(dataset.spec.input_shape) != tuple(restored.spec.input_shape):
        raise DataError(f"the dataset's examples have shape {tuple(dataset.spec.input_shape)}, the run "
                        f"'{run_dir}' was trained on {tuple(restored.spec.input_shape)}")
    params, model_state = state_lib.weights(jax.device_get(restored.state), weights)
    variables = {"params": params, **model_state}
    return LoadedRun(Path(run_dir), restored.step, restored.setup.model, variables, restored.config,
                     restored.spec, restored.meta, batch_size)


@contextlib.contextmanager
def _absl_warnings_muted():
    """Orbax logs routine events of the read-only checkpoint manager a restore opens through absl at
    WARNING ("Given directory is read only=..."): noise on the stderr of a Python program that only
    loads a run. Errors still show; the logger's level is put back after."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)
