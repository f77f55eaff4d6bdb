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

from zoo import models

NUM_CLASSES = 3
VOCAB_SIZE = 11
TOLERANCE = 1e-5  # relative to each result's largest magnitude

SHAPES = {"image": (2, 8, 8, 1), "signal": (2, 16, 1), "tokens": (2, 16)}
# Small versions; switches that put the fast layers where they matter (conv after BatchNorm,
# bidirectional stacked LSTMs).
HPARAMS = {
    "mlp": {"hidden_sizes": (8,)},
    "cnn": {"features": (4, 8), "hidden": 8, "norm": "batch"},
    "rnn": {"cell": "lstm", "hidden_size": 6, "num_layers": 2, "bidirectional": True},
    "lstm": {"hidden_size": 6},
    "gru": {"hidden_size": 6},
    "transformer": {"width": 16, "depth": 1, "num_heads": 2, "patch_size": 2},
    **{name: {"width": 4} for name in models.list_models("resnet*")},
}
SHAPE_OVERRIDES = {("vit_tiny", "image"): (2, 32, 32, 1)}  # vit_digits and vit_tiny fix their sizes
# Each family once in `make test`, where its fast layers are (conv after BatchNorm, the fast LSTM,
# residual blocks): a few seconds of compiling each. Every other (name, kind), the stacked
# bidirectional LSTMs and the 1-D paths included, is marked slow and exhaustive: `make test-all`
# runs them (the deep ResNets alone compile for minutes).
FAST_CASES = {
    ("mlp", "image"), ("cnn", "image"), ("lstm", "signal"), ("resnet20", "image"), ("transformer", "tokens"),
}
# Deeper copies of blocks covered above: one input kind each.
HEAVY = {"resnet32", "resnet44", "resnet56", "resnet110", "resnet34", "resnet101", "resnet152", "vit_tiny"}


def cases():
    for name in models.list_models():
        kinds = models.get_entry(name).input_kinds
        for kind in kinds[:1] if name in HEAVY else kinds:
            yield ((name, kind) if (name, kind) in FAST_CASES
                   else pytest.param(name, kind, marks=[pytest.mark.slow, pytest.mark.exhaustive]))


CASES = list(cases())


def has_fast_layers(name: str) -> bool:
    return "fast_layers" in models.hparam_fields(name)


def random_like(tree, seed: int):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten([jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves)])


def sample(kind: str, shape):
    if kind == "tokens":
        return jax.random.randint(jax.random.key(0), shape, 0, VOCAB_SIZE, dtype=jnp.int32)
    return jax.random.normal(jax.random.key(0), shape, jnp.float32)


def transforms(model, variables, x, directions):
    """(jvp of apply, Hessian-vector product of the loss, vmap of apply over two parameter sets)."""
    d_params, d_x, params_b = directions
    labels = jnp.arange(x.shape[0]) % NUM_CLASSES

    def logits(params, x):
        return model.apply({**variables, "params": params}, x, train=True)[0]

    def loss(params):
        return optax.softmax_cross_entropy_with_integer_labels(logits(params, x), labels).mean()

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
    hparams = dict(HPARAMS.get(name, {}))
    if has_fast_layers(name):
        hparams["fast_layers"] = fast_layers
    return models.build(name, NUM_CLASSES, vocab_size=VOCAB_SIZE, **hparams)


@functools.cache
def results(name: str, kind: str, fast_layers: bool):
    """The three transforms' outputs for one formulation; both formulations share variables
    (initialized by the stock one: the fast LSTM draws its initial weights in another order) and directions."""
    x = sample(kind, SHAPE_OVERRIDES.get((name, kind), SHAPES[kind]))
    variables = build(name, fast_layers=False).init(jax.random.key(1), x)
    model = build(name, fast_layers)
    params = variables["params"]
    directions = (
        random_like(params, 2),
        None if kind == "tokens" else random_like(x, 3),
        jax.tree.map(lambda a, b: a + 0.1 * b, params, random_like(params, 4)),
    )
    run = jax.jit(functools.partial(transforms, model))
    return jax.device_get(run(variables, x, directions))


def assert_agree(name, kind, index):
    actual = results(name, kind, True)[index]
    for leaf in jax.tree.leaves(actual):
        assert np.isfinite(leaf).all()
    if not has_fast_layers(name):
        return  # one formulation only: it runs, and that is the test
    expected = results(name, kind, False)[index]
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
    def shapes(fast_layers):
        model = models.build(name, NUM_CLASSES, **HPARAMS.get(name, {}), fast_layers=fast_layers)
        x = jax.ShapeDtypeStruct(SHAPES["image"], jnp.float32)
        return jax.tree.map(lambda a: a.shape, jax.eval_shape(model.init, jax.random.key(0), x))

    assert shapes(True) == shapes(False)
