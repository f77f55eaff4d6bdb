"""What a checkpoint records and restores, and what opening a checkpoint directory cleans up.
Each test names the mutant it kills in its docstring (found by tools/mutation.py)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from zoo import models


NUM_CLASSES = 10


@pytest.mark.slow
def test_every_checkpoint_records_the_model_its_family_size_devices_and_platform(tmp_path, tiny_config):
    """zoo.training.loop.x__train__mutmut_166 (the meta's "family" key was misspelt)."""
    from zoo import checkpoint as ckpt
    from zoo.training import loop

    config = tiny_config({"train": {"steps": 10}, "checkpoint": {"every": 10, "keep": 1}})
    loop.fit(config, tmp_path / "run")
    meta = ckpt.Checkpoints(tmp_path / "run" / "checkpoints", read_only=True).read_meta(10)
    assert {key: meta[key] for key in ("model", "family", "devices", "platform")} == {
        "model": "mlp", "family": "dnn", "devices": jax.device_count(), "platform": "cpu"}
    assert meta["param_count"] == models.count_params(meta_params(config))


def meta_params(config):
    model = models.build(config.model.name, NUM_CLASSES, **config.model.hparams)
    return model.init(jax.random.key(0), np.zeros((1, 8, 8, 1), np.float32))["params"]


def test_opening_checkpoints_for_writing_removes_what_a_killed_save_left_and_nothing_else(tmp_path):
    """zoo.checkpoint.xǁCheckpointsǁ_clean_stale__mutmut_6 (the leftovers were kept)."""
    from zoo import checkpoint as ckpt

    root = tmp_path / "checkpoints"
    for name in ("20.orbax-checkpoint-tmp-1764", ckpt.TRASH, "10"):
        (root / name).mkdir(parents=True)
        (root / name / "file").write_text("x")
    ckpt.Checkpoints(root)
    assert sorted(p.name for p in root.iterdir()) == ["10"]


@pytest.mark.slow
def test_restoring_a_run_at_a_step_gives_that_steps_state(tmp_path, tiny_config):
    """zoo.training.restore.x_restore__mutmut_7 (the step asked for was ignored: always the latest)."""
    from zoo.training import fit
    from zoo.training.restore import restore

    fit(tiny_config({"train": {"steps": 20}, "checkpoint": {"every": 10, "keep": 2, "keep_best": 0}}), tmp_path)
    earlier, latest = restore(tmp_path, 10), restore(tmp_path)
    assert (earlier.step, int(earlier.state.step), latest.step, int(latest.state.step)) == (10, 10, 20, 20)
    assert not np.array_equal(jax.tree.leaves(earlier.state.params)[0], jax.tree.leaves(latest.state.params)[0])


@pytest.mark.slow
def test_init_from_a_batchnorm_run_starts_from_its_running_statistics(tmp_path, tiny_config):
    """zoo.training.restore.x_init_from__mutmut_27 and _66 (the model state, BatchNorm's running mean and
    variance, was not taken from the source run)."""
    from zoo.training import build_setup, fit
    from zoo.training.restore import init_from, restore

    model = {"model": {"name": "mlp", "hidden_sizes": [16], "norm": "batch"}}
    fit(tiny_config(model | {"train": {"steps": 10}, "checkpoint": {"every": 10}}), tmp_path / "source")
    config = tiny_config(model | {"init_from": {"run": str(tmp_path / "source")}})
    run = build_setup(config)
    started = init_from(run, config.init_from)(run.init_state())
    source = restore(tmp_path / "source").state
    for got, want in zip(jax.tree.leaves(started.model_state), jax.tree.leaves(source.model_state), strict=True):
        np.testing.assert_array_equal(got, want)
    assert not np.allclose(jax.tree.leaves(source.model_state)[0], 0.0)  # the statistics did move


def test_checkpoints_keep_the_one_best_step_besides_the_latest_by_default(tmp_path):
    """zoo.checkpoint.xǁCheckpointsǁ__init____mutmut_2 (the default kept the two best steps)."""
    from zoo import checkpoint as ckpt

    checkpoints = ckpt.Checkpoints(tmp_path / "checkpoints", keep=1, async_save=False)
    for step, accuracy in ((1, 0.9), (2, 0.8), (3, 0.7)):
        checkpoints.save(step, {"w": np.full(2, step, np.float32)}, {}, {"accuracy": accuracy})
    checkpoints.close()
    assert ckpt.Checkpoints(tmp_path / "checkpoints", read_only=True).steps() == [1, 3]


def test_the_best_step_of_a_run_without_validation_is_refused_saying_why(tmp_path):
    """zoo.training.restore.x_resolve_step__mutmut_32 (the error lost its message: 'None')."""
    from zoo.errors import CheckpointError
    from zoo.training.restore import resolve_step

    class NoValidation:  # a run's checkpoints, none of which recorded a validation metric
        directory = tmp_path / "checkpoints"

        def latest_step(self):
            return 20

        def read_meta(self, step):
            return {"config": {"data": {"name": "digits"}, "model": {"name": "mlp"}, "train": {"steps": 20}}}

        def best_step(self, metric, mode):
            return None

    with pytest.raises(CheckpointError) as error:
        resolve_step(NoValidation(), "best")
    assert str(error.value) == (f"no checkpoint in '{tmp_path / 'checkpoints'}' recorded val_accuracy: the run has "
                                "no validation split (data.validation: 0), so no step is 'best'; use --step N or "
                                "the latest")


def test_the_runs_table_leaves_the_total_steps_blank_when_config_json_holds_no_step_count(tmp_path):
    """zoo.rundir.x__config_fields__mutmut_19 (a hand-edited "steps": "100" was shown as the total)."""
    import json

    from zoo import rundir

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": {"name": "mlp"}, "data": {"name": "digits"},
                                                 "train": {"steps": "100"}}))
    row = rundir.describe_run(run, tmp_path)
    assert (row["model"], row["dataset"], row["steps_total"]) == ("mlp", "digits", None)
