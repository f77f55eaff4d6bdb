"""Evaluate a run from its checkpoint alone: the model is rebuilt from the config stored in it."""

from __future__ import annotations

from pathlib import Path

import jax

from zoo import checkpoint as ckpt
from zoo.config import from_dict
from zoo.errors import CheckpointError, ZooError
from zoo.training import loop, step as step_lib


def resolve_step(checkpoints, step: int | None = None, best: bool = False) -> int:
    """A given step, the latest, or (best) the step with the best validation metric of the run's config."""
    if step is not None:
        return step
    latest = checkpoints.latest_step()
    if latest is None:
        raise CheckpointError(f"no complete checkpoint in '{checkpoints.directory}': train first "
                              "(`zoo train CONFIG --workdir DIR`)")
    if not best:
        return latest
    config = _stored_config(checkpoints, latest)
    metric, mode = loop.selection_metric(config)
    chosen = checkpoints.best_step(metric, mode)
    if chosen is None:
        raise CheckpointError(f"no checkpoint in '{checkpoints.directory}' recorded {metric}: the run has no "
                              "validation split (data.validation: 0), so no step is 'best'; use --step N or "
                              "the latest")
    return chosen


def _stored_config(checkpoints, step: int):
    meta = checkpoints.read_meta(step)
    try:
        return from_dict(meta["config"])
    except (KeyError, TypeError, ZooError) as error:
        raise CheckpointError(f"checkpoint step {step}: its stored config is unusable ({error})") from None


def evaluate(run_dir: str | Path, step: int | None = None, best: bool = False) -> dict:
    """Test metrics of one checkpoint of `run_dir` (the latest, a given step, or the best). Reads only."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory '{run_dir}' does not exist: give one that `zoo train` wrote")
    if not (run_dir / "checkpoints").is_dir():
        raise CheckpointError(f"'{run_dir}' holds no checkpoints/: give a run directory written by "
                              "`zoo train`")
    reader = ckpt.Checkpoints(run_dir / "checkpoints", read_only=True)
    chosen = resolve_step(reader, step, best)
    config = _stored_config(reader, chosen)
    run = loop.build_run(config, training=False)
    state, meta = reader.restore(chosen, run.abstract_state())
    eval_step = step_lib.jit_eval_step(run.model, run.spec.num_classes, run.mesh, config.train.deterministic)
    eval_bs = -(-config.data.eval_batch_size // jax.device_count()) * jax.device_count()
    evaluate_split = lambda s, x, y: step_lib.evaluate_arrays(  # noqa: E731
        eval_step, run.mesh, s.params, s.model_state, x, y, eval_bs)
    metrics = loop.evaluate_splits(run, evaluate_split, state)
    split = lambda name: ({"loss": metrics[f"{name}_loss"], "accuracy": metrics[f"{name}_accuracy"]}  # noqa: E731
                          if f"{name}_loss" in metrics else None)
    return {"run_dir": str(run_dir), "step": chosen, "model": config.model.name,
            "dataset": config.data.name, "val": split("val"), "test": split("test"),
            "recorded": meta.get("metrics")}
