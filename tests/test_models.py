"""The model registry: every registered name, on every input kind it lists, initializes, runs and trains."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from zoo import models
from zoo.errors import ModelError
from zoo.models.cnn import max_pool

NUM_CLASSES = 3
VOCAB_SIZE = 20
SHAPES = {"image": (2, 8, 8, 1), "signal": (2, 40, 1), "tokens": (2, 12)}
# Where the small default input cannot work (a 16x16 patch needs a bigger image).
SHAPE_OVERRIDES = {("vit_tiny", "image"): (1, 32, 32, 3)}
# Narrow versions of heavy models, and switches that exercise more code paths; a name missing here
# is tested with its defaults.
HPARAM_OVERRIDES = {
    "mlp": {"hidden_sizes": (16, 16), "norm": "batch", "dropout": 0.1},
    "cnn": {"features": (4, 8), "hidden": 16, "norm": "batch", "dropout": 0.1},
    "rnn": {"hidden_size": 8, "num_layers": 2, "bidirectional": True, "dropout": 0.1},
    "lstm": {"hidden_size": 8},
    "gru": {"hidden_size": 8},
    "transformer": {"width": 16, "num_heads": 2, "patch_size": 2, "pool": "cls", "dropout": 0.1},
    **{f"resnet{d}": {"width": 4} for d in (20, 32, 44, 56, 110)},
    **{f"resnet{d}": {"width": 4} for d in (18, 34, 50, 101, 152)},
}

CASES = [(name, kind) for name in models.list_models() for kind in models.get_entry(name).input_kinds]


def sample(kind: str, shape, seed: int = 0):
    """A random batch of the given kind."""
    key = jax.random.key(seed)
    if kind == "tokens":
        return jax.random.randint(key, shape, 0, VOCAB_SIZE, dtype=jnp.int32)
    return jax.random.normal(key, shape, jnp.float32)


@functools.cache
def built(name: str, kind: str):
    """(model, x, variables) for a registry case; cached so the per-behaviour tests share one init."""
    model = models.build(name, NUM_CLASSES, vocab_size=VOCAB_SIZE, **HPARAM_OVERRIDES.get(name, {}))
    x = sample(kind, SHAPE_OVERRIDES.get((name, kind), SHAPES[kind]))
    return model, x, model.init(jax.random.key(1), x)


def loss_fn(model, variables, x, rng):
    """Mean cross-entropy against fixed labels, in train mode."""
    def loss(params):
        logits, _ = model.apply({**variables, "params": params}, x, train=True, rng=rng)
        labels = jnp.arange(x.shape[0]) % NUM_CLASSES
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return loss


@pytest.mark.parametrize("name,kind", CASES)
def test_eval_apply_gives_finite_logits_per_example_and_class(name, kind):
    model, x, variables = built(name, kind)
    logits, _ = model.apply(variables, x, train=False)
    assert logits.shape == (x.shape[0], NUM_CLASSES)
    assert np.isfinite(logits).all()


@pytest.mark.parametrize("name,kind", CASES)
def test_train_apply_returns_logits_and_every_state_collection(name, kind):
    model, x, variables = built(name, kind)
    logits, state = model.apply(variables, x, train=True, rng=jax.random.key(2))
    assert logits.shape == (x.shape[0], NUM_CLASSES)
    assert set(state) == set(variables) - {"params"}


@pytest.mark.parametrize("name,kind", CASES)
def test_loss_gradients_are_finite_and_not_all_zero(name, kind):
    model, x, variables = built(name, kind)
    grads = jax.grad(loss_fn(model, variables, x, jax.random.key(3)))(variables["params"])
    leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(grads)]
    assert all(np.isfinite(leaf).all() for leaf in leaves)
    assert any(np.abs(leaf).max() > 0 for leaf in leaves)


@pytest.mark.parametrize("name", models.list_models())
def test_token_input_without_vocab_size_raises_model_error(name):
    if "tokens" not in models.get_entry(name).input_kinds:
        pytest.skip("takes no tokens")
    model = models.build(name, NUM_CLASSES)
    with pytest.raises(ModelError, match="vocab_size"):
        model.init(jax.random.key(0), sample("tokens", SHAPES["tokens"]))


@pytest.mark.parametrize(
    "name,expected", [("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032)]
)
def test_imagenet_resnet_param_count_equals_torchvision(name, expected):
    assert models.param_count(models.build(name, 1000), (224, 224, 3)) == expected


def test_vit_tiny_param_count_equals_timm_vit_tiny_patch16_224():
    assert models.param_count(models.build("vit_tiny", 1000), (224, 224, 3)) == 5_717_416


def test_resnet20_has_about_0_27m_params():
    assert 260_000 <= models.param_count(models.build("resnet20", 10), (32, 32, 3)) <= 280_000


def test_small_input_resnet_uses_a_3x3_stride_1_stem_without_max_pool():
    model = models.build("resnet18", NUM_CLASSES, small_input=True, width=4)
    variables = model.init(jax.random.key(0), sample("image", (1, 8, 8, 1)))
    assert variables["params"]["Conv_0"]["kernel"].shape == (3, 3, 1, 4)
    assert "max_pool" not in str(jax.make_jaxpr(lambda v: model.apply(v, jnp.ones((1, 8, 8, 1))))(variables))


def test_batchnorm_running_stats_change_after_train_apply():
    model, x, variables = built("resnet20", "image")
    _, state = model.apply(variables, x, train=True, rng=jax.random.key(0))
    before, after = jax.tree_util.tree_leaves(variables["batch_stats"]), jax.tree_util.tree_leaves(state)
    assert any(not np.allclose(b, a) for b, a in zip(before, after))


def test_eval_apply_returns_state_unchanged():
    model, x, variables = built("resnet20", "image")
    _, state = model.apply(variables, x, train=False)
    assert jax.tree_util.tree_all(
        jax.tree.map(np.array_equal, state, {"batch_stats": variables["batch_stats"]})
    )


def dropout_mlp():
    """An MLP whose dropout is wide enough that two masks never agree."""
    model = models.build("mlp", NUM_CLASSES, hidden_sizes=(64,), dropout=0.5)
    x = sample("image", SHAPES["image"])
    return model, x, model.init(jax.random.key(0), x)


def test_eval_output_is_deterministic_with_dropout():
    model, x, variables = dropout_mlp()
    first, _ = model.apply(variables, x, train=False, rng=jax.random.key(1))
    second, _ = model.apply(variables, x, train=False, rng=jax.random.key(2))
    np.testing.assert_array_equal(first, second)


def test_train_outputs_differ_with_different_dropout_rngs():
    model, x, variables = dropout_mlp()
    first, _ = model.apply(variables, x, train=True, rng=jax.random.key(1))
    second, _ = model.apply(variables, x, train=True, rng=jax.random.key(2))
    assert not np.allclose(first, second)


def test_unknown_model_name_raises_model_error_with_a_suggestion():
    with pytest.raises(ModelError, match="did you mean 'resnet20'"):
        models.build("resnet21", NUM_CLASSES)


def test_unknown_hyperparameter_raises_model_error():
    with pytest.raises(ModelError, match="no hyperparameter 'widht'"):
        models.build("transformer", NUM_CLASSES, widht=32)


def test_hyperparameter_fixed_by_a_name_cannot_be_overridden():
    with pytest.raises(ModelError, match="no hyperparameter 'cell'"):
        models.build("lstm", NUM_CLASSES, cell="gru")


def test_invalid_choice_raises_model_error_naming_the_choices():
    with pytest.raises(ModelError, match="activation must be one of relu, gelu, tanh, silu"):
        models.build("mlp", NUM_CLASSES, activation="sigmoid")


def test_input_of_unsupported_rank_raises_model_error():
    model = models.build("cnn", NUM_CLASSES)
    with pytest.raises(ModelError, match="model 'cnn' takes image"):
        model.init(jax.random.key(0), jnp.zeros((2, 64)))


def test_patches_larger_than_the_image_raise_model_error():
    model = models.build("vit_tiny", NUM_CLASSES)
    with pytest.raises(ModelError, match="patch_size 16"):
        model.init(jax.random.key(0), sample("image", SHAPES["image"]))


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 7, 5, 3), (2, 1, 6, 2), (2, 9, 4)])
def test_max_pool_by_reshape_matches_nn_max_pool(shape):
    x = sample("image", shape)
    window = tuple(1 if size == 1 else 2 for size in shape[1:-1])
    reference = functools.partial(nn.max_pool, window_shape=window, strides=window, padding="SAME")
    weights = sample("image", reference(x).shape, seed=1)
    np.testing.assert_allclose(max_pool(x), reference(x), rtol=1e-6)
    grad = jax.grad(lambda v: (max_pool(v) * weights).sum())(x)
    grad_reference = jax.grad(lambda v: (reference(v) * weights).sum())(x)
    np.testing.assert_allclose(grad, grad_reference, rtol=1e-6)
