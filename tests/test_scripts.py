"""The experiment scripts in scripts/ run end to end on tiny budgets, as a user would copy them, and
print what they promise. Each script's `main(argv)` runs in this process (the suite's compile cache
is warm here; a subprocess would pay the imports again): they use the public Python API only."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import REPO


def script(name: str):
    """scripts/<name>.py as a module (it is not a package)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def json_output(capsys, name: str, *argv: str):
    assert script(name).main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_the_learning_rate_scan_chooses_on_validation_and_reports_test_for_that_choice(tmp_path, capsys,
                                                                                      compile_cache):
    out = json_output(capsys, "lr_scan", "--config", str(REPO / "configs/digits/mlp.yaml"), "--rates", "1e-4,3e-3",
                      "--steps", "20", "--workdir", str(tmp_path), "--json")
    assert [row["learning_rate"] for row in out["rows"]] == [1e-4, 3e-3]
    assert out["chosen"]["val_accuracy"] == max(row["val_accuracy"] for row in out["rows"])  # validation decides
    assert (tmp_path / "lr=0.003" / "result.json").is_file()


@pytest.mark.slow
def test_evaluating_every_run_under_a_folder_reproduces_the_recorded_accuracies(tmp_path, capsys, tiny_config):
    from zoo.training import fit

    for seed in (0, 1):
        fit(tiny_config({"seed": seed}), tmp_path / "runs" / f"seed{seed}")
    rows = json_output(capsys, "evaluate_runs", str(tmp_path / "runs"), "--json")
    assert [row["run"] for row in rows] == ["seed0", "seed1"]
    assert all(row["max_diff_from_recorded"] < 1e-6 and row["best_step"] is not None for row in rows)


@pytest.mark.slow
def test_fine_tuning_from_the_first_five_digits_trains_both_arms_on_the_last_five(tmp_path, capsys, compile_cache):
    scores = json_output(capsys, "finetune", "--config", str(REPO / "configs/digits/mlp.yaml"), "--steps", "10",
                         "--seeds", "0", "--workdir", str(tmp_path), "--json")
    assert set(scores) == {"fine-tuned", "from scratch"} and all(len(v) == 1 for v in scores.values())
    config = json.loads((tmp_path / "fine_tuned" / "seed0" / "config.json").read_text())
    assert config["init_from"]["run"].endswith("first/seed0") and config["data"]["classes"] == [5, 6, 7, 8, 9]
