"""Issue 25, "weight averaging": `train.ema: {decay, every}` keeps a moving average of the weights in the
train state, saved in every checkpoint and restored on resume; evaluation, selection, `zoo eval`,
predict and export use it (`--weights raw` for the raw weights); the metrics log records both; a run
without it is the run it was before."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import CHEAP_COMPILE


@pytest.mark.slow
def test_ema_after_k_steps_equals_the_closed_form():
    """decay d, updated every 2nd of 6 steps, from the initial weights p0:
    d^3 p0 + (1 - d) (d^2 p2 + d p4 + p6), for the parameters of a toy regression trained by SGD."""
    import optax

    from zoo import models
    from zoo.config import EmaConfig
    from zoo.training import state as state_lib, step as step_lib

    model, tx, decay = models.build("mlp", 3, hidden_sizes=(4,)), optax.sgd(0.5), 0.6
    x = jax.random.normal(jax.random.key(0), (8, 2, 2, 1))
    y = jnp.arange(8) % 3
    step = step_lib.train_step_fn(model, tx, 3, ema=EmaConfig(decay, 2))

    def train(x, y):  # six steps in one compiled program: the state after all, the parameters after each
        state = state_lib.create(model, tx, 0, x[:1], ema=True)
        params = [state.params]
        for _ in range(6):
            state, _ = step(state, x, y)
            params.append(state.params)
        return state, params

    state, params = jax.jit(train, compiler_options=CHEAP_COMPILE)(x, y)
    expected = jax.tree.map(lambda p0, p2, p4, p6: decay**3 * p0 + (1 - decay) * (decay**2 * p2 + decay * p4 + p6),
                            *(params[i] for i in (0, 2, 4, 6)))
    for got, want in zip(jax.tree.leaves(state.ema["params"]), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert not np.allclose(jax.tree.leaves(state.ema["params"])[0], jax.tree.leaves(state.params)[0])


@pytest.mark.slow
def test_a_resumed_ema_run_equals_an_uninterrupted_one_bit_for_bit(ema_augment_runs):
    """Resumed from its step-2 checkpoint, the average (and the whole state) after step 4 is the
    uninterrupted run's, to the bit: the average is saved in every checkpoint."""
    from zoo.training import restore, state as state_lib

    straight, resumed = (restore.restore(run).state for run in ema_augment_runs)
    assert state_lib.has_ema(straight) and state_lib.has_ema(resumed)
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key)
                                      else a, jax.random.key_data(b) if jnp.issubdtype(b.dtype, jax.dtypes.prng_key)
                                      else b)


def test_a_run_without_ema_keeps_the_state_tree_and_checkpoint_of_before(finished_run):
    """No train.ema: a plain TrainState (step, params, model_state, opt_state, rng), no 'ema' or
    'augment' key in the stored config, checkpoint arrays only of those five fields."""
    from zoo.checkpoint import Checkpoints
    from zoo.training import restore, state as state_lib

    restored = restore.restore(finished_run)
    assert type(restored.state) is state_lib.TrainState
    meta = Checkpoints(finished_run / "checkpoints", read_only=True).read_meta(20)
    fields = {name.split("[")[0].split(".")[1] for name in meta["arrays"]}
    assert fields == {"step", "params", "opt_state", "rng"}  # an MLP has no model state (BatchNorm statistics)
    stored = json.loads((finished_run / "config.json").read_text())
    assert "ema" not in stored["train"] and "augment" not in stored["data"] and meta["config"] == stored


@pytest.mark.slow
def test_the_metrics_log_records_the_average_and_the_raw_weights(ema_augment_runs):
    """Each evaluation writes val and test records (the average, which selection reads) and raw_val and
    raw_test records (the raw weights)."""
    records = [json.loads(line) for line in (ema_augment_runs[0] / "metrics.jsonl").read_text().splitlines()]
    evaluated = {(r["step"], r["split"]) for r in records if r["split"] != "train"}
    assert evaluated == {(step, split) for step in (2, 4) for split in ("val", "test", "raw_val", "raw_test")}


@pytest.mark.slow
def test_zoo_eval_uses_the_average_unless_weights_raw(ema_augment_runs, zoo_main):
    """`zoo eval` measures the average by default and the raw weights with --weights raw; each agrees
    with what training recorded for those weights at that step."""
    run = ema_augment_runs[0]
    results = {}
    for weights in ("ema", "raw"):
        status, out, err = zoo_main("eval", run, "--json", *(["--weights", "raw"] if weights == "raw" else []))
        assert status == 0, err
        results[weights] = json.loads(out)
        assert results[weights]["weights"] == weights
        assert results[weights]["test"]["loss"] == pytest.approx(results[weights]["recorded"]["test_loss"], rel=1e-6)
    assert results["ema"]["test"]["loss"] != results["raw"]["test"]["loss"]


@pytest.mark.slow
def test_predict_and_load_run_use_the_average_unless_weights_raw(ema_augment_runs):
    """load_run (zoo predict, export) holds the average's variables by default, the raw ones when asked."""
    import zoo
    from zoo.training import restore

    state = restore.restore(ema_augment_runs[0]).state
    ema, raw = zoo.load_run(ema_augment_runs[0]), zoo.load_run(ema_augment_runs[0], weights="raw")
    for got, want in ((ema.variables["params"], state.ema["params"]), (raw.variables["params"], state.params)):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_array_equal(a, b)


def test_weights_ema_for_a_run_without_an_average_is_refused_in_one_line(finished_run, zoo_main, one_line_error):
    """`zoo eval --weights ema` of a run trained without train.ema: one line saying to use raw."""
    status, out, err = zoo_main("eval", finished_run, "--weights", "ema")
    assert status == 2 and out == ""
    one_line_error(err, "keeps no moving average", "--weights raw")
