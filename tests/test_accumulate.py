"""Gradient accumulation (train.accumulate: K): data.batch_size is the optimizer's batch, split into K
micro-batches whose mean gradient makes one optimizer step (optax.MultiSteps)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from conftest import TINY, merged, tolerance
from test_reliability import EVERY_SOURCE_OF_STATE, Recorder, restore
from test_training import train_steps
from zoo import config as config_lib
from tools import soak
from zoo.errors import ConfigError
from zoo.training import loop

# No dropout and no BatchNorm: then the only difference K makes is how the mean gradient is summed.
PLAIN_MLP = {"model": {"hidden_sizes": [32]},
             "optimizer": {"name": "adamw", "weight_decay": 1e-3, "schedule": "cosine"}}


def config(accumulate: int, steps: int = 3, extra: dict | None = None):
    raw = merged(merged(TINY, PLAIN_MLP), {"train": {"steps": steps, "accumulate": accumulate}, **(extra or {})})
    return config_lib.from_dict(raw)


def trained_params(cfg, steps: int):
    """The state after `steps` jitted train steps on the run's batches."""
    return train_steps(cfg, steps)[0]


def assert_same_params(a, b):
    for left, right in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_allclose(left, right, **tolerance(0, 1e-6))


@pytest.mark.slow
def test_one_accumulated_step_equals_one_large_batch_step():
    assert_same_params(trained_params(config(4), 1), trained_params(config(1), 1))


@pytest.mark.slow
def test_the_learning_rate_schedule_counts_optimizer_steps_not_micro_batches():
    """Three steps of a 3-step cosine schedule: the same learning rates with and without accumulation
    (a schedule counting micro-batches would decay over 6 and part ways at step 2)."""
    assert_same_params(trained_params(config(2), 3), trained_params(config(1), 3))


@pytest.mark.slow
def test_one_step_is_one_optimizer_update_and_one_step_of_the_run():
    state = trained_params(config(4), 2)
    assert int(state.step) == 2
    assert int(state.opt_state.gradient_step) == 2 and int(state.opt_state.mini_step) == 0


def test_an_accumulation_that_does_not_divide_the_batch_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^train\.accumulate 5 does not divide data\.batch_size 32 .*"):
        config(5)


def test_accumulate_below_one_is_refused():
    with pytest.raises(ConfigError, match=r"train\.accumulate: 0 is out of range; it must be at least 1"):
        config(0)


@pytest.mark.slow
def test_resume_with_accumulation_is_bit_identical_to_an_uninterrupted_run(tmp_path, tiny_config):
    cfg = tiny_config(merged(EVERY_SOURCE_OF_STATE, {"train": {"steps": 20, "accumulate": 2}}))
    loop.fit(cfg, tmp_path / "straight")
    stopped = loop.fit(cfg, tmp_path / "resumed", Recorder(stop_at=6))
    assert stopped["stopped"] == "SIGTERM" and 6 <= stopped["step"] < 20
    recorder = Recorder()
    loop.fit(cfg, tmp_path / "resumed", recorder)
    assert f"resuming from step {stopped['step']}" in recorder.lines
    straight, straight_meta = restore(tmp_path / "straight")
    resumed, resumed_meta = restore(tmp_path / "resumed")
    assert int(resumed.step) == 20 and int(resumed.opt_state.gradient_step) == 20
    assert soak.max_abs_difference(straight, resumed) == 0.0
    assert straight_meta["position"] == resumed_meta["position"]
