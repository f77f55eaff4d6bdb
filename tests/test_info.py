"""Issue 25, "a model inspector": `zoo info MODEL` prints a model's layers, parameters, forward FLOPs
and compiled train-step memory, and its numbers are the ones `zoo list` and the compare report give."""

from __future__ import annotations

import json

import pytest

MLP = ["--set", "model.hidden_sizes=[16]"]  # a tiny model: one cheap compile


@pytest.fixture(scope="module")
def mlp_info(compile_cache):
    """`zoo info mlp --json` of a one-hidden-layer MLP on 8x8x1 digits, run once for the module."""
    import contextlib
    import io

    from zoo import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["info", "mlp", *MLP, "--json"]) == 0
    return json.loads(out.getvalue())


def test_info_parameters_equal_zoo_list_and_the_sum_of_its_layers(mlp_info, zoo_main):
    """The total is `zoo list`'s count for the same model and shape; each parameter belongs to one row."""
    status, out, _ = zoo_main("list", "mlp", "--json")
    assert status == 0
    from zoo import models

    listed = models.param_count(models.build("mlp", 10, hidden_sizes=[16]), (8, 8, 1))
    assert json.loads(out)[0]["params"] == "85,002"  # the default MLP, as `zoo list` prints it
    assert mlp_info["params"] == listed == sum(row["params"] for row in mlp_info["layers"]) == 64 * 16 + 16 + 170
    assert [(row["path"], row["params"]) for row in mlp_info["layers"]] == [
        ("", 0), ("Dense_0", 64 * 16 + 16), ("Dropout_0", 0), ("Dense_1", 170)]
    assert mlp_info["layers"][1]["output"] == "float32[1,16]"


def test_info_flops_equal_the_compare_reports_count_on_real_digits(mlp_info):
    """Forward FLOPs per example: what the compare report computes (cost.forward_flops) for this model
    trained on the digits dataset at the default batch size."""
    from zoo.comparison import cost
    from zoo.config import from_dict
    from zoo.data import load_dataset

    config = from_dict({"name": "c", "model": {"name": "mlp", "hidden_sizes": [16]}, "train": {"steps": 1}})
    expected = cost.forward_flops(config, load_dataset("digits").spec)
    assert mlp_info["forward_flops_per_example"] == pytest.approx(expected, rel=1e-6)
    assert mlp_info["forward_flops_per_example"] >= 2 * (64 * 16 + 16 * 10)  # the two matmuls at least


def test_info_train_step_memory_holds_the_adamw_state_and_the_batch(mlp_info):
    """XLA's memory analysis of the train step at batch 64: its arguments hold the parameters and
    AdamW's two moments (float32) and the batch; its outputs are written over the donated state."""
    memory = mlp_info["train_step_memory"]
    assert memory["batch_size"] == 64 and memory["optimizer"] == "adamw"
    assert memory["arguments"] >= 3 * 4 * mlp_info["params"] + 64 * 64 * 4
    assert memory["temporaries"] > 0 and 0 < memory["aliased"] <= memory["outputs"]


def test_info_prints_a_table_with_totals(zoo_main):
    """The text form: a header, one table row per layer, then parameters, FLOPs and memory lines."""
    status, out, err = zoo_main("info", "mlp", *MLP, "--batch-size", "8")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "mlp (dnn), input (8, 8, 1) (image), 10 classes"
    assert any(line.split()[:4] == ["Dense_0", "Dense", "float32[1,16]", "1,040"] for line in lines)
    assert "parameters: 1,210" in lines and lines[-2].startswith("forward FLOPs per example: ")
    assert lines[-1].startswith("train step at batch 8 (adamw, cpu; XLA memory analysis): arguments ")


def test_info_of_an_unknown_model_is_one_line(zoo_main, one_line_error):
    """Bad input: `zoo info` of a name the registry lacks is refused in one line, exit status 2."""
    status, out, err = zoo_main("info", "resnet21")
    assert status == 2 and out == ""
    one_line_error(err, "unknown model 'resnet21'")
