"""K training steps inside one jitted call (lax.scan over K batches, train.steps_per_call = K) give
the same train state and metrics as K calls of the single step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from zoo import models
from zoo.training import state as state_lib, step as step_lib
from conftest import tolerance

K, BATCH, NUM_CLASSES = 4, 8, 3

CASES = {
    # BatchNorm statistics and dropout keys (folded from the step number) must follow the same path.
    "mlp": ({"hidden_sizes": (16,), "norm": "batch", "dropout": 0.2}, (6,)),
    # No max-pool: which element of a window wins flips on near-ties when the program around the
    # convolution changes (a scan or not), and one flipped winner moves a gradient by O(1).
    "cnn": ({"features": (4,), "hidden": 8, "norm": "batch", "pool": False}, (8, 8, 1)),
    "lstm": ({"hidden_size": 8}, (5, 3)),
}


def batches(input_shape, seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((K, BATCH, *input_shape), dtype=np.float32)
    ys = rng.integers(0, NUM_CLASSES, (K, BATCH)).astype(np.int32)
    return xs, ys


def setup(name):
    hparams, input_shape = CASES[name]
    model = models.build(name, NUM_CLASSES, **hparams)
    tx = optax.adam(1e-2)
    xs, ys = batches(input_shape)
    return model, tx, xs, ys, lambda: state_lib.create(model, tx, 0, xs[0, :1])


def assert_trees_close(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        if jnp.issubdtype(jnp.asarray(e).dtype, jax.dtypes.prng_key):
            a, e = jax.random.key_data(a), jax.random.key_data(e)
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), **tolerance(1e-5, 1e-6))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_k_steps_in_one_call_give_the_state_and_metrics_of_k_single_steps(name):
    model, tx, xs, ys, initial_state = setup(name)
    step = step_lib.train_step_fn(model, tx, NUM_CLASSES)
    single = jax.jit(step)
    state, metrics = initial_state(), []
    for k in range(K):
        state, m = single(state, xs[k], ys[k])
        metrics.append(m)
    multi_state, multi_metrics = jax.jit(step_lib.multi_step_fn(step))(initial_state(), xs, ys)
    assert int(multi_state.step) == K
    assert_trees_close(multi_state, state)
    assert_trees_close(multi_metrics, jax.tree.map(lambda *v: jnp.stack(v), *metrics))


@pytest.mark.slow
def test_jitted_step_with_steps_per_call_matches_single_calls_on_the_mesh():
    """The training loop's path: jit_train_step (donated state, mesh shardings) with K per call."""
    model, tx, xs, ys, initial_state = setup("mlp")
    mesh = step_lib.make_mesh()
    single = step_lib.jit_train_step(model, tx, NUM_CLASSES, 0.0, mesh)
    multi = step_lib.jit_train_step(model, tx, NUM_CLASSES, 0.0, mesh, steps_per_call=K)
    state = initial_state()
    for k in range(K):
        state, _ = single(state, step_lib.put_batch(mesh, xs[k]), step_lib.put_batch(mesh, ys[k]))
    multi_state, _ = multi(initial_state(), step_lib.put_batch(mesh, xs, 1), step_lib.put_batch(mesh, ys, 1))
    assert_trees_close(multi_state, state)
