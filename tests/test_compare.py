"""`zoo compare`: a tiny comparison (2 models x 2 seeds, a few steps, on digits) and its report."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import yaml

from conftest import TINY, merged
from zoo.comparison import report
from zoo.errors import ConfigError

import zoo.comparison.runner as compare_lib

SEEDS = [0, 1]
STEPS = 10
MODELS = {
    "tiny_mlp": {"model": {"name": "mlp", "hidden_sizes": [16]}},
    "tiny_cnn": {"model": {"name": "cnn", "features": [4], "hidden": 16}},
}


def _write_models(directory) -> list[str]:
    paths = []
    for name, overrides in MODELS.items():
        path = directory / f"{name}.yaml"
        raw = merged(TINY, {"name": name, "train": {"log_every": 5}, **overrides})
        raw["model"] = overrides["model"]
        path.write_text(yaml.safe_dump(raw))
        paths.append(str(path))
    return paths


def _write_compare(directory, **changes) -> str:
    raw = {"name": "tiny", "dataset": "digits", "seeds": SEEDS, "budget": {"steps": STEPS},
           "models": _write_models(directory), **changes}
    path = directory / "compare.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, compile_cache):
    """A finished tiny compare: (compare config path, workdir, compare() result)."""
    directory = tmp_path_factory.mktemp("compare")
    config = _write_compare(directory)
    workdir = directory / "work"
    return config, workdir, compare_lib.compare(config, workdir, command="zoo compare tiny")


@pytest.fixture
def copy_of(tmp_path, finished):
    """A private copy of the finished compare's workdir, for tests that change it."""
    config, workdir, _ = finished
    target = tmp_path / "work"
    shutil.copytree(workdir, target)
    return config, target


def _csv_rows(workdir):
    with (workdir / "report" / "results.csv").open() as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


@pytest.mark.slow
def test_report_writes_every_file(finished):
    _, workdir, _ = finished
    for name in report.FILES:
        assert (workdir / "report" / name).stat().st_size > 0, name
    for name in ("curves.png", "tradeoff.png"):
        assert (workdir / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_results_csv_has_the_columns_and_one_line_per_run(finished):
    _, workdir, _ = finished
    header, rows = _csv_rows(workdir)
    assert tuple(header) == report.COLUMNS
    assert sorted((r["config"], int(r["seed"])) for r in rows) == sorted(
        (name, seed) for name in MODELS for seed in SEEDS)
    assert all(float(r["flops_per_example"]) > 0 and int(r["steps"]) == STEPS for r in rows)


@pytest.mark.slow
def test_results_json_has_one_run_per_line_and_one_entry_per_model(finished):
    _, workdir, _ = finished
    data = json.loads((workdir / "report" / "results.json").read_text())
    assert len(data["runs"]) == len(MODELS) * len(SEEDS)
    assert all(tuple(run) == report.COLUMNS for run in data["runs"])
    assert sorted(m["config"] for m in data["models"]) == sorted(MODELS)
    assert data["compare"]["command"] == "zoo compare tiny"


@pytest.mark.slow
def test_report_md_has_one_row_per_model_sorted_by_accuracy(finished):
    _, workdir, result = finished
    text = (workdir / "report" / "report.md").read_text()
    header = "| " + " | ".join(report.TABLE_HEADER) + " |"
    assert header in text and "zoo compare tiny" in text
    table = [line for line in text.splitlines() if line.startswith("| ") and line != header]
    assert len(table) == len(MODELS)
    means = [m["final_accuracy"] for m in result["models"]]
    assert means == sorted(means, reverse=True)


@pytest.mark.slow
def test_runs_use_the_compare_seed_and_budget(finished):
    _, workdir, _ = finished
    for name in MODELS:
        for seed in SEEDS:
            stored = json.loads((workdir / "runs" / name / f"seed{seed}" / "config.json").read_text())
            assert (stored["seed"], stored["train"]["steps"], stored["train"]["epochs"]) == (seed, STEPS, None)


@pytest.mark.slow
def test_rerun_does_not_retrain_finished_runs(copy_of, monkeypatch):
    config, workdir = copy_of
    results = sorted(workdir.glob("runs/*/seed*/result.json"))
    before = {path: path.stat().st_mtime_ns for path in results}

    def no_training(*args, **kwargs):
        raise AssertionError("fit() was called for a finished run")

    monkeypatch.setattr(compare_lib, "fit", no_training)
    result = compare_lib.compare(config, workdir)
    assert (result["trained"], result["reused"]) == (0, len(results))
    assert {path: path.stat().st_mtime_ns for path in results} == before


@pytest.mark.slow
def test_rerun_trains_only_the_unfinished_run(copy_of, monkeypatch):
    config, workdir = copy_of
    unfinished = workdir / "runs" / "tiny_cnn" / "seed1"
    (unfinished / "result.json").unlink()
    calls = []
    real_fit = compare_lib.fit
    monkeypatch.setattr(compare_lib, "fit", lambda cfg, run_dir, *a, **k: calls.append(run_dir) or
                        real_fit(cfg, run_dir, *a, **k))
    result = compare_lib.compare(config, workdir)
    assert calls == [unfinished] and result["trained"] == 1
    assert (unfinished / "result.json").exists()


@pytest.mark.slow
def test_run_evaluates_to_the_reported_accuracy(finished):
    from zoo.inference.evaluate import evaluate

    _, workdir, _ = finished
    _, rows = _csv_rows(workdir)
    row = next(r for r in rows if r["config"] == "tiny_cnn" and r["seed"] == "1")
    assert evaluate(workdir / row["run_dir"])["test"]["accuracy"] == float(row["final_accuracy"])


@pytest.mark.slow
def test_cli_compare_prints_the_table(copy_of, zoo_main):
    config, workdir = copy_of
    status, out, err = zoo_main("compare", config, "--workdir", workdir)
    assert status == 0, err
    assert "| " + " | ".join(report.TABLE_HEADER) + " |" in out
    assert "0 runs trained, 4 reused" in out


def test_unknown_key_raises_config_error(tmp_path):
    path = _write_compare(tmp_path, budgets={"steps": 5})
    with pytest.raises(ConfigError, match=r"unknown key 'budgets': did you mean 'budget'"):
        compare_lib.load_compare(path)


def test_unknown_budget_key_raises_config_error(tmp_path):
    path = _write_compare(tmp_path, budget={"step": 5})
    with pytest.raises(ConfigError, match=r"unknown key 'budget.step': did you mean 'steps'"):
        compare_lib.load_compare(path)


def test_model_config_for_another_dataset_raises_config_error(tmp_path):
    path = _write_compare(tmp_path, dataset="mnist1d")
    with pytest.raises(ConfigError, match=r"trains on 'digits' but this compare is on 'mnist1d'"):
        compare_lib.load_compare(path)


def test_missing_model_config_raises_config_error(tmp_path):
    path = _write_compare(tmp_path, models=["configs/digits/nope.yaml"])
    with pytest.raises(ConfigError, match=r"nope.yaml.*does not exist"):
        compare_lib.load_compare(path)


def test_cli_bad_compare_config_is_one_line_exit_2(tmp_path, zoo_main, one_line_error):
    path = _write_compare(tmp_path, seeds=[0, 0])
    status, _, err = zoo_main("compare", path, "--workdir", tmp_path / "work")
    assert status == 2
    one_line_error(err, "seeds", "repeats a seed")
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
def test_forward_flops_count_every_rnn_step(compile_cache):
    from zoo.config import from_dict
    from zoo.data import DataSpec

    config = from_dict({**TINY, "model": {"name": "gru", "hidden_size": 8}})
    flops = [compare_lib.forward_flops(config, DataSpec("signal", (length, 1), "signal", 10))
             for length in (10, 40)]
    assert 3.5 < flops[1] / flops[0] < 4.5  # an RNN's forward pass grows with the sequence
