"""Configs inherit: `base:` names another config (relative to the file); the file gives only what differs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from zoo.config import from_dict, load
from zoo.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

# configs/mnist1d_shuffled/*.yaml as they were written out in full, before they inherited.
FULL_SHUFFLED = {
    "mlp": """\
name: mnist1d_shuffled_mlp
seed: 0
data: {name: mnist1d_shuffled, batch_size: 128}
model: {name: mlp, hidden_sizes: [256, 256, 256], dropout: 0.3}
optimizer: {name: adamw, learning_rate: 2.0e-3, weight_decay: 1.0e-2, schedule: warmup_cosine, warmup_steps: 100}
train: {steps: 2000, log_every: 100, eval_every: 100, steps_per_call: 25}
checkpoint: {every: 1000, keep: 1, keep_best: 1}
""",
    "cnn": """\
name: mnist1d_shuffled_cnn
seed: 0
data: {name: mnist1d_shuffled, batch_size: 128}
model: {name: cnn, features: [32, 64, 128], kernel_size: 5, hidden: 128, dropout: 0.1}
optimizer: {name: adamw, learning_rate: 2.0e-3, weight_decay: 1.0e-2, schedule: warmup_cosine, warmup_steps: 100}
train: {steps: 2000, log_every: 100, eval_every: 100, steps_per_call: 1}
checkpoint: {every: 1000, keep: 1, keep_best: 1}
""",
    "gru": """\
name: mnist1d_shuffled_gru
seed: 0
data: {name: mnist1d_shuffled, batch_size: 128}
model: {name: gru, hidden_size: 64, bidirectional: true}
optimizer: {name: adamw, learning_rate: 3.0e-3, weight_decay: 1.0e-2, schedule: warmup_cosine, warmup_steps: 100, clip_norm: 1.0}
train: {steps: 2000, log_every: 100, eval_every: 100, steps_per_call: 25}
checkpoint: {every: 1000, keep: 1, keep_best: 1}
""",
    "resnet": """\
name: mnist1d_shuffled_resnet
seed: 0
data: {name: mnist1d_shuffled, batch_size: 128}
model: {name: resnet20, width: 16}
optimizer: {name: adamw, learning_rate: 2.0e-3, weight_decay: 5.0e-2, schedule: warmup_cosine, warmup_steps: 100}
train: {steps: 2000, log_every: 100, eval_every: 100, steps_per_call: 1}
checkpoint: {every: 1000, keep: 1, keep_best: 1}
""",
    "transformer": """\
name: mnist1d_shuffled_transformer
seed: 0
data: {name: mnist1d_shuffled, batch_size: 128}
model: {name: transformer, width: 64, depth: 4, num_heads: 4, patch_size: 5}
optimizer: {name: adamw, learning_rate: 3.0e-3, weight_decay: 1.0e-1, schedule: warmup_cosine, warmup_steps: 200}
train: {steps: 2000, log_every: 100, eval_every: 100, steps_per_call: 25}
checkpoint: {every: 1000, keep: 1, keep_best: 1}
""",
}


@pytest.mark.parametrize("model", sorted(FULL_SHUFFLED))
def test_an_inherited_shuffled_config_resolves_to_the_config_it_replaced(model):
    path = REPO / "configs" / "mnist1d_shuffled" / f"{model}.yaml"
    assert "base:" in path.read_text()
    assert load(path) == from_dict(yaml.safe_load(FULL_SHUFFLED[model]))


def test_a_config_takes_its_base_keys_and_overrides_them_section_by_section(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "a.yaml").write_text(
        "name: a\nseed: 3\ndata: {name: digits, batch_size: 32, augment: {crop_pad: 1}}\nmodel: {name: mlp, hidden_sizes: [16]}\n"
        "optimizer: {name: adam, learning_rate: 1.0e-3}\ntrain: {steps: 20}\n")
    (tmp_path / "b.yaml").write_text("base: base/a.yaml\nname: b\ndata: {batch_size: 64}\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\nname: c\noptimizer: {learning_rate: 2.0e-3}\n")
    config = load(tmp_path / "c.yaml")
    assert (config.name, config.seed, config.train.steps) == ("c", 3, 20)
    assert (config.data.name, config.data.batch_size, config.data.augment.crop_pad) == ("digits", 64, 1)
    assert (config.optimizer.name, config.optimizer.learning_rate) == ("adam", 2.0e-3)


def test_a_cycle_of_bases_is_refused_naming_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nname: b\n")
    with pytest.raises(ConfigError, match=r"b.yaml: base 'a.yaml' makes a cycle \(.*a.yaml -> .*b.yaml -> .*a.yaml\)") as error:
        load(tmp_path / "a.yaml")
    assert "\n" not in str(error.value)


def test_a_missing_base_is_refused_naming_the_file_and_the_base(tmp_path):
    (tmp_path / "a.yaml").write_text("base: ../nowhere/cnn.yaml\nname: a\n")
    with pytest.raises(ConfigError, match=r"a.yaml: base '../nowhere/cnn.yaml' does not exist") as error:
        load(tmp_path / "a.yaml")
    assert "\n" not in str(error.value)
