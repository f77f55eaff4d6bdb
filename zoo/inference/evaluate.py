"""Evaluate a run from its checkpoint alone: the model is rebuilt from the config stored in it."""

from __future__ import annotations

from pathlib import Path

from zoo.data import Dataset, check_unchanged
from zoo.errors import DataError
from zoo.training import state as state_lib
from zoo.training.setup import Evaluator, build_setup
from zoo.training.restore import read_chosen, resolve_step, stored_config

__all__ = ["evaluate", "resolve_step"]


def evaluate(run_dir: str | Path, step: int | None = None, best: bool = False,
             dataset: Dataset | None = None, allow_changed_data: bool = False, weights: str | None = None) -> dict:
    """Validation and test metrics of one checkpoint of `run_dir` (the latest, a given step, or the
    best): the task's (classify: loss, accuracy; regress: loss, rmse, mae, r2; lm: loss, bpc,
    perplexity). Reads only. Refuses when the run's data files changed since training, unless
    `allow_changed_data`. A run trained on in-memory arrays needs them again as `dataset`. A run with a
    moving average of its weights (train.ema) is evaluated with it unless `weights` is 'raw'."""
    run_dir = Path(run_dir)

    def read(reader, chosen: int):
        config = stored_config(reader, chosen)
        meta = reader.read_meta(chosen)
        if (meta.get("imported_from") or {}).get("prediction_only") and dataset is None:
            raise DataError(f"'{run_dir}' holds weights imported for prediction alone (no dataset): predict with "
                            f"`zoo predict {run_dir} INPUT...`, or import them again with --dataset NAME to evaluate")
        if meta.get("in_memory") and dataset is None:
            raise DataError(f"'{run_dir}' was trained on in-memory arrays (dataset '{meta['spec']['name']}'), "
                            f"which a run directory does not hold: evaluate it from Python with "
                            f"zoo.evaluate('{run_dir}', dataset=zoo.Dataset(...)) passing the same arrays")
        setup = build_setup(config, dataset, training=False)
        if not allow_changed_data:
            check_unchanged(meta.get("spec"), setup.spec)
        return (config, setup, *reader.restore(chosen, setup.abstract_state()))

    # A training run beside this one may delete the step chosen while it is read: read_chosen picks anew.
    chosen, (config, setup, state, meta) = read_chosen(run_dir, step, best, read)
    evaluator = Evaluator(setup)
    metrics = evaluator.splits(state, weights or "ema" if state_lib.has_ema(state) else weights)
    used = "ema" if state_lib.has_ema(state) and weights != "raw" else "raw"
    recorded = meta.get("metrics")
    if used == "raw" and state_lib.has_ema(state) and recorded:  # what training recorded for the raw weights
        recorded = {key[len("raw_"):]: value for key, value in recorded.items() if key.startswith("raw_")}
    split = lambda name: ({key: metrics[f"{name}_{key}"] for key in evaluator.task.metrics}  # noqa: E731
                          if f"{name}_loss" in metrics else None)
    return {"run_dir": str(run_dir), "step": chosen, "model": config.model.name, "task": config.task,
            "dataset": setup.spec.name, "weights": used, "val": split("val"), "test": split("test"),
            "recorded": recorded}
