"""Mixed precision (model.precision: bfloat16): layers compute in bfloat16 through Flax's `dtype`;
parameters, BatchNorm statistics, the attention softmax and the loss stay float32.

Registry-wide checks trace the models (jax.eval_shape, jax.make_jaxpr): no compile, no numbers, so
every registered name is covered in well under a second each. A few families are then run for real.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_models import HPARAM_OVERRIDES, NUM_CLASSES, SHAPE_OVERRIDES, SHAPES, TRACED_ONLY, VOCAB_SIZE, sample
from conftest import CHEAP_COMPILE, all_equations
from zoo import models
from zoo.models import transformer_lm
from zoo.models.transformer_lm import TransformerLM
from zoo.errors import ModelError
from zoo.config import OptimizerConfig
from zoo.training import optim, state as state_lib, step as step_lib

BF16, F32 = jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)
NAMES = models.list_models()
# Deeper or wider copies of an architecture traced elsewhere take seconds each to trace: slow.
EVERY_NAME = [pytest.param(name, marks=pytest.mark.slow) if name in TRACED_ONLY else name for name in NAMES]
# One of each architecture, run with numbers (the others are deeper or wider copies of these).
RUN_FOR_REAL = ["mlp", "cnn", "lenet5", "rnn", "lstm", "gru", "resnet20", "resnet18", "transformer"]


def build(name: str, precision: str = "bfloat16", **hparams):
    """The test-sized model of test_models.py at `precision`, with an abstract input of its first kind."""
    kind = models.get_entry(name).input_kinds[0]
    shape = SHAPE_OVERRIDES.get((name, kind), SHAPES[kind])
    model = models.build(name, NUM_CLASSES, vocab_size=VOCAB_SIZE, precision=precision,
                         **{**HPARAM_OVERRIDES.get(name, {}), **hparams})
    x = jax.ShapeDtypeStruct(shape, jnp.int32 if kind == "tokens" else jnp.float32)
    return model, x, kind


def abstract_variables(model, x):
    return jax.eval_shape(model.init, jax.random.key(0), x)


@functools.cache
def traced(name: str, **hparams) -> tuple:
    """(model, abstract variables, jaxpr of a training apply, its (logits, state) shapes) of the
    bfloat16 model: traced once per model for the registry-wide tests below (the deep ResNets take
    seconds per trace)."""
    model, x, _ = build(name, **hparams)
    variables = abstract_variables(model, x)
    jaxpr, out = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=True, rng=jax.random.key(1)),
                                return_shape=True)(variables, x)
    return model, variables, jaxpr, out


def dtypes(tree) -> set:
    return {leaf.dtype for leaf in jax.tree.leaves(tree)}


def products(jaxpr) -> list[tuple]:
    """Operand dtypes of every matmul and convolution in a jaxpr, sub-jaxprs (scan, custom_jvp,
    pjit) included."""
    return [tuple(var.aval.dtype for var in eqn.invars[:2]) for eqn in all_equations(jaxpr)
            if eqn.primitive.name in ("dot_general", "conv_general_dilated")]


# Registry-wide (traced) ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_models_keep_float32_parameters(name):
    _, variables, _, _ = traced(name)
    assert dtypes(variables["params"]) == {F32}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_models_return_bfloat16_logits(name):
    _, _, _, (logits, _) = traced(name)
    assert logits.dtype == BF16


@pytest.mark.parametrize("name", EVERY_NAME)
def test_every_matmul_and_convolution_of_a_bfloat16_model_multiplies_bfloat16(name):
    """All but attention's probabilities x values, one per encoder block (the softmax stays float32;
    the language model's fast causal attention has one per block of queries), and the two statistics
    matmuls of each fast BatchNorm (layers.BatchNorm: statistics stay float32)."""
    model, variables, jaxpr, _ = traced(name)
    found = products(jaxpr.jaxpr)
    in_float32 = [pair for pair in found if pair != (BF16, BF16)]
    query_blocks = transformer_lm.CAUSAL_QUERY_BLOCKS if models.get_entry(name).module_cls is TransformerLM else 1
    expected = model.info.hparams["depth"] * query_blocks if model.info.family == "transformer" else 0
    if model.info.family == "resnet" and model.info.hparams["fast_layers"]:
        batchnorms = len(jax.tree.leaves(variables["batch_stats"])) // 2  # a mean and a var each
        expected += 2 * batchnorms
        assert all(pair == (F32, F32) for pair in in_float32)
    assert found and len(in_float32) == expected, in_float32


@pytest.mark.parametrize("name", [n for n in EVERY_NAME if "norm" in models.hparam_fields(getattr(n, "values", [n])[0])
                                  or models.get_entry(getattr(n, "values", [n])[0]).family == "resnet"])
def test_bfloat16_batchnorm_statistics_stay_float32_after_a_training_step(name):
    hparams = {"norm": "batch"} if "norm" in models.hparam_fields(name) else {}
    _, variables, _, (_, state) = traced(name, **hparams)
    assert state["batch_stats"] and dtypes(state["batch_stats"]) == {F32}
    assert dtypes(variables["batch_stats"]) == {F32}


# Numbers ---------------------------------------------------------------------------------------------

def test_attention_softmax_is_computed_in_float32(monkeypatch):
    """Every softmax of a bfloat16 transformer's attention takes float32 logits."""
    model, x, _ = build("transformer")
    variables = abstract_variables(model, x)
    seen, softmax = [], jax.nn.softmax
    monkeypatch.setattr(jax.nn, "softmax", lambda x, *args, **kw: seen.append(x.dtype) or softmax(x, *args, **kw))
    jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
    assert len(seen) == model.info.hparams["depth"] and set(seen) == {F32}


@pytest.mark.slow
@pytest.mark.parametrize("name", [name if models.get_entry(name).test.representative
                                  else pytest.param(name, marks=pytest.mark.exhaustive) for name in RUN_FOR_REAL])
def test_bfloat16_logits_are_the_float32_logits_to_bfloat16_accuracy(name):
    """Computed for real on one model per family in `make test` (the others: `make test-all`); every
    model's bfloat16 products are checked by tracing above."""
    _, x, kind = build(name)
    x = sample(kind, x.shape)
    reference, _, _ = build(name, "float32")
    variables = jax.jit(reference.init, compiler_options=CHEAP_COMPILE)(jax.random.key(0), x)
    low, _, _ = build(name)
    expected = jax.jit(lambda v, x: reference.apply(v, x)[0], compiler_options=CHEAP_COMPILE)(variables, x)
    got = jax.jit(lambda v, x: low.apply(v, x)[0], compiler_options=CHEAP_COMPILE)(variables, x)
    scale = float(jnp.max(jnp.abs(expected)))
    # bfloat16 keeps 8 bits of mantissa (relative error 2^-9 per rounding); a few layers compound it.
    np.testing.assert_allclose(np.asarray(got, np.float32), expected, rtol=0, atol=0.05 * scale + 1e-3)


@pytest.mark.slow
def test_the_training_loss_and_metrics_of_a_bfloat16_model_are_float32():
    model = models.build("mlp", NUM_CLASSES, hidden_sizes=(8,), norm="batch", precision="bfloat16")
    tx = optim.make_optimizer(OptimizerConfig(), 10)
    x, y = sample("image", (4, 8, 8, 1)), jnp.arange(4) % NUM_CLASSES
    train_state = state_lib.create(model, tx, 0, x[:1])
    step = step_lib.train_step_fn(model, tx, NUM_CLASSES)
    new_state, metrics = jax.jit(step)(train_state, x, y)
    assert metrics["loss"].dtype == F32 and np.isfinite(float(metrics["loss"]))
    assert dtypes(new_state.params) == {F32} and dtypes(new_state.opt_state) <= {F32, jnp.dtype(jnp.int32)}


@pytest.mark.slow
def test_the_loss_is_computed_from_float32_logits():
    """Cross-entropy of bfloat16 logits equals that of the same logits in float32, bit for bit."""
    logits = jax.random.normal(jax.random.key(0), (8, 10)).astype(jnp.bfloat16)
    labels = jnp.arange(8)
    low = step_lib.cross_entropy(logits, labels, 10)
    assert low.dtype == F32
    np.testing.assert_array_equal(low, step_lib.cross_entropy(logits.astype(jnp.float32), labels, 10))


# Configuration -------------------------------------------------------------------------------------

def test_an_unknown_precision_is_refused_naming_the_choices():
    with pytest.raises(ModelError, match=r"model 'cnn': model\.precision: 'bf16' is not valid: .*'float32', "
                                         r"'bfloat16'"):
        models.build("cnn", NUM_CLASSES, precision="bf16")


def test_precision_is_a_hyperparameter_of_every_registered_model():
    assert all(models.hparam_fields(name)["precision"] == "float32" for name in NAMES)


def test_set_model_precision_on_the_command_line_is_refused_in_one_line_when_unknown(
        write_config, zoo_main, one_line_error, tmp_path):
    status, _, err = zoo_main("train", write_config(), "--workdir", tmp_path / "run", "--set",
                              "model.precision=float16")
    assert status == 2
    one_line_error(err, "model.precision", "'float16' is not valid", "'bfloat16'")


def test_zoo_bench_passes_the_precision_to_the_benchmark(monkeypatch):
    import subprocess

    from zoo import cli

    seen = []
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: seen.append(command) or
                        subprocess.CompletedProcess(command, 0))
    assert cli.main(["bench", "--workloads", "mlp", "--quick", "--precision", "bfloat16", "--out", ""]) == 0
    command = seen[0]
    assert command[command.index("--precision") + 1] == "bfloat16"
