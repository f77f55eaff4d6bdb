"""Early stopping on the validation metric, and no selection of any kind on test."""

import json
import re
from pathlib import Path

import pytest

from zoo.training import fit, hooks, loop
from zoo.training import setup as setup_lib


def scripted(monkeypatch, val: dict, test: dict | None = None):
    """Replaces evaluation with fixed curves: val[step] and test[step] accuracies (loss = 1 - accuracy)."""
    def splits(evaluator, state):
        step = int(state.step)
        t = (test or {}).get(step, 0.5)
        return {"val_loss": 1 - val[step], "val_accuracy": val[step], "test_loss": 1 - t, "test_accuracy": t}

    monkeypatch.setattr(setup_lib.Evaluator, "splits", splits)


def es_config(tiny_config, patience=2, min_delta=0.0, steps=40, metric="accuracy"):
    return tiny_config({"train": {"steps": steps, "eval_every": 5, "log_every": 5,
                                  "early_stopping": {"patience": patience, "min_delta": min_delta,
                                                     "metric": metric}},
                        "checkpoint": {"every": 10}})


CURVE = {5: 0.5, 10: 0.6, 15: 0.6, 20: 0.55, 25: 0.9, 30: 0.9, 35: 0.9, 40: 0.9}


@pytest.mark.slow
def test_early_stopping_stops_at_the_evaluation_where_patience_runs_out(tmp_path, tiny_config, monkeypatch):
    scripted(monkeypatch, CURVE)
    result = fit(es_config(tiny_config, patience=2), tmp_path)
    # best at 10; 15 and 20 do not improve: the second of them ends the run (25's 0.9 is never seen)
    assert result["early_stopped"]["step"] == 20 and result["early_stopped"]["best_step"] == 10
    assert result["final_step"] == 20  # a checkpoint is written where it stopped
    assert json.loads((tmp_path / "result.json").read_text())["early_stopped"]["step"] == 20


@pytest.mark.slow
def test_early_stopping_min_delta_ignores_small_improvements(tmp_path, tiny_config, monkeypatch):
    scripted(monkeypatch, {5: 0.5, 10: 0.52, 15: 0.54, 20: 0.9, 25: 0.9, 30: 0.9, 35: 0.9, 40: 0.9})
    result = fit(es_config(tiny_config, patience=2, min_delta=0.05), tmp_path)
    assert result["early_stopped"]["step"] == 15 and result["early_stopped"]["best_step"] == 5


@pytest.mark.slow
def test_early_stopping_on_loss_waits_for_a_lower_validation_loss(tmp_path, tiny_config, monkeypatch):
    scripted(monkeypatch, CURVE)  # loss = 1 - accuracy: the same steps improve
    result = fit(es_config(tiny_config, patience=2, metric="loss"), tmp_path)
    assert result["early_stopped"]["step"] == 20


@pytest.mark.slow
def test_early_stopping_ignores_the_test_curve(tmp_path, tiny_config, monkeypatch):
    flat = {step: 0.5 for step in range(5, 45, 5)}
    rising = {step: step / 100 for step in range(5, 45, 5)}
    scripted(monkeypatch, flat, rising)
    result = fit(es_config(tiny_config, patience=2), tmp_path)
    assert result["early_stopped"]["step"] == 15


@pytest.mark.slow
def test_a_run_that_never_stalls_trains_to_the_end(tmp_path, tiny_config, monkeypatch):
    scripted(monkeypatch, {step: step / 100 for step in range(5, 45, 5)})
    result = fit(es_config(tiny_config, patience=2), tmp_path)
    assert result["early_stopped"] is None and result["final_step"] == 40


@pytest.mark.slow
def test_early_stopping_counts_carry_over_a_resume(tmp_path, tiny_config, monkeypatch):
    """Stopped at step 15 (one evaluation without improvement), then continued: the run stops at 20,
    as an uninterrupted one does, not two evaluations after the resume."""
    scripted(monkeypatch, CURVE)
    fit(tiny_config({"train": {"steps": 15, "eval_every": 5, "log_every": 5,
                               "early_stopping": {"patience": 2}}, "checkpoint": {"every": 5}}), tmp_path)
    result = fit(tiny_config({"train": {"steps": 40, "eval_every": 5, "log_every": 5,
                                        "early_stopping": {"patience": 2}}, "checkpoint": {"every": 5}}), tmp_path)
    assert result["early_stopped"]["step"] == 20


@pytest.mark.slow
def test_an_early_stopped_run_rerun_stays_stopped(tmp_path, tiny_config, monkeypatch):
    scripted(monkeypatch, CURVE)
    config = es_config(tiny_config, patience=2)
    fit(config, tmp_path)
    again = fit(config, tmp_path)
    assert again["final_step"] == 20 and again["early_stopped"]["step"] == 20


def test_early_stopping_without_a_validation_split_is_refused_in_one_line(tmp_path, write_config, zoo_main,
                                                                          one_line_error):
    config = write_config({"data": {"validation": 0}, "train": {"early_stopping": {"patience": 3}}})
    status, _, err = zoo_main("train", config, "--workdir", tmp_path / "run")
    assert status == 2
    one_line_error(err, "train.early_stopping", "data.validation")
    assert not (tmp_path / "run").exists()


def test_no_code_path_selects_on_test(tiny_config):
    """Selection (best-K retention, --best, early stopping, 'best' in reports) reads validation metrics:
    the metric they rank by starts with 'val_', and no selection site names a test metric."""
    for metric in ("accuracy", "loss"):
        config = tiny_config({"checkpoint": {"metric": metric}, "train": {"early_stopping": {"metric": metric}}})
        assert setup_lib.selection_metric(config)[0] == f"val_{metric}"
        assert hooks.EarlyStopping(config.train.early_stopping).metric == f"val_{metric}"
    selection = re.compile(r"best_step\(|BestN\(|best_fn|EarlyStopping\(|selection_metric|keep_best|best_mode")
    package = Path(loop.__file__).resolve().parents[1]
    for path in package.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if selection.search(line):
                assert "test_" not in line, f"{path}:{number} selects on a test metric: {line.strip()}"
