"""Every registered model, on every input kind it takes, supports JAX's transforms: forward mode
(`jax.jvp`), a Hessian-vector product of the loss (forward over reverse) and `jax.vmap` over
parameter sets; with fast layers, each agrees with the stock flax formulation (`fast_layers=False`)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from conftest import CHEAP_COMPILE
from test_models import integer_labels
from zoo import models

NUM_CLASSES = 3
VOCAB_SIZE = 11
BATCH = 2
TOLERANCE = 1e-5  # relative to each result's largest magnitude


def entry(name: str):
    return models.get_entry(name)


def cases():
    """Every (name, kind), each entry with its test settings' kinds (a `traced_only` entry, more of
    blocks checked elsewhere, its first only). Each family's representative on its first kind runs in
    `make test`, where its fast layers are (conv after BatchNorm, the fast LSTM, residual blocks); every
    other case is slow and exhaustive: `make test-all` runs them (the deep ResNets compile for minutes)."""
    for name in models.list_models():
        kinds = list(entry(name).test.shapes)
        for kind in kinds[:1] if entry(name).test.traced_only else kinds:
            yield ((name, kind) if entry(name).test.representative and kind == kinds[0]
                   else pytest.param(name, kind, marks=[pytest.mark.slow, pytest.mark.exhaustive]))


CASES = list(cases())


def has_fast_layers(name: str) -> bool:
    return "fast_layers" in models.hparam_fields(name)


def random_like(tree, key):
    """Normal noise shaped like `tree`: one draw, cut into its leaves."""
    flat, unravel = ravel_pytree(tree)
    return unravel(jax.random.normal(key, flat.shape, flat.dtype))


def sample(kind: str, shape, key):
    if kind == "tokens":
        return jax.random.randint(key, shape, 0, VOCAB_SIZE, dtype=jnp.int32)
    return jax.random.normal(key, shape, jnp.float32)


def transforms(model, variables, x, directions, rng):
    """(jvp of apply, Hessian-vector product of the loss, vmap of apply over two parameter sets)."""
    d_params, d_x, params_b = directions

    def logits(params, x):
        return model.apply({**variables, "params": params}, x, train=True, rng=rng)[0]

    def loss(params):
        outputs = logits(params, x)  # (B, C), or (B, T, C) for a language model: a label per position
        return optax.softmax_cross_entropy_with_integer_labels(outputs, integer_labels(outputs, NUM_CLASSES)).mean()

    params = variables["params"]
    if d_x is None:  # token ids: no tangent
        _, jvp = jax.jvp(lambda p: logits(p, x), (params,), (d_params,))
    else:
        _, jvp = jax.jvp(logits, (params, x), (d_params, d_x))
    _, hvp = jax.jvp(jax.grad(loss), (params,), (d_params,))
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, params_b)
    eval_logits = lambda p: model.apply({**variables, "params": p}, x, train=False)[0]  # noqa: E731
    return jvp, hvp, jax.vmap(eval_logits)(stacked)


def build(name: str, fast_layers: bool):
    """The entry's test-sized model, with fast or stock layers where it has the choice."""
    hparams = dict(entry(name).test.hparams)
    if has_fast_layers(name):
        hparams["fast_layers"] = fast_layers
    return models.build(name, NUM_CLASSES, vocab_size=VOCAB_SIZE, **hparams)


def arguments(name: str, kind: str, model, key):
    """A batch, the variables `model` initializes, the three directions and a dropout key."""
    x_key, init_key, *direction_keys, rng = jax.random.split(key, 6)
    x = sample(kind, (BATCH, *entry(name).test.shapes[kind]), x_key)
    variables = model.init(init_key, x)
    params = variables["params"]
    directions = (
        random_like(params, direction_keys[0]),
        None if kind == "tokens" else random_like(x, direction_keys[1]),
        jax.tree.map(lambda a, b: a + 0.1 * b, params, random_like(params, direction_keys[2])),
    )
    return variables, x, directions, rng


@functools.cache
def results(name: str, kind: str) -> list:
    """The three transforms' outputs with fast layers, then with stock ones where the entry has the
    choice, from one jitted call. Both share the variables (initialized by the stock formulation: the
    fast LSTM draws its initial weights in another order), directions and dropout key, which come from
    a jitted call of their own: eager, op by op, resnet20's init took 10 s of CPU, and drawn inside
    the transforms' call the directions cost more compile time than on their own."""
    formulations = [build(name, True)] + ([build(name, False)] if has_fast_layers(name) else [])
    prepare = functools.partial(arguments, name, kind, formulations[-1])
    args = jax.jit(prepare, compiler_options=CHEAP_COMPILE)(jax.random.key(0, impl="rbg"))
    run = jax.jit(lambda args: [transforms(model, *args) for model in formulations], compiler_options=CHEAP_COMPILE)
    return jax.device_get(run(args))


def assert_agree(name, kind, index):
    actual, *stock = (outputs[index] for outputs in results(name, kind))
    for leaf in jax.tree.leaves(actual):
        assert np.isfinite(leaf).all()
    if not stock:
        return  # one formulation only: it runs, and that is the test
    expected = stock[0]
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        scale = max(1.0, float(np.abs(e).max()))
        np.testing.assert_allclose(a, e, rtol=TOLERANCE, atol=TOLERANCE * scale)


@pytest.mark.slow
@pytest.mark.parametrize("name,kind", CASES)
def test_jvp_of_apply_runs_and_matches_stock_flax_layers(name, kind):
    assert_agree(name, kind, 0)


@pytest.mark.slow
@pytest.mark.parametrize("name,kind", CASES)
def test_hessian_vector_product_of_the_loss_runs_and_matches_stock_flax_layers(name, kind):
    assert_agree(name, kind, 1)


@pytest.mark.slow
@pytest.mark.parametrize("name,kind", CASES)
def test_vmap_over_parameter_sets_runs_and_matches_stock_flax_layers(name, kind):
    assert_agree(name, kind, 2)


@pytest.mark.parametrize("name", [name for name in models.list_models() if has_fast_layers(name)])
def test_fast_and_stock_layers_have_the_same_variables(name):
    kind, example = next(iter(entry(name).test.shapes.items()))
    x = jax.ShapeDtypeStruct((BATCH, *example), jnp.int32 if kind == "tokens" else jnp.float32)

    def shapes(fast_layers):
        return jax.tree.map(lambda a: a.shape, jax.eval_shape(build(name, fast_layers).init, jax.random.key(0), x))

    assert shapes(True) == shapes(False)
