"""The experiment scripts in scripts/ run end to end on tiny budgets, as a user would copy them, and
print what they promise: each through a subprocess, on the public Python API only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO


def run_script(name: str, *args: str, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.slow
def test_the_learning_rate_scan_chooses_on_validation_and_reports_test_for_that_choice(tmp_path, cli_env):
    result = run_script("lr_scan.py", "--config", "configs/digits/mlp.yaml", "--rates", "1e-4,3e-3",
                        "--steps", "40", "--workdir", str(tmp_path), "--json", env=cli_env())
    out = json.loads(result.stdout)
    assert [row["learning_rate"] for row in out["rows"]] == [1e-4, 3e-3]
    best_val = max(row["val_accuracy"] for row in out["rows"])
    assert out["chosen"]["val_accuracy"] == best_val  # validation decides, whatever test says
    assert (tmp_path / "lr=0.003" / "result.json").is_file()


@pytest.mark.slow
def test_evaluating_every_run_under_a_folder_reproduces_the_recorded_accuracies(tmp_path, cli_env, write_config):
    for seed in (0, 1):
        subprocess.run([sys.executable, "-m", "zoo.cli", "train", str(write_config({"seed": seed})),
                        "--workdir", str(tmp_path / "runs" / f"seed{seed}")], cwd=REPO, env=cli_env(),
                       check=True, capture_output=True)
    rows = json.loads(run_script("evaluate_runs.py", str(tmp_path / "runs"), "--json", env=cli_env()).stdout)
    assert [row["run"] for row in rows] == ["seed0", "seed1"]
    assert all(row["max_diff_from_recorded"] < 1e-6 for row in rows)
    assert all(row["best_step"] is not None for row in rows)


@pytest.mark.slow
def test_fine_tuning_from_the_first_five_digits_trains_both_arms_on_the_last_five(tmp_path, cli_env):
    result = run_script("finetune.py", "--config", "configs/digits/mlp.yaml", "--steps", "20", "--seeds", "0",
                        "--workdir", str(tmp_path), "--json", env=cli_env())
    scores = json.loads(result.stdout)
    assert set(scores) == {"fine-tuned", "from scratch"} and all(len(v) == 1 for v in scores.values())
    config = json.loads((tmp_path / "fine_tuned" / "seed0" / "config.json").read_text())
    assert config["init_from"]["run"].endswith("first/seed0") and config["data"]["classes"] == [5, 6, 7, 8, 9]
