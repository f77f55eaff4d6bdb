"""Continuing a run: more steps extend it (schedule recomputed), cadences may change, nothing else."""

import jax
import numpy as np
import pytest

from zoo.training import fit
from zoo.training.restore import restore


@pytest.mark.slow
def test_a_finished_run_continues_to_more_steps_and_says_the_schedule_is_recomputed(tmp_path, write_config,
                                                                                   zoo_main):
    config = write_config()
    assert zoo_main("train", config, "--workdir", tmp_path / "run")[0] == 0
    status, out, err = zoo_main("train", config, "--workdir", tmp_path / "run", "--set", "train.steps=30")
    assert status == 0 and "step 30" in out
    assert "continuing a 20-step run to 30 steps: the learning-rate schedule is recomputed" in err


@pytest.mark.slow
def test_continuing_a_run_may_change_log_eval_and_checkpoint_cadence(tmp_path, write_config, zoo_main):
    config = write_config()
    assert zoo_main("train", config, "--workdir", tmp_path / "run")[0] == 0
    status, _, err = zoo_main("train", config, "--workdir", tmp_path / "run", "--set", "train.steps=30",
                              "--set", "train.log_every=3", "--set", "train.eval_every=6",
                              "--set", "checkpoint.every=15")
    assert status == 0, err


def test_continuing_a_run_refuses_any_other_change_listing_the_keys(tmp_path, write_config, zoo_main,
                                                                    one_line_error, snapshot):
    config = write_config()
    assert zoo_main("train", config, "--workdir", tmp_path / "run")[0] == 0
    before = snapshot(tmp_path / "run")
    status, _, err = zoo_main("train", config, "--workdir", tmp_path / "run", "--set", "train.steps=30",
                              "--set", "optimizer.learning_rate=0.1", "--set", "seed=3")
    assert status == 2
    one_line_error(err, "differs in optimizer.learning_rate, seed", "use another --workdir")
    assert snapshot(tmp_path / "run") == before


@pytest.mark.slow
def test_fewer_steps_than_the_run_has_taken_is_refused(tmp_path, write_config, zoo_main, one_line_error):
    config = write_config()
    assert zoo_main("train", config, "--workdir", tmp_path / "run")[0] == 0
    status, _, err = zoo_main("train", config, "--workdir", tmp_path / "run", "--set", "train.steps=10")
    assert status == 2
    one_line_error(err, "is at step 20", "give train.steps above 20")


@pytest.mark.slow
def test_extending_a_constant_schedule_run_equals_training_it_that_long(tmp_path, tiny_config):
    """With a schedule that does not depend on the run's length, 20 steps then 40 is the 40-step run,
    bit for bit: the data position, optimizer state and random key carry over."""
    constant = {"optimizer": {"schedule": "constant"}, "model": {"dropout": 0.1}}
    fit(tiny_config({**constant, "train": {"steps": 20}}), tmp_path / "extended")
    fit(tiny_config({**constant, "train": {"steps": 40}}), tmp_path / "extended")
    fit(tiny_config({**constant, "train": {"steps": 40}}), tmp_path / "straight")
    extended, straight = (jax.device_get(restore(tmp_path / name).state) for name in ("extended", "straight"))
    for a, b in zip(jax.tree.leaves(extended), jax.tree.leaves(straight)):
        np.testing.assert_array_equal(a, b)
