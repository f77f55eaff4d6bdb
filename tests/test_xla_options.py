"""Per-family XLA compiler options (zoo.training.step.compiler_options): the chosen CPU defaults give
the same outputs and gradients as XLA's default path (float32 tolerance, as tests/test_fast_layers.py),
and a config's train.xla_options reaches the compiled train, eval and predict functions."""

from __future__ import annotations

import functools
import io

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import TINY, merged, tolerance
from test_models import CHEAP_COMPILE
from zoo import config as config_lib, models
from zoo.models import registry, resnet
from zoo.metrics import Progress
from zoo.inference.loaded import LoadedRun
from zoo.training import build_setup, fit, state as state_lib, step as step_lib

RTOL, ATOL = tolerance(1e-5, 1e-5).values()
YNN = step_lib.YNN_DOT

# Each family's representative, at its test settings.
FAMILY_MODELS = {models.get_entry(name).family: name for name in models.list_models()
                 if models.get_entry(name).test.representative}


# Every (family, options) pair some ISA's defaults name: each is checked on this machine, whatever its ISA.
DEFAULTS = sorted({(family, tuple(sorted(options.items())))
                   for table in step_lib.CPU_FAMILY_OPTIONS_BY_ISA.values() for family, options in table.items()
                   if options})


def test_every_family_with_defaults_has_a_model_here_and_other_backends_get_none():
    assert {family for family, _ in DEFAULTS} <= set(FAMILY_MODELS)
    assert step_lib.cpu_isa() in ("avx512", "avx2", "other")
    for family in FAMILY_MODELS:
        assert step_lib.compiler_options(True, "tpu", family) == {}
        assert step_lib.compiler_options(True, "gpu", family) == {"xla_gpu_deterministic_ops": True}
        assert step_lib.compiler_options(True, "cpu", family) == step_lib.cpu_family_options(family)
        for isa, table in step_lib.CPU_FAMILY_OPTIONS_BY_ISA.items():
            assert step_lib.cpu_family_options(family, isa) == table.get(family, {})
    # A config's mapping replaces the defaults, on any backend ({}: none).
    assert step_lib.compiler_options(True, "cpu", "cnn", {}) == {}
    assert step_lib.compiler_options(True, "tpu", "cnn", YNN) == YNN


@functools.cache
def _model_and_batch(family):
    """The family's representative at its test settings, its variables, and a batch of 8 of its first kind."""
    test = models.get_entry(FAMILY_MODELS[family]).test
    model = models.build(FAMILY_MODELS[family], 10, vocab_size=10, **test.hparams)
    kind, shape = next(iter(test.shapes.items()))
    x = (jax.random.randint(jax.random.key(0), (8, *shape), 0, 10) if kind == "tokens"
         else jax.random.normal(jax.random.key(0), (8, *shape), jnp.float32))
    # Eager, op by op, resnet20's init took 10 s of CPU; compiled cheaply, 1.3 s.
    variables = jax.jit(model.init, compiler_options=CHEAP_COMPILE)(jax.random.key(1), x[:1])
    return model, variables, x, jnp.arange(8) % 10


def _outputs_and_grads(family, options):
    """Loss, logits, gradients (by the input too, unless it is token ids) and eval logits."""
    model, variables, x, y = _model_and_batch(family)

    def loss(params, x):
        logits, _ = model.apply({**variables, "params": params}, x, train=True, rng=jax.random.key(2))
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

    fn = jax.value_and_grad(loss, argnums=(0, 1) if jnp.issubdtype(x.dtype, jnp.floating) else (0,), has_aux=True)
    jitted = jax.jit(fn, compiler_options=options or None)
    text = jitted.lower(variables["params"], x).compile().as_text()
    (value, logits), grads = jitted(variables["params"], x)
    evaluate = jax.jit(lambda v, x: model.apply(v, x, train=False)[0], compiler_options=options or None)
    return text, (value, logits, grads, evaluate(variables, x))


@functools.cache
def _plain_outputs_and_grads(family):
    """XLA's default path, compiled once per family for every option set compared with it."""
    return _outputs_and_grads(family, {})


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the defaults are for the CPU backend")
@pytest.mark.parametrize("family, options", DEFAULTS)
def test_a_familys_default_options_agree_with_xlas_default_path(family, options):
    text, chosen = _outputs_and_grads(family, dict(options))
    plain_text, plain = _plain_outputs_and_grads(family)
    assert text != plain_text  # the option took effect
    assert jax.tree.structure(chosen) == jax.tree.structure(plain)
    for a, b in zip(jax.tree.leaves(chosen), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


# XLA's own CPU defaults, spelled out: this session's XLA_FLAGS (conftest) compile cheaply.
XLA_DEFAULTS = {"xla_backend_optimization_level": 3, "xla_cpu_use_fusion_emitters": True}


def _init_check_model(family):
    """The family's representative at its test settings; for the ResNets a one-block-per-stage
    resnet20 (the same initializers as its 21 convolutions, at a quarter of the compile time)."""
    name = FAMILY_MODELS[family]
    test = models.get_entry(name).test
    if family == "resnet":
        module = resnet.CifarResNet(10, stage_sizes=(1, 1, 1), **test.hparams)
        model = registry.from_module(module, registry.ModelInfo(name, family, "", {}))
    else:
        model = models.build(name, 10, vocab_size=10, **test.hparams)
    kind, shape = next(iter(test.shapes.items()))
    return model, np.zeros((1, *shape), np.int32 if kind == "tokens" else np.float32)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the init options are for the CPU backend")
@pytest.mark.parametrize("family", sorted(FAMILY_MODELS))
def test_a_train_state_made_under_the_init_options_is_bit_identical_to_xlas_default_compile(family):
    model, sample = _init_check_model(family)
    lowered = jax.jit(lambda x: state_lib.create(model, optax.adam(1e-3), 7, x)).lower(sample)
    default = jax.device_get(lowered.compile(compiler_options=XLA_DEFAULTS)(sample))
    options = {**XLA_DEFAULTS, **step_lib.INIT_CPU_OPTIONS}
    chosen = jax.device_get(lowered.compile(compiler_options=options)(sample))
    assert jax.tree.structure(chosen) == jax.tree.structure(default)
    for a, b in zip(jax.tree.leaves(chosen), jax.tree.leaves(default)):
        np.testing.assert_array_equal(a, b)


def test_the_init_options_are_the_cpu_backends_unless_xla_flags_set_the_level(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert step_lib.init_compiler_options("cpu") == step_lib.INIT_CPU_OPTIONS
    assert step_lib.init_compiler_options("gpu") is None and step_lib.init_compiler_options("tpu") is None
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")  # the user's (here: the tests') own level
    assert step_lib.init_compiler_options("cpu") is None


def _config(**train):
    return config_lib.from_dict(merged(TINY, {"train": train}))


def test_train_xla_options_is_validated():
    assert _config().train.xla_options is None
    known = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT", "xla_cpu_multi_thread_eigen": True,
             "xla_cpu_prefer_vector_width": 256}  # only known performance options (step_lib.KNOWN_XLA_OPTIONS)
    assert _config(xla_options=known).train.xla_options == known
    for bad in ({"a": 1.5}, {"a": None}, {"a": [1]}, "LIBRARY_FUSION_TYPE_DOT"):
        with pytest.raises(config_lib.ConfigError, match="train.xla_options"):
            _config(xla_options=bad)


def test_a_configs_xla_options_reach_the_train_step(tmp_path, monkeypatch):
    # allowed here, so that XLA itself (not the allowlist) is what refuses it
    from zoo import config as zoo_config

    monkeypatch.setattr(zoo_config, "KNOWN_XLA_OPTIONS", (*zoo_config.KNOWN_XLA_OPTIONS, "xla_zoo_no_such_option"))
    monkeypatch.setattr(step_lib, "_check_with_xla", lambda options: None)  # past the up-front check
    with pytest.raises(Exception, match="xla_zoo_no_such_option"):
        fit(_config(xla_options={"xla_zoo_no_such_option": True}), tmp_path / "run")


@pytest.mark.parametrize("options, named", [
    ({"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_BOGUS"}, "LIBRARY_FUSION_TYPE_BOGUS"),
    ({"xla_cpu_prefer_vector_width": "wide"}, "'wide' is not a valid int32"),
])
def test_an_option_value_xla_refuses_is_one_config_error_before_the_run_directory_is_made(tmp_path, options, named):
    with pytest.raises(config_lib.ConfigError, match=named) as caught:
        fit(_config(xla_options=options), tmp_path / "run")
    assert "train.xla_options" in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_configs_xla_options_reach_the_eval_and_predict_functions():
    run = build_setup(_config(xla_options=YNN))
    state = run.init_state()
    x, y = run.dataset.x_train[:32], run.dataset.y_train[:32]
    args = (state.params, state.model_state, step_lib.put_batch(run.mesh, x), step_lib.put_batch(run.mesh, y),
            step_lib.put_batch(run.mesh, np.ones(32, np.float32)))
    variables = {"params": state.params, **state.model_state}
    texts = {}  # (eval, predict) modules, compiled with the config's options and with none
    for options in (run.config.train.xla_options, {}):
        eval_step = step_lib.jit_eval_step(run.model, 10, run.mesh, xla_options=options)
        loaded = LoadedRun(None, 0, run.model, variables, _config(xla_options=options), run.spec, {}, 32)
        texts[bool(options)] = (eval_step.lower(*args).compile().as_text(),
                                loaded._predictions.lower(variables, x).compile().as_text())
    # XLA's default already puts some reductions in YNNPACK fusions; the option puts the dots there.
    assert all('"__ynn_fusion"' in a and a != b for a, b in zip(texts[True], texts[False]))


@pytest.mark.slow
def test_a_run_records_its_options_and_a_resume_with_other_options_says_so(tmp_path):
    first = fit(_config(steps=10), tmp_path / "run")
    assert first["xla_options"] == {}
    stream = io.StringIO()
    second = fit(_config(steps=20, xla_options=YNN), tmp_path / "run", Progress(stream, interactive=False))
    assert second["xla_options"] == YNN
    assert f"saved with XLA options {{}}, this run compiles with {YNN}" in stream.getvalue()


@pytest.mark.slow
def test_a_cnn_resumed_under_its_default_options_is_bit_identical(tmp_path):
    """Kill/resume bit-identity (tests/test_reliability.py, on the MLP) holds for a family with CPU
    defaults: a run that loses its last checkpoint and resumes ends with the same bits."""
    import shutil

    from zoo.training.restore import restore

    raw = merged({k: v for k, v in TINY.items() if k != "model"},
                 {"model": {"name": "cnn", "features": [8, 16], "hidden": 32, "norm": "batch"}})
    config = config_lib.from_dict(raw)
    assert fit(config, tmp_path / "straight")["xla_options"] == step_lib.compiler_options(True, family="cnn")
    fit(config, tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "20")
    fit(config, tmp_path / "resumed")
    straight, resumed = (restore(tmp_path / name, 20).state.params for name in ("straight", "resumed"))
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, b)


def test_every_option_of_the_per_family_table_is_on_the_allowlist():
    """The allowlist (zoo.config) names each option the measured per-family defaults set, so a run
    trained with today's defaults can always be continued or evaluated."""
    from zoo import config as zoo_config

    table = {name for isa in step_lib.CPU_FAMILY_OPTIONS_BY_ISA.values() for options in isa.values() for name in options}
    assert table and table <= set(zoo_config.KNOWN_XLA_OPTIONS)
