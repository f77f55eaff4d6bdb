"""Each fast layer in zoo.models.layers computes the same outputs and gradients, from the same
variables, as the straightforward Flax formulation it replaces (float32 tolerance)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import CHEAP_COMPILE
from zoo.models import layers
from conftest import tolerance

RTOL, ATOL = tolerance(1e-5, 1e-5).values()


def assert_trees_close(actual, expected, rtol=RTOL, atol=ATOL):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


def value_and_grads(module, variables, *inputs, rngs=None, **kwargs):
    """Outputs, and gradients wrt every variable and input of sum(sin(outputs)) (sin: no symmetric zeros)."""
    def loss(variables, inputs):
        out = module.apply(variables, *inputs, rngs=rngs, **kwargs)
        return sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(out)), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True),
                              compiler_options=CHEAP_COMPILE)(variables, inputs)
    return out, grads


def normal(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


# --- pooling ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 7, 9, 2), (2, 10, 3), (2, 1, 6, 2)])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_by_reshape_matches_nn_pooling_with_stride_equal_to_window(shape, kind):
    x = normal(shape)
    window = tuple(2 if size > 1 else 1 for size in shape[1:-1])
    flax_pool = {"max": nn.max_pool, "avg": nn.avg_pool}[kind]
    reference = functools.partial(flax_pool, window_shape=window, strides=window, padding="SAME")
    fast = {"max": layers.max_pool, "avg": layers.avg_pool}[kind]
    weights = normal(reference(x).shape, seed=1)
    np.testing.assert_allclose(fast(x), reference(x), rtol=RTOL, atol=ATOL)
    grad = lambda pool: jax.grad(lambda v: jnp.sum(pool(v) * weights))(x)  # noqa: E731
    np.testing.assert_allclose(grad(fast), grad(reference), rtol=RTOL, atol=ATOL)


# --- convolution --------------------------------------------------------------------------------

CONV_CASES = [
    # (input shape, features, kernel, strides, padding)
    ((2, 9, 9, 3), 8, (3, 3), (1, 1), "SAME"),
    ((2, 9, 8, 5), 7, (3, 3), (2, 2), ((1, 1), (1, 1))),
    ((2, 8, 8, 6), 4, (1, 1), (2, 2), "VALID"),
    ((2, 12, 4), 5, (3,), (1,), "SAME"),
    ((2, 28, 28, 1), 4, (3, 3), (1, 1), "SAME"),  # one input channel: layers._shifted_conv's forward
    ((2, 40, 1), 3, (5,), (1,), ((1, 3),)),  # the same in 1-D, asymmetric padding
]


@pytest.mark.slow
@pytest.mark.parametrize("shape,features,kernel,strides,padding", CONV_CASES)
def test_fast_conv_matches_nn_conv_outputs_and_gradients(shape, features, kernel, strides, padding):
    x = normal(shape)
    reference = nn.Conv(features, kernel, strides, padding=padding)
    fast = layers.Conv(features, kernel, strides, padding=padding)
    variables = reference.init(jax.random.key(1), x)
    assert jax.tree.structure(fast.init(jax.random.key(1), x)) == jax.tree.structure(variables)
    assert_trees_close(value_and_grads(fast, variables, x), value_and_grads(reference, variables, x))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the conditionals are CPU-only")
def test_fast_conv_gradient_reads_its_input_and_its_outputs_cotangent_from_buffers_on_cpu():
    """Two conditionals XLA cannot see through (layers._materialize, layers._materialize_tangent):
    one for the activations, one for the cotangent both backward convolutions read. Without the
    second, XLA fuses the cotangent's producers (a pool's or BatchNorm's backward) into each of
    them and computes it twice. Inference has neither."""
    x = normal((2, 9, 9, 3))
    conv = layers.Conv(4, (3, 3))
    variables = conv.init(jax.random.key(1), x)
    grad = jax.grad(lambda v, x: jnp.sum(jnp.sin(conv.apply(v, x))), argnums=(0, 1))
    assert jax.jit(grad).lower(variables, x).compile().as_text().count("conditional(") == 2
    assert "conditional(" not in jax.jit(conv.apply).lower(variables, x).compile().as_text()


@pytest.mark.slow
def test_fast_conv_falls_back_to_lax_for_dilated_and_grouped_convolutions():
    x = normal((2, 9, 9, 4))
    for kwargs in ({"kernel_dilation": (2, 2)}, {"feature_group_count": 2}, {"input_dilation": (2, 2)}):
        reference = nn.Conv(4, (3, 3), padding=((1, 1), (1, 1)), **kwargs)
        variables = reference.init(jax.random.key(1), x)
        fast = layers.Conv(4, (3, 3), padding=((1, 1), (1, 1)), **kwargs)
        assert_trees_close(value_and_grads(fast, variables, x), value_and_grads(reference, variables, x))


@pytest.mark.slow
def test_fast_conv_inside_a_batchnorm_residual_block_matches_flax():
    """The case the fast backward pass exists for: conv inputs produced by BatchNorm + add + ReLU."""

    class Block(nn.Module):
        conv: type

        @nn.compact
        def __call__(self, x):
            y = nn.relu(nn.BatchNorm(use_running_average=False)(self.conv(4, (3, 3), use_bias=False)(x)))
            y = nn.relu(x + nn.BatchNorm(use_running_average=False)(self.conv(4, (3, 3), use_bias=False)(y)))
            return self.conv(4, (3, 3), use_bias=False)(y)

    x = normal((4, 8, 8, 4))
    variables = Block(nn.Conv).init(jax.random.key(1), x)
    expected = value_and_grads(Block(nn.Conv), variables, x, mutable=["batch_stats"])
    actual = value_and_grads(Block(layers.Conv), variables, x, mutable=["batch_stats"])
    assert_trees_close(actual, expected, **tolerance(1e-4, 1e-5))


class ConvReluPool(nn.Module):
    """The reference for layers.ConvMaxPool: the same convolution (layers.Conv, with its bias), ReLU,
    then nn.max_pool; layers.Conv itself is checked against nn.Conv above."""

    features: int

    @nn.compact
    def __call__(self, x):
        window = tuple(2 if size > 1 else 1 for size in x.shape[1:-1])
        y = nn.relu(layers.Conv(self.features, (3,) * (x.ndim - 2), padding="SAME", name="Conv_0")(x))
        return nn.max_pool(y, window, window, padding="SAME")


class FastConvReluPool(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        return nn.relu(layers.ConvMaxPool(self.features, (3,) * (x.ndim - 2), name="Conv_0")(x))


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 7, 9, 2), (2, 11, 3)])
def test_conv_then_pool_with_the_bias_after_the_pool_matches_conv_bias_relu_pool(shape):
    """Same variables (Conv_0/kernel, Conv_0/bias), bit-identical values, gradients to tolerance."""
    x = normal(shape)
    variables = ConvReluPool(5).init(jax.random.key(1), x)
    variables = jax.tree.map(lambda v: v + normal(v.shape, seed=4), variables)  # a non-zero bias
    fast = FastConvReluPool(5)
    assert jax.tree.structure(fast.init(jax.random.key(1), x)) == jax.tree.structure(variables)
    np.testing.assert_array_equal(fast.apply(variables, x), ConvReluPool(5).apply(variables, x))
    assert_trees_close(value_and_grads(fast, variables, x), value_and_grads(ConvReluPool(5), variables, x))


# --- BatchNorm ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(4, 6, 6, 5), (3, 10, 4)])
@pytest.mark.parametrize("train", [True, False])
def test_matmul_batchnorm_matches_nn_batchnorm_outputs_statistics_and_gradients(shape, train):
    x = normal(shape) * 3.0 + 1.0
    kwargs = {"use_running_average": not train, "momentum": 0.9}
    reference, fast = nn.BatchNorm(**kwargs), layers.BatchNorm(**kwargs)
    variables = reference.init(jax.random.key(1), x)
    assert jax.tree.structure(fast.init(jax.random.key(1), x)) == jax.tree.structure(variables)
    channels = shape[-1]
    variables = {"params": {"scale": normal((channels,), seed=5), "bias": normal((channels,), seed=6)},
                 "batch_stats": {"mean": normal((channels,), seed=7), "var": jnp.exp(normal((channels,), seed=8))}}
    assert_trees_close(value_and_grads(fast, variables, x, mutable=["batch_stats"]),
                       value_and_grads(reference, variables, x, mutable=["batch_stats"]),
                       **tolerance(1e-4, 1e-5))


# --- LSTM ---------------------------------------------------------------------------------------


class FlaxLSTM(nn.Module):
    """The reference: nn.RNN over nn.LSTMCell, the cell created here so it is named LSTMCell_0."""

    features: int
    kwargs: tuple = ()

    @nn.compact
    def __call__(self, x):
        return nn.RNN(nn.LSTMCell(self.features), return_carry=True, **dict(self.kwargs))(x)


class FastLSTM(nn.Module):
    features: int
    kwargs: tuple = ()

    @nn.compact
    def __call__(self, x):
        return layers.LSTM(self.features, name="LSTMCell_0", **dict(self.kwargs))(x)


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", [(), (("reverse", True),), (("reverse", True), ("keep_order", True))])
def test_fast_lstm_matches_nn_rnn_of_lstm_cell(kwargs):
    x = normal((3, 7, 5))
    variables = FlaxLSTM(6, kwargs).init(jax.random.key(1), x)
    assert jax.tree.structure(FastLSTM(6, kwargs).init(jax.random.key(1), x)) == jax.tree.structure(variables)
    expected = value_and_grads(FlaxLSTM(6, kwargs), variables, x)
    assert_trees_close(value_and_grads(FastLSTM(6, kwargs), variables, x), expected)


@pytest.mark.slow
def test_fast_lstm_gradients_through_only_the_last_state_match():
    """The classifier's case: the loss reads h_T only, so every per-step output cotangent is zero."""
    x = normal((4, 64, 3))
    variables = FlaxLSTM(16).init(jax.random.key(1), x)

    def grads(module):
        return jax.jit(jax.grad(lambda v: jnp.sum(jnp.sin(module.apply(v, x)[0][1]))))(variables)

    assert_trees_close(grads(FastLSTM(16)), grads(FlaxLSTM(16)))


@pytest.mark.slow
def test_fast_lstm_in_nn_bidirectional_matches_flax():
    class Bi(nn.Module):
        fast: bool

        @nn.compact
        def __call__(self, x):
            if self.fast:
                make = lambda i: layers.LSTM(5, name=f"LSTMCell_{i}")  # noqa: E731
            else:
                make = lambda i: nn.RNN(nn.LSTMCell(5), return_carry=True)  # noqa: E731
            return nn.Bidirectional(make(0), make(1), return_carry=True)(x)

    x = normal((2, 6, 3))
    variables = Bi(False).init(jax.random.key(1), x)
    assert_trees_close(value_and_grads(Bi(True), variables, x), value_and_grads(Bi(False), variables, x))


@pytest.mark.slow
def test_fast_lstm_takes_an_initial_carry_and_time_major_inputs():
    x = normal((6, 2, 3))  # (T, B, C)
    carry = (normal((2, 4), seed=1), normal((2, 4), seed=2))
    reference = nn.RNN(nn.LSTMCell(4), return_carry=True, time_major=True)
    variables = reference.init(jax.random.key(1), x, initial_carry=carry)
    fast = layers.LSTM(4)
    fast_variables = {"params": variables["params"]["cell"]}
    expected = reference.apply(variables, x, initial_carry=carry)
    actual = fast.apply(fast_variables, x, initial_carry=carry, time_major=True)
    assert_trees_close(actual, expected)


# --- forward mode -------------------------------------------------------------------------------


@pytest.mark.slow
def test_fast_conv_jvp_matches_nn_conv():
    x = normal((2, 9, 9, 3))
    variables = nn.Conv(4, (3, 3)).init(jax.random.key(1), x)
    tangents = (jax.tree.map(lambda a: normal(a.shape, seed=2), variables), normal(x.shape, seed=3))

    def jvp(module):
        return jax.jvp(lambda v, x: module.apply(v, x), (variables, x), tangents)

    assert_trees_close(jvp(layers.Conv(4, (3, 3))), jvp(nn.Conv(4, (3, 3))))


@pytest.mark.slow
def test_fast_lstm_jvp_matches_nn_rnn_of_lstm_cell():
    x = normal((3, 7, 5))
    variables = FlaxLSTM(6).init(jax.random.key(1), x)
    tangents = (jax.tree.map(lambda a: normal(a.shape, seed=2), variables), normal(x.shape, seed=3))

    def jvp(module):
        return jax.jvp(lambda v, x: module.apply(v, x), (variables, x), tangents)

    assert_trees_close(jvp(FastLSTM(6)), jvp(FlaxLSTM(6)))
