"""Evaluate a run from its checkpoint alone: the model is rebuilt from the config stored in it."""

from __future__ import annotations

from pathlib import Path

import jax

from zoo.data import Dataset, check_unchanged
from zoo.errors import DataError
from zoo.training import loop, step as step_lib
from zoo.training.restore import open_checkpoints, resolve_step, stored_config

__all__ = ["evaluate", "resolve_step"]


def evaluate(run_dir: str | Path, step: int | None = None, best: bool = False,
             dataset: Dataset | None = None, allow_changed_data: bool = False) -> dict:
    """Validation and test metrics of one checkpoint of `run_dir` (the latest, a given step, or the
    best). Reads only. Refuses when the run's data files changed since training, unless
    `allow_changed_data`. A run trained on in-memory arrays needs them again as `dataset`."""
    run_dir = Path(run_dir)
    reader = open_checkpoints(run_dir)
    chosen = resolve_step(reader, step, best)
    config = stored_config(reader, chosen)
    meta = reader.read_meta(chosen)
    if meta.get("in_memory") and dataset is None:
        raise DataError(f"'{run_dir}' was trained on in-memory arrays (dataset '{meta['spec']['name']}'), which "
                        f"a run directory does not hold: evaluate it from Python with "
                        f"zoo.evaluate_run('{run_dir}', dataset=zoo.Dataset(...)) passing the same arrays")
    run = loop.build_run(config, dataset, training=False)
    if not allow_changed_data:
        check_unchanged(meta.get("spec"), run.spec)
    state, meta = reader.restore(chosen, run.abstract_state())
    eval_step = step_lib.jit_eval_step(run.model, run.spec.num_classes, run.mesh, config.train.deterministic,
                                       config.train.xla_options)
    eval_bs = -(-config.data.eval_batch_size // jax.device_count()) * jax.device_count()
    evaluate_split = lambda s, x, y: step_lib.evaluate_arrays(  # noqa: E731
        eval_step, run.mesh, s.params, s.model_state, x, y, eval_bs)
    metrics = loop.evaluate_splits(run, evaluate_split, state)
    split = lambda name: ({"loss": metrics[f"{name}_loss"], "accuracy": metrics[f"{name}_accuracy"]}  # noqa: E731
                          if f"{name}_loss" in metrics else None)
    return {"run_dir": str(run_dir), "step": chosen, "model": config.model.name,
            "dataset": run.spec.name, "val": split("val"), "test": split("test"),
            "recorded": meta.get("metrics")}
