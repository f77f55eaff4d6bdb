"""The config schema: defaults, overrides, and one clear ConfigError per kind of mistake."""

from pathlib import Path

import pytest

from zoo import config as config_lib
from zoo.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def minimal(**sections):
    return {"name": "t", "train": {"steps": 10}, **sections}


def test_every_shipped_config_loads():
    paths = sorted((REPO / "configs").glob("*/*.yaml"))
    model_configs = [p for p in paths if p.parent.name != "compare"]
    assert len(model_configs) >= 5
    for path in model_configs:
        config_lib.load(path)


def test_every_shipped_config_header_holds_the_command_that_runs_it():
    for path in sorted((REPO / "configs").glob("*/*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# zoo ") and str(path.relative_to(REPO)) in first, path


def test_defaults_fill_missing_sections():
    config = config_lib.from_dict(minimal())
    assert config.optimizer.name == "adamw" and config.data.batch_size == 64


def test_override_sets_nested_value_parsed_as_yaml():
    raw = config_lib.apply_overrides(minimal(), ["optimizer.learning_rate=3e-4", "data.augment.crop_pad=2"])
    config = config_lib.from_dict(raw)
    assert config.optimizer.learning_rate == pytest.approx(3e-4) and config.data.augment.crop_pad == 2


def test_override_reaches_model_hyperparameters():
    raw = config_lib.apply_overrides(minimal(model={"name": "cnn"}), ["model.features=[8, 16]"])
    assert config_lib.from_dict(raw).model.hparams == {"features": [8, 16]}


def test_unknown_key_is_rejected_with_nearest_valid_key():
    with pytest.raises(ConfigError, match=r"unknown key 'optimizer.learning_rat'.*'learning_rate'"):
        config_lib.from_dict(minimal(optimizer={"learning_rat": 0.1}))


def test_wrong_type_names_the_key_and_expected_type():
    with pytest.raises(ConfigError, match=r"data.batch_size: expected an integer, got 'big'"):
        config_lib.from_dict(minimal(data={"batch_size": "big"}))


def test_bool_is_not_accepted_as_integer():
    with pytest.raises(ConfigError, match="data.batch_size"):
        config_lib.from_dict(minimal(data={"batch_size": True}))


def test_choice_field_lists_valid_choices():
    with pytest.raises(ConfigError, match=r"optimizer.name: 'adamm'.*'adam'.*'sgd'"):
        config_lib.from_dict(minimal(optimizer={"name": "adamm"}))


@pytest.mark.parametrize("section,key,value", [
    ("optimizer", "learning_rate", -1.0), ("data", "batch_size", 0), ("train", "label_smoothing", 1.5),
])
def test_out_of_range_value_is_rejected(section, key, value):
    with pytest.raises(ConfigError, match=rf"{section}.{key}: .* out of range"):
        config_lib.from_dict(minimal(**{section: {key: value}}))


def test_steps_or_epochs_exactly_one():
    with pytest.raises(ConfigError, match="exactly one of train.steps or train.epochs"):
        config_lib.from_dict({"train": {"steps": 5, "epochs": 2}})


def test_yaml_python_tag_is_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text('name: !!python/object/apply:os.system ["echo hi"]\n')
    with pytest.raises(ConfigError, match="not allowed"):
        config_lib.load_yaml(path)


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: a\ntrain: {steps: 3\n")
    with pytest.raises(ConfigError, match=r"YAML syntax error at line \d+"):
        config_lib.load_yaml(path)


def test_to_dict_round_trips():
    config = config_lib.from_dict(minimal(model={"name": "cnn", "features": [4]}))
    assert config_lib.from_dict(config.to_dict()) == config
