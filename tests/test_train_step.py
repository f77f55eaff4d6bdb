"""The jitted train step and the optimizer pieces around it: donation, the rows each process puts
on the devices, BatchNorm statistics, XLA options by family, step counting, clipping, frozen parameters.
Each test names the mutant it kills in its docstring (found by tools/mutation.py)."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from zoo import models
from zoo.config import OptimizerConfig
from zoo.errors import ConfigError
from zoo.training import optim, state as state_lib, step as step_lib


NUM_CLASSES = 10


def small_run(model_name: str = "mlp", **hparams):
    """(model, tx, mesh, replicated state, x, y) for a 12-feature batch of 8."""
    model = models.build(model_name, NUM_CLASSES, **({"hidden_sizes": (8,)} | hparams))
    tx = optim.make_optimizer(OptimizerConfig(name="adam", learning_rate=1e-3, schedule="constant"), 10)
    mesh = step_lib.make_mesh()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 12)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, size=8).astype(np.int32)
    state = jax.jit(lambda x: state_lib.create(model, tx, 0, x), out_shardings=step_lib.replicated(mesh))(x[:1])
    return model, tx, mesh, state, x, y


def test_the_jitted_train_step_donates_the_state_it_was_given():
    """zoo.training.step.x_jit_train_step__mutmut_33 (donate_argnums dropped: two copies of the state
    and optimizer moments live at once)."""
    model, tx, mesh, state, x, y = small_run()
    step = step_lib.jit_train_step(model, tx, NUM_CLASSES, 0.0, mesh)
    new_state, _ = step(state, step_lib.put_batch(mesh, x), step_lib.put_batch(mesh, y))
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(state))
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(new_state))


@pytest.mark.parametrize("leading_axes", [0, 1])
def test_with_two_processes_put_batch_hands_jax_this_processs_rows_of_the_global_batch(monkeypatch, leading_axes):
    """zoo.training.step.x_put_batch__mutmut_20, _23 and _24 (the rows were taken from the flattened batch,
    or from its start): process 1 of 2 gives the second half of the batch axis, K steps stacked or not."""
    given = {}
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    monkeypatch.setattr(jax, "make_array_from_process_local_data",
                        lambda sharding, local, shape: given.update(local=local, shape=shape))
    batch = np.arange(3 * 8 * 2).reshape(3, 8, 2) if leading_axes else np.arange(8 * 2).reshape(8, 2)
    step_lib.put_batch(step_lib.make_mesh(), batch, leading_axes)
    want = batch[:, 4:] if leading_axes else batch[4:]
    np.testing.assert_array_equal(given["local"], want)
    assert given["shape"] == batch.shape


def test_a_train_step_carries_the_batchnorm_running_statistics_forward():
    """zoo.training.step.x_train_step_fn__mutmut_106 (the step dropped the updated model state: BatchNorm's
    running mean and variance stayed at their initial 0 and 1, so eval used the wrong statistics)."""
    model, tx, mesh, state, x, y = small_run("mlp", norm="batch")
    step = jax.jit(step_lib.train_step_fn(model, tx, NUM_CLASSES))
    new_state, _ = step(state, x * 3.0 + 1.0, y)
    _, expected = model.apply({"params": state.params, **state.model_state}, x * 3.0 + 1.0, train=True,
                              rng=jax.random.key(0))
    for got, want in zip(jax.tree.leaves(new_state.model_state), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not np.allclose(jax.tree.leaves(new_state.model_state)[0], jax.tree.leaves(state.model_state)[0])


def test_the_family_of_a_built_model_picks_its_xla_options():
    """zoo.training.step.x_family_of__mutmut_12 (no model had a family: CNNs and ResNets lost their options)."""
    assert [step_lib.family_of(models.build(name, NUM_CLASSES)) for name in ("mlp", "cnn", "resnet20", "lstm")] == [
        "dnn", "cnn", "resnet", "rnn"]
    assert step_lib.family_of(object()) is None


def test_a_new_train_state_counts_steps_in_int32_from_zero():
    """zoo.training.state.x_create__mutmut_24 (a float32 step count: exact only up to 2**24 steps)."""
    _, _, _, state, _, _ = small_run()
    assert state.step.dtype == np.int32 and int(state.step) == 0


def test_clip_norm_scales_the_gradient_to_that_global_norm_before_the_update_rule():
    """zoo.training.optim.x_make_optimizer__mutmut_45 (the chain lost its update rule)."""
    tx = optim.make_optimizer(OptimizerConfig(name="sgd", learning_rate=0.5, momentum=0.0, schedule="constant",
                                              clip_norm=1.0), 10)
    params = {"a": np.zeros(3, np.float32), "b": np.zeros(4, np.float32)}
    grads = {"a": np.full(3, 3.0, np.float32), "b": np.full(4, 4.0, np.float32)}  # global norm 10
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["a"], -0.5 * grads["a"] / np.sqrt(3 * 9 + 4 * 16), rtol=1e-6)
    np.testing.assert_allclose(updates["b"], -0.5 * grads["b"] / np.sqrt(3 * 9 + 4 * 16), rtol=1e-6)


def test_a_parameter_path_names_list_positions_by_their_index():
    """zoo.training.optim.x_param_path__mutmut_18 (a list position printed as '[0]', so 'layers/0/*'
    patterns matched nothing)."""
    paths = [optim.param_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(
        {"layers": [{"kernel": 1}, {"kernel": 2}], "head": (3,)})]
    assert paths == ["head/0", "layers/0/kernel", "layers/1/kernel"]


def test_a_frozen_pattern_keeps_its_parameters_and_trains_the_rest():
    """zoo.training.optim.x_with_frozen__mutmut_14 (the labels ignored the patterns)."""
    params = {"Dense_0": {"kernel": np.ones((2, 2), np.float32)}, "Dense_1": {"kernel": np.ones((2, 2), np.float32)}}
    grads = jax.tree.map(np.ones_like, params)
    tx = optim.with_frozen(optax.sgd(0.1), ["Dense_0"])
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(updates["Dense_0"]["kernel"], 0.0)
    np.testing.assert_allclose(updates["Dense_1"]["kernel"], -0.1)


def test_a_pattern_that_matches_no_parameter_is_refused_naming_the_models_modules():
    """zoo.training.optim.x_check_patterns__mutmut_6 (every pattern was checked against nothing)."""
    params = {"Dense_0": {"kernel": 0}, "Conv_0": {"bias": 0}}
    optim.check_patterns(params, ["Dense_0", "Conv_*/bias"], "train.freeze")
    with pytest.raises(ConfigError, match=r"train.freeze: pattern 'Dense_9' matches no parameter .* Conv_0, Dense_0"):
        optim.check_patterns(params, ["Dense_9"], "train.freeze")


def test_the_compiled_train_step_takes_the_configs_deterministic_setting(monkeypatch):
    """zoo.training.loop.xǁCompiledStepsǁget__mutmut_10 (train.deterministic was dropped: on a GPU the train
    step compiled without deterministic ops)."""
    import inspect
    from types import SimpleNamespace as NS

    from zoo.training import loop

    real, asked = step_lib.jit_train_step, []

    class Jitted:
        def lower(self, *args):
            return NS(compile=lambda: "compiled")

    def jit_train_step(*args, **kwargs):
        bound = inspect.signature(real).bind(*args, **kwargs)
        bound.apply_defaults()
        asked.append(bound.arguments["deterministic"])
        return Jitted()

    monkeypatch.setattr(step_lib, "jit_train_step", jit_train_step)
    for deterministic in (True, False):
        config = NS(train=NS(steps_per_call=1, deterministic=deterministic, label_smoothing=0.0, xla_options=None,
                             ema=None), data=NS(augment=None))
        run = NS(config=config, model=NS(info=NS(family="dnn")), tx=None, spec=NS(num_classes=NUM_CLASSES),
                 mesh=None, task=None)
        assert loop.CompiledSteps(run).get(1, None, None, None) == "compiled"
    assert asked == [True, False]
    assert step_lib.compiler_options(asked[0], backend="gpu", options={}) == {"xla_gpu_deterministic_ops": True}


def summary_of_run_without_validation(start_step: int) -> dict:
    """The summary loop._summary writes for a run whose checkpoints recorded no validation metric."""
    from types import SimpleNamespace as NS

    from zoo import tasks
    from zoo.training import loop

    class Checkpoints:
        def latest_step(self):
            return 20

        def best_step(self):
            return None  # no validation split: no step is "best"

        def read_meta(self, step):
            assert step == 20
            return {"metrics": {"test_accuracy": 0.75, "test_loss": 0.5}}

    config = NS(name="tiny", model=NS(name="mlp"), seed=0, data=NS(batch_size=32),
                train=NS(deterministic=True, xla_options=None))
    setup = NS(config=config, model=NS(info=NS(family="dnn")), spec=NS(name="digits", val_size=0), total_steps=20,
               task=tasks.describe("classify"))
    return loop._summary(setup, "run", Checkpoints(), 100, NS(compile_seconds=1.0), 2.0, 10, start_step)


def test_the_summary_of_a_run_without_validation_has_no_best_step_and_says_where_it_resumed():
    """zoo.training.loop.x__summary__mutmut_47 (without a best step the summary crashed reading its metrics)
    and zoo.training.loop.x__summary__mutmut_28 (the "resumed_from" key was misspelt)."""
    summary = summary_of_run_without_validation(start_step=10)
    assert (summary["best_checkpoint"], summary["best_accuracy"], summary["resumed_from"]) == (None, None, 10)
    assert (summary["final_step"], summary["final"]) == (20, {"test_accuracy": 0.75, "test_loss": 0.5})
