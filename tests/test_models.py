"""The model registry: every registered name, on every input kind it lists, initializes, runs and trains."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import CHEAP_COMPILE
from zoo import models
from zoo.errors import ModelError
from zoo.models.common import TEST_SHAPES

NUM_CLASSES = 3
VOCAB_SIZE = 20
BATCH = 2
NAMES = models.list_models()
# Tests of the maths, not of the speed of the code, compile without LLVM's optimizations and with
# XLA's elemental CPU fusion emitters: a quarter of the compile time (resnet20's transforms in
# tests/test_autodiff.py: 17 -> 4 s of CPU). The numbers are the same: neither allows fast math.


def entry(name: str):
    return models.get_entry(name)


def batch_shape(name: str, kind: str) -> tuple:
    """A test batch's shape: BATCH examples of the entry's test shape for the kind."""
    return (BATCH, *entry(name).test.shapes[kind])


def numeric_kinds(name: str) -> list[str]:
    """Its first input kind, and the first of its test settings (the one the transform checks of
    `make test` run) where that is another."""
    return list(dict.fromkeys((entry(name).input_kinds[0], next(iter(entry(name).test.shapes)))))


# A `traced_only` entry (below) is traced on its first kind in `make test`, on the others in `make
# test-all`: the other kinds change only the input adapter, traced on every kind of the entries
# whose blocks it repeats (a deep ResNet's trace takes 1-4 s per kind).
CASES = [(name, kind) if not entry(name).test.traced_only or kind == entry(name).input_kinds[0]
         else pytest.param(name, kind, marks=pytest.mark.exhaustive)
         for name in NAMES for kind in entry(name).input_kinds]
# Running a model costs a compile (one jitted call: 1-13 s on 2 cores); tracing it, almost nothing.
# So every kind of every name is traced (shapes, collections), and numbers (finite logits, finite
# non-zero gradients) are computed on its numeric kinds, except for names whose test settings say
# `traced_only`: deeper or wider copies of an architecture computed here already (the same blocks,
# more of them), which would cost seconds each. (Eager, op by op, took 108 s for this file against
# 84 s jitted.)
NUMERIC_CASES = [(name, kind) for name in NAMES if not entry(name).test.traced_only for kind in numeric_kinds(name)]

# tests/test_precision.py builds the same test-sized models from these views of the test settings.
SHAPES = {kind: (BATCH, *example) for kind, example in TEST_SHAPES.items()}
SHAPE_OVERRIDES = {(name, kind): batch_shape(name, kind) for name in NAMES for kind in entry(name).test.shapes}
HPARAM_OVERRIDES = {name: entry(name).test.hparams for name in NAMES}
TRACED_ONLY = {name for name in NAMES if entry(name).test.traced_only}


def key(seed: int):
    """A PRNG key of the 'rbg' kind: threefry's bits take ~0.3 s to compile per shape, rbg's little."""
    return jax.random.key(seed, impl="rbg")


def sample(kind: str, shape, seed: int = 0):
    """A random batch of the given kind."""
    if kind == "tokens":
        return jax.random.randint(key(seed), shape, 0, VOCAB_SIZE, dtype=jnp.int32)
    return jax.random.normal(key(seed), shape, jnp.float32)


def logits_shape(name: str, x_shape: tuple, classes: int = NUM_CLASSES) -> tuple:
    """(B, classes) for a classifier; (B, T, classes) for a language model: a logit vector at every
    position of its token window (Entry.tasks holds "lm"; issue 24)."""
    return (*x_shape[:2], classes) if "lm" in entry(name).tasks else (x_shape[0], classes)


def integer_labels(logits, classes: int = NUM_CLASSES):
    """Class ids shaped like `logits` without its class axis: one per example, or one per position."""
    return jnp.arange(int(np.prod(logits.shape[:-1]))).reshape(logits.shape[:-1]) % classes


def build(name: str, kind: str):
    """The test-sized model (its entry's test hyperparameters) and input shape for a case."""
    model = models.build(name, NUM_CLASSES, vocab_size=VOCAB_SIZE, **entry(name).test.hparams)
    return model, batch_shape(name, kind)


class Run(NamedTuple):
    """What the registry-wide tests look at, for one (name, kind)."""

    x: jax.Array
    variables: dict
    eval_logits: jax.Array
    eval_state: dict
    train_logits: jax.Array
    train_state: dict
    grads: dict


@functools.cache
def trace(name: str, kind: str) -> Run:
    """Shapes only: init, an eval apply and a train apply traced with jax.eval_shape (grads: None)."""
    model, shape = build(name, kind)
    x = jax.ShapeDtypeStruct(shape, jnp.int32 if kind == "tokens" else jnp.float32)
    variables = jax.eval_shape(model.init, key(1), x)
    eval_logits, eval_state = jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
    train = functools.partial(model.apply, train=True, rng=key(2))
    train_logits, train_state = jax.eval_shape(train, variables, x)
    return Run(x, variables, eval_logits, eval_state, train_logits, train_state, None)


@functools.cache
def run(name: str, kind: str) -> Run:
    """Init, an eval apply and a train step's loss gradients, computed in one jitted call."""
    model, shape = build(name, kind)
    x = sample(kind, shape)

    def compute(x):
        variables = model.init(key(1), x)
        eval_logits, eval_state = model.apply(variables, x, train=False)
        labels = integer_labels(eval_logits)

        def loss(params):
            logits, state = model.apply({**variables, "params": params}, x, train=True, rng=key(2))
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), (logits, state)

        (_, (train_logits, train_state)), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
        return variables, eval_logits, eval_state, train_logits, train_state, grads

    return Run(x, *jax.jit(compute, compiler_options=CHEAP_COMPILE)(x))


@pytest.mark.slow
@pytest.mark.parametrize("name,kind", CASES)
def test_init_creates_params(name, kind):
    assert jax.tree_util.tree_leaves(trace(name, kind).variables["params"])


@pytest.mark.slow
@pytest.mark.parametrize("name,kind", CASES)
def test_eval_apply_gives_float_logits_per_example_and_class(name, kind):
    result = trace(name, kind)
    assert result.eval_logits.shape == logits_shape(name, result.x.shape)
    assert result.eval_logits.dtype == jnp.float32


@pytest.mark.slow
@pytest.mark.parametrize("name,kind", CASES)
def test_train_apply_returns_logits_and_every_state_collection(name, kind):
    result = trace(name, kind)
    assert result.train_logits.shape == logits_shape(name, result.x.shape)
    assert set(result.train_state) == set(result.variables) - {"params"}


@pytest.mark.slow
@pytest.mark.parametrize("name,kind", NUMERIC_CASES)
def test_eval_and_train_logits_are_finite(name, kind):
    result = run(name, kind)
    assert np.isfinite(result.eval_logits).all() and np.isfinite(result.train_logits).all()


@pytest.mark.slow
@pytest.mark.parametrize("name,kind", NUMERIC_CASES)
def test_loss_gradients_are_finite_and_not_all_zero(name, kind):
    leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(run(name, kind).grads)]
    assert all(np.isfinite(leaf).all() for leaf in leaves)
    assert any(np.abs(leaf).max() > 0 for leaf in leaves)


@pytest.mark.slow
def test_batchnorm_running_stats_change_after_a_train_apply():
    result = run("resnet20", "image")
    before = jax.tree_util.tree_leaves(result.variables["batch_stats"])
    after = jax.tree_util.tree_leaves(result.train_state["batch_stats"])
    assert any(not np.allclose(b, a) for b, a in zip(before, after))


@pytest.mark.slow
def test_eval_apply_returns_state_unchanged():
    result = run("resnet20", "image")
    expected = {"batch_stats": result.variables["batch_stats"]}
    assert jax.tree_util.tree_all(jax.tree.map(np.array_equal, result.eval_state, expected))


@pytest.mark.parametrize("name", NAMES)
def test_token_input_without_vocab_size_raises_model_error(name):
    if "tokens" not in entry(name).input_kinds:
        pytest.skip("takes no tokens")
    model = models.build(name, NUM_CLASSES)
    with pytest.raises(ModelError, match="vocab_size"):
        model.init(key(0), sample("tokens", batch_shape(name, "tokens")))


def test_every_family_has_exactly_one_representative_in_the_fast_tests():
    """A family without one would drop out of `make test-fast` unnoticed; two would double its cost."""
    representatives = {family: [] for family in {entry(name).family for name in NAMES}}
    for name in NAMES:
        if entry(name).test.representative:
            representatives[entry(name).family].append(name)
    assert {family: len(names) for family, names in representatives.items()} == dict.fromkeys(representatives, 1), (
        f"set TestSettings(representative=True) on exactly one entry per family: {representatives}")


def test_every_entrys_test_settings_give_a_shape_for_each_of_its_input_kinds_and_only_those():
    assert {name: set(entry(name).test.shapes) for name in NAMES} == {
        name: set(entry(name).input_kinds) for name in NAMES}


@pytest.mark.parametrize(
    "name,expected", [("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032)]
)
def test_imagenet_resnet_param_count_equals_torchvision(name, expected):
    assert models.param_count(models.build(name, 1000), (224, 224, 3)) == expected


def test_vit_tiny_param_count_equals_timm_vit_tiny_patch16_224():
    assert models.param_count(models.build("vit_tiny", 1000), (224, 224, 3)) == 5_717_416


@pytest.mark.parametrize("shortcut,expected", [("projection", 272_474), ("identity_pad", 269_722)])
def test_resnet20_param_count_is_pinned_for_each_shortcut(shortcut, expected):
    """Issue 25: resnet20 at 32x32x3, 10 classes: 1x1 projections (the default) and the paper's
    option A (He et al. 2016: 0.27M; 269,722 in akamaster/pytorch_resnet_cifar10)."""
    count = models.param_count(models.build("resnet20", 10, shortcut=shortcut), (32, 32, 3))
    assert count == expected and round(count / 1e6, 2) == 0.27


def test_identity_pad_shortcut_is_the_subsampled_input_with_zero_padded_channels():
    """Issue 25, option A: a shape-changing shortcut without parameters: every 2nd position along each
    spatial axis, the new channels zeros, half before the input's channels and half after."""
    from zoo.models import resnet

    x = jnp.arange(2 * 5 * 5 * 4, dtype=jnp.float32).reshape(2, 5, 5, 4)
    out = resnet.shortcut(None, None, x, 8, 2, train=False, kind="identity_pad")
    assert out.shape == (2, 3, 3, 8)
    np.testing.assert_array_equal(out[..., 2:6], x[:, ::2, ::2, :])
    assert not np.any(out[..., :2]) and not np.any(out[..., 6:])
    signal = resnet.shortcut(None, None, x[:, 0], 6, 2, train=False, kind="identity_pad")  # 1-D: (B, L, C)
    np.testing.assert_array_equal(signal[..., 1:5], x[:, 0, ::2, :])


def test_small_input_resnet_has_a_3x3_stride_1_stem_and_no_max_pool():
    model = models.build("resnet18", NUM_CLASSES, small_input=True, width=4)
    x = jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)
    variables = jax.eval_shape(model.init, key(0), x)
    assert variables["params"]["Conv_0"]["kernel"].shape == (3, 3, 1, 4)
    assert "reduce_window_max" not in str(jax.make_jaxpr(model.apply)(variables, x))


def dropout_mlp():
    """An MLP whose dropout is wide enough that two masks never agree."""
    model = models.build("mlp", NUM_CLASSES, hidden_sizes=(64,), dropout=0.5)
    x = sample("image", SHAPES["image"])
    return model, x, model.init(key(0), x)


@pytest.mark.slow
def test_eval_output_is_deterministic_with_dropout():
    model, x, variables = dropout_mlp()
    first, _ = model.apply(variables, x, train=False, rng=key(1))
    second, _ = model.apply(variables, x, train=False, rng=key(2))
    np.testing.assert_array_equal(first, second)


def test_train_outputs_differ_with_different_dropout_rngs():
    model, x, variables = dropout_mlp()
    first, _ = model.apply(variables, x, train=True, rng=key(1))
    second, _ = model.apply(variables, x, train=True, rng=key(2))
    assert not np.allclose(first, second)


def test_unknown_model_name_raises_model_error_with_a_suggestion():
    with pytest.raises(ModelError, match="unknown model 'resnet2'.*did you mean"):
        models.build("resnet2", NUM_CLASSES)


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
        model.init(key(0), jnp.zeros((2, 64)))


def test_errors_name_the_registered_model_not_its_family():
    model = models.build("vit_tiny", NUM_CLASSES)
    with pytest.raises(ModelError, match="model 'vit_tiny' with patch_size 16"):
        model.init(key(0), sample("image", SHAPES["image"]))


def test_ill_typed_hyperparameter_raises_model_error_naming_the_key():
    with pytest.raises(ModelError, match=r"model 'cnn': model\.features\[1\]: expected an integer"):
        models.build("cnn", NUM_CLASSES, features=[4, "8"])


def test_hyperparameter_lists_become_tuples_and_ints_become_floats():
    hparams = models.build("mlp", NUM_CLASSES, hidden_sizes=[4, 5], dropout=0).info.hparams
    assert hparams["hidden_sizes"] == (4, 5) and isinstance(hparams["dropout"], float)


@pytest.mark.slow
def test_exact_gelu_keeps_the_parameter_count_and_changes_the_logits():
    x = sample("image", SHAPES["image"])
    tanh_gelu = models.build("vit_digits", NUM_CLASSES)
    exact_gelu = models.build("vit_digits", NUM_CLASSES, activation="gelu_exact")
    variables = tanh_gelu.init(key(0), x)
    assert models.count_params(exact_gelu.init(key(0), x)) == models.count_params(variables)
    assert not np.allclose(tanh_gelu.apply(variables, x)[0], exact_gelu.apply(variables, x)[0], rtol=0, atol=1e-7)
