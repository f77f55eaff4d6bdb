"""The train state: one pytree holding everything the next step depends on."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import optax


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar
    params: Any
    model_state: Any  # non-param collections, e.g. {'batch_stats': ...}
    opt_state: optax.OptState
    rng: jax.Array  # raw uint32 key; each step's dropout key is fold_in(rng, step)


@flax.struct.dataclass
class EmaTrainState(TrainState):
    """The train state of a run with `train.ema`: also the moving average of the weights,
    {'params': ..., 'model_state': ...} (a run without EMA keeps the plain TrainState: its state tree
    and checkpoints are those of a run before EMA existed)."""

    ema: Any


def create(model, tx: optax.GradientTransformation, seed: int, sample_x, ema: bool = False) -> TrainState:
    """Initializes parameters, model state and optimizer state from `seed` (pure; jit-able); with
    `ema`, an EmaTrainState whose average starts as the initial weights."""
    init_key, _ = jax.random.split(jax.random.PRNGKey(seed))
    return from_variables(model.init(init_key, sample_x), tx, seed, ema)


def from_variables(variables: dict, tx: optax.GradientTransformation, seed: int, ema: bool = False) -> TrainState:
    """The step-0 train state holding `variables` ({'params': ..., other collections}): what `create`
    makes of a fresh init, and an import makes of weights read from a file, without initialising."""
    _, dropout_key = jax.random.split(jax.random.PRNGKey(seed))
    variables = dict(variables)
    params = variables.pop("params")
    fields = dict(step=jax.numpy.zeros((), jax.numpy.int32), params=params, model_state=variables,
                  opt_state=tx.init(params), rng=dropout_key)
    if not ema:
        return TrainState(**fields)
    average = jax.tree.map(jax.numpy.copy, {"params": params, "model_state": variables})  # own buffers (donation)
    return EmaTrainState(**fields, ema=average)


def has_ema(state) -> bool:
    return isinstance(state, EmaTrainState)


WEIGHTS = ("ema", "raw")  # --weights: the moving average (the default where a run keeps one) or the raw weights


def weights(state, which: str | None = None) -> tuple:
    """(params, model_state) to evaluate or predict with: the moving average when the state keeps one,
    unless `which` is 'raw'; 'ema' for a state without one is refused in one line."""
    from zoo.errors import ConfigError

    if which not in (None, *WEIGHTS):
        raise ConfigError(f"--weights '{which}' must be one of {', '.join(WEIGHTS)}")
    if which == "ema" and not has_ema(state):
        raise ConfigError("--weights ema: this run keeps no moving average of its weights (train.ema is off): "
                          "use --weights raw, or train with train.ema.decay set, e.g. 0.999")
    if has_ema(state) and which != "raw":
        return state.ema["params"], state.ema["model_state"]
    return state.params, state.model_state


def update_ema(state: EmaTrainState, decay: float, every: int) -> EmaTrainState:
    """After the step that made `state` (its step already counted): every `every` steps, average =
    decay * average + (1 - decay) * weights (optax.incremental_update), for the floating-point leaves
    of params and model state; other leaves (counters) are taken as they are."""
    current = {"params": state.params, "model_state": state.model_state}
    due = state.step % every == 0

    def average(new, old):
        if not jax.numpy.issubdtype(new.dtype, jax.numpy.floating):
            return new
        return jax.numpy.where(due, optax.incremental_update(new, old, 1.0 - decay), old)

    return state.replace(ema=jax.tree.map(average, current, state.ema))
