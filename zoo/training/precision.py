"""Mixed precision: a model whose forward and backward passes run in a compute dtype.

Variables and optimizer state stay float32; parameters and inputs are cast at apply time and
updated non-parameter collections (BatchNorm statistics) are cast back. The GPU benchmark uses it
today; a `model.precision` config option will pick it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zoo.models import Model


def with_compute_dtype(model: Model, dtype) -> Model:
    """`model` with float32 variables and optimizer; the forward and backward passes in `dtype`."""

    def cast(tree):
        return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)

    def apply(variables, x, train=False, rng=None):
        out, state = model.apply(cast(variables), cast(x), train=train, rng=rng)
        old = {k: v for k, v in variables.items() if k != "params"}
        return out, jax.tree.map(lambda new, previous: new.astype(previous.dtype), state, old)

    return Model(model.init, apply, model.info)
