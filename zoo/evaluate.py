"""Evaluate a run from its checkpoint alone: the model is rebuilt from the config stored in it."""

from __future__ import annotations

from pathlib import Path

import jax

from zoo import checkpoint as ckpt
from zoo.config import from_dict
from zoo.errors import CheckpointError, ZooError
from zoo.training import loop, step as step_lib


def resolve_step(checkpoints, step: int | None = None, best: bool = False) -> int:
    if step is not None:
        return step
    chosen = checkpoints.best_step() if best else checkpoints.latest_step()
    if chosen is None:
        raise CheckpointError(f"no complete checkpoint in '{checkpoints.directory}': train first "
                              "(`zoo train CONFIG --workdir DIR`)")
    return chosen


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
    meta = reader.read_meta(chosen)
    try:
        config = from_dict(meta["config"])
    except (KeyError, TypeError, ZooError) as error:
        raise CheckpointError(f"checkpoint step {chosen}: its stored config is unusable ({error})") from None
    run = loop.build_run(config, training=False)
    state, meta = reader.restore(chosen, run.abstract_state())
    eval_step = step_lib.jit_eval_step(run.model, run.spec.num_classes, run.mesh)
    eval_bs = -(-config.data.eval_batch_size // jax.device_count()) * jax.device_count()
    metrics = step_lib.evaluate_arrays(eval_step, run.mesh, state.params, state.model_state,
                                       run.dataset.x_test, run.dataset.y_test, eval_bs)
    return {"run_dir": str(run_dir), "step": chosen, "model": config.model.name,
            "dataset": config.data.name, "test": metrics, "recorded": meta.get("metrics")}
