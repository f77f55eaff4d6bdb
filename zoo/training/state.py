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


def create(model, tx: optax.GradientTransformation, seed: int, sample_x) -> TrainState:
    """Initializes parameters, model state and optimizer state from `seed` (pure; jit-able)."""
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed))
    variables = model.init(init_key, sample_x)
    params = variables.pop("params")
    return TrainState(
        step=jax.numpy.zeros((), jax.numpy.int32),
        params=params,
        model_state=variables,
        opt_state=tx.init(params),
        rng=dropout_key,
    )
