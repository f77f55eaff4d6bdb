"""Fine-tuning: init_from another run's checkpoint (skipping some parameters), freezing parameters,
and keeping only some classes of a dataset."""

import dataclasses

import jax
import numpy as np
import pytest

from zoo.config import ModelConfig
from zoo.data import load_dataset, select_classes
from zoo.errors import ConfigError, DataError
from zoo.training import build_setup, fit
from zoo.training.restore import init_from, restore

FIRST_HALF, SECOND_HALF = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, tiny_config):
    """A tiny MLP trained on digits 0-4."""
    path = tmp_path_factory.mktemp("source")
    fit(tiny_config({"data": {"classes": FIRST_HALF}}), path)
    return path


def leaves(tree):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(jax.device_get(tree))}


def test_data_classes_keeps_only_those_classes_relabelled_in_order_with_their_names():
    full = load_dataset("digits")
    kept = select_classes(full, [7, 2])
    assert kept.spec.num_classes == 2 and kept.spec.class_names == ("7", "2")
    assert sorted(np.unique(kept.y_train)) == [0, 1]
    np.testing.assert_array_equal(kept.x_test, full.x_test[np.isin(full.y_test, [7, 2])])
    np.testing.assert_array_equal(kept.y_test, np.where(full.y_test[np.isin(full.y_test, [7, 2])] == 7, 0, 1))


def test_data_classes_outside_the_dataset_are_refused():
    with pytest.raises(DataError, match="data.classes names class 12.*0..9"):
        select_classes(load_dataset("digits"), [3, 12])


@pytest.mark.slow
def test_init_from_loads_every_parameter_but_the_skipped_ones(source_run, tiny_config):
    config = tiny_config({"data": {"classes": SECOND_HALF},
                          "init_from": {"run": str(source_run), "skip": ["Dense_1"]}})
    run = build_setup(config)
    fresh = run.init_state()
    started = leaves(init_from(run, config.init_from)(fresh).params)
    source, fresh = leaves(restore(source_run).state.params), leaves(fresh.params)
    for name, value in started.items():
        expected = fresh[name] if name.startswith("['Dense_1']") else source[name]
        np.testing.assert_array_equal(value, expected, err_msg=name)


@pytest.mark.slow
def test_frozen_parameters_are_bit_equal_after_training(source_run, tiny_config, tmp_path):
    config = tiny_config({"data": {"classes": SECOND_HALF}, "freeze": ["Dense_0"],
                          "init_from": {"run": str(source_run), "skip": ["Dense_1"]}})
    fit(config, tmp_path)
    source, tuned = leaves(restore(source_run).state.params), leaves(restore(tmp_path).state.params)
    for name in tuned:
        if name.startswith("['Dense_0']"):
            np.testing.assert_array_equal(tuned[name], source[name], err_msg=name)
    assert not np.array_equal(tuned["['Dense_1']['kernel']"], source["['Dense_1']['kernel']"])  # the head trained


@pytest.mark.slow
def test_init_from_a_parameter_of_another_shape_is_refused_by_name(source_run, tmp_path, write_config, zoo_main,
                                                                   one_line_error):
    config = write_config({"data": {"classes": [5, 6, 7]}, "init_from": {"run": str(source_run)}})
    status, _, err = zoo_main("train", config, "--workdir", tmp_path / "run")
    assert status == 2
    one_line_error(err, "init_from: parameter Dense_1/bias has shape (5,)", "but (3,) here",
                   "add 'Dense_1' to init_from.skip")
    assert not (tmp_path / "run").exists()


def test_a_freeze_pattern_that_matches_no_parameter_is_refused(tiny_config):
    with pytest.raises(ConfigError, match="freeze: pattern 'head' matches no parameter.*Dense_0, Dense_1"):
        build_setup(tiny_config({"freeze": ["head"]}))


@pytest.mark.slow
def test_a_fine_tuned_frozen_body_beats_a_head_trained_on_a_random_frozen_body(tmp_path, tiny_config):
    """A CNN trained on digits 0-4, its conv body frozen, fine-tuned on 5-9 at equal steps: better than
    the same training on a frozen random body."""
    as_cnn = lambda config: dataclasses.replace(  # noqa: E731
        config, model=ModelConfig("cnn", {"features": [16, 32], "hidden": 64}))
    cnn = {"optimizer": {"name": "adam", "learning_rate": 3e-3, "schedule": "constant"},
           "checkpoint": {"every": 1000}, "train": {"log_every": 50}}
    fit(as_cnn(tiny_config({**cnn, "data": {"classes": FIRST_HALF}, "train": {"steps": 150, "log_every": 50}})),
        tmp_path / "source")
    head = {**cnn, "data": {"classes": SECOND_HALF}, "train": {"steps": 60, "log_every": 20},
            "freeze": ["Conv_*"]}
    tuned = fit(as_cnn(tiny_config({**head, "init_from": {"run": str(tmp_path / "source"), "skip": ["Dense_*"]}})),
                tmp_path / "tuned")
    scratch = fit(as_cnn(tiny_config(head)), tmp_path / "scratch")
    print(f"fine-tuned {tuned['final']['test_accuracy']:.4f}  random body {scratch['final']['test_accuracy']:.4f}")
    assert tuned["final"]["test_accuracy"] > scratch["final"]["test_accuracy"] + 0.03
