"""A run's checkpoint back from its directory alone (the model is rebuilt from the config and data
spec stored with it), and fine-tuning: another run's parameters as this run's starting point."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from zoo import checkpoint as ckpt
from zoo.config import Config, InitFromConfig, from_dict
from zoo.data import DataSpec
from zoo.data.text import check_same_vocabulary
from zoo.errors import CheckpointError, ConfigError, ZooError
from zoo import distributed
from zoo.errors import DamagedCheckpointError
from zoo.rundir import CHECKPOINTS
from zoo.training import optim, state as state_lib, step as step_lib
from zoo.training.setup import RunSetup, assemble_setup, selection_metric


@dataclasses.dataclass
class RestoredCheckpoint:
    """One checkpoint of a run: its config, data spec, rebuilt `RunSetup`, train state and metadata."""

    run_dir: Path
    step: int
    config: Config
    spec: DataSpec
    setup: RunSetup
    state: object
    meta: dict


def open_checkpoints(run_dir: str | Path) -> ckpt.Checkpoints:
    """The run's checkpoints, read-only; one clear line when `run_dir` is not a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory '{run_dir}' does not exist: give one that `zoo train` wrote")
    if not (run_dir / CHECKPOINTS).is_dir():
        raise CheckpointError(f"'{run_dir}' holds no checkpoints/: give a run directory written by `zoo train`")
    return ckpt.Checkpoints(run_dir / CHECKPOINTS, read_only=True)


def resolve_step(checkpoints: ckpt.Checkpoints, step: int | str | None = None, best: bool = False) -> int:
    """A step number, "latest" (or None), or "best": the step with the best validation metric of the
    run's config (never test)."""
    if step == "best":
        step, best = None, True
    if isinstance(step, str) and step != "latest":
        raise ConfigError(f"step '{step}' must be 'latest', 'best' or a step number")
    if isinstance(step, int):
        return step
    latest = checkpoints.latest_step()
    if latest is None:
        raise CheckpointError(f"no complete checkpoint in '{checkpoints.directory}': train first "
                              "(`zoo train CONFIG --workdir DIR`)")
    if not best:
        return latest
    config = stored_config(checkpoints, latest)
    metric, mode = selection_metric(config)
    chosen = checkpoints.best_step(metric, mode)
    if chosen is None:
        raise CheckpointError(f"no checkpoint in '{checkpoints.directory}' recorded {metric}: the run has no "
                              "validation split (data.validation: 0), so no step is 'best'; use --step N or "
                              "the latest")
    return chosen


def stored_config(checkpoints: ckpt.Checkpoints, step: int) -> Config:
    meta = checkpoints.read_meta(step)
    try:
        return from_dict(meta["config"])
    except (KeyError, TypeError, ZooError) as error:
        raise CheckpointError(f"checkpoint step {step}: its stored config is unusable ({error})") from None


def stored_spec(meta: dict, step: int) -> DataSpec:
    try:
        return DataSpec.from_json(meta["spec"])
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint step {step}: its stored data spec is unusable ({error})") from None


READ_TRIES = 3  # how many times a reader picks a step while a training run beside it deletes them


def read_chosen(run_dir: str | Path, step: int | str | None, best: bool, read):
    """(chosen, read(checkpoints, chosen)) for the step `resolve_step` picks in the run's checkpoints.
    Unless a step number was given, a step that vanishes under the reader (a training run beside it
    saved a newer step and its keep-N retention deleted this one while it was listed or read) makes
    it list the steps again and pick anew, READ_TRIES times in all. A step still complete on disk
    that fails is damaged: refused at once."""
    for tries_left in reversed(range(READ_TRIES)):
        checkpoints, chosen = None, None
        try:
            checkpoints = open_checkpoints(run_dir)
            chosen = resolve_step(checkpoints, step, best)
            return chosen, read(checkpoints, chosen)
        except CheckpointError:
            if isinstance(step, int) or not tries_left or (chosen is not None and checkpoints.is_complete(chosen)):
                raise


def restore(run_dir: str | Path, step: int | str | None = "latest") -> RestoredCheckpoint:
    """The train state of one checkpoint, with no data loaded: the model comes from the stored spec."""

    def read(checkpoints: ckpt.Checkpoints, chosen: int) -> RestoredCheckpoint:
        meta = checkpoints.read_meta(chosen)
        config, spec = stored_config(checkpoints, chosen), stored_spec(meta, chosen)
        setup = assemble_setup(config, spec)
        state, meta = checkpoints.restore(chosen, setup.abstract_state())
        return RestoredCheckpoint(Path(run_dir), chosen, config, spec, setup, state, meta)

    return read_chosen(run_dir, step, False, read)[1]


def init_from(run: RunSetup, source: InitFromConfig):
    """A function taking this run's fresh train state to one whose parameters and model state come
    from `source`'s checkpoint, except those matching `source.skip` (kept as initialised). Checked
    now, before anything is written: a parameter of another shape is refused by name."""
    restored = restore(source.run, source.step)
    target = run.abstract_state()
    optim.check_patterns(target.params, source.skip, "init_from.skip")
    if not optim.matches("embed/embedding", source.skip):  # token ids must mean the same text in both runs
        check_same_vocabulary(restored.spec.vocabulary, run.spec.vocabulary, f"init_from: '{source.run}'",
                              "use the same data.vocabulary and text, or add embed and head to init_from.skip "
                              "to learn new token embeddings")
    params = _merge(target.params, restored.state.params, source, "parameter")
    model_state = _merge(target.model_state, restored.state.model_state, source, "model state")
    sharding = step_lib.replicated(run.mesh)

    def apply(state):
        new_params = jax.tree_util.tree_map_with_path(
            lambda path, fresh: fresh if params[optim.param_path(path)] is None
            else jax.device_put(params[optim.param_path(path)], sharding), state.params)
        new_model_state = jax.tree_util.tree_map_with_path(
            lambda path, fresh: fresh if model_state[optim.param_path(path)] is None
            else jax.device_put(model_state[optim.param_path(path)], sharding), state.model_state)
        opt_state = step_lib.jit_init(run.tx.init, run.mesh)(new_params)
        state = state.replace(params=new_params, model_state=new_model_state, opt_state=opt_state)
        if state_lib.has_ema(state):  # the moving average starts from the weights training starts from
            start = {"params": new_params, "model_state": new_model_state}
            state = state.replace(ema=jax.tree.map(jax.numpy.copy, start))
        return state

    return apply


def _merge(target, source_tree, source: InitFromConfig, what: str) -> dict:
    """{path: source array or None (skipped: keep the fresh value)} for every leaf of `target`."""
    available = {optim.param_path(path): np.asarray(leaf)
                 for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(source_tree))}
    chosen = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(target):
        name = optim.param_path(path)
        if optim.matches(name, source.skip):
            chosen[name] = None
            continue
        if name not in available:
            raise ConfigError(f"init_from: {what} {name} is not in '{source.run}' (its model differs): "
                              f"add '{name.split('/')[0]}' to init_from.skip to initialise it afresh")
        if tuple(available[name].shape) != tuple(leaf.shape):
            raise ConfigError(f"init_from: {what} {name} has shape {tuple(available[name].shape)} in "
                              f"'{source.run}' but {tuple(leaf.shape)} here: add '{name.split('/')[0]}' to "
                              "init_from.skip to initialise it afresh")
        chosen[name] = available[name].astype(leaf.dtype)
    return chosen


def restore_latest_good(checkpoints: ckpt.Checkpoints, setup: RunSetup, progress):
    """The newest step that restores and verifies. Damaged newer steps are reported and set aside
    (a resumed run will write those step numbers again); if every step is damaged, refuses.

    With several processes, process 0's list of steps is the one tried; every process restores each
    step and a step damaged for any process is damaged for all, so all restore the same step."""
    damaged = []
    for step in reversed(distributed.broadcast_ints(checkpoints.listed_steps())):
        try:
            state, meta = checkpoints.restore(step, setup.abstract_state())
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

