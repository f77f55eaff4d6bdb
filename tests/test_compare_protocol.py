"""Compare protocol: sweeps select on validation only, budgets in seconds and FLOPs, statistics over
seeds, many datasets in one report, resumable sweeps and `--budget-s`. `fit` and the step measurement
are stubbed where the behaviour under test is the compare's own bookkeeping."""

from __future__ import annotations

import importlib
import itertools
import json
import math

import pytest
import yaml

from conftest import TINY, merged
from zoo.comparison import report
from zoo.errors import ConfigError

compare_lib = importlib.import_module("zoo.comparison.runner")

LRS = [1e-3, 3e-3, 1e-2]


def _model(directory, name: str, model: dict, dataset: str = "digits", sub: str = "") -> str:
    folder = directory / sub if sub else directory
    folder.mkdir(parents=True, exist_ok=True)
    raw = merged(TINY, {"name": name, "data": {"name": dataset}})
    raw["model"] = model
    path = folder / f"{name.split('_')[-1] if sub else name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _compare(directory, **raw) -> str:
    # population: off: `fit`, stubbed below, trains every run (populations: tests/test_population.py)
    raw = {"name": "proto", "dataset": "digits", "seeds": [0, 1], "budget": {"steps": 10}, "population": "off", **raw}
    if "models" not in raw:
        raw["models"] = [_model(directory, "tiny_mlp", {"name": "mlp", "hidden_sizes": [8]}),
                         _model(directory, "tiny_cnn", {"name": "cnn", "features": [4], "hidden": 8})]
    path = directory / "compare.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


class FakeFit:
    """Stands in for `fit`: writes config.json and result.json (a finished run) and records the call.

    `scores(config) -> (val_accuracy, test_accuracy)`; `stop_after`: the call that is 'stopped'."""

    def __init__(self, scores=None, stop_after=None):
        self.calls, self.scores, self.stop_after = [], scores or (lambda c: (0.5, 0.5)), stop_after

    def __call__(self, config, run_dir, progress=None, dataset=None):
        self.calls.append((config, run_dir))
        if self.stop_after is not None and len(self.calls) > self.stop_after:
            return {"stopped": "SIGINT", "run_dir": str(run_dir), "step": 0}
        val, test = self.scores(config)
        steps = config.train.steps
        result = {"model": config.model.name, "family": "dnn", "params": 100, "steps": steps, "final_step": steps,
                  "final": {"val_accuracy": val, "val_loss": 1 - val, "test_accuracy": test, "test_loss": 1 - test},
                  "best_accuracy": test, "compile_seconds": 0.1, "ms_per_step": 1.0, "examples_per_sec": 1.0,
                  "train_seconds": steps / 1000, "resumed_from": 0}
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
        (run_dir / "result.json").write_text(json.dumps(result))
        return result


@pytest.fixture
def stubbed(monkeypatch):
    """Stubs fit (FakeFit), the train-step measurement and the forward FLOPs; returns the FakeFit."""
    fake = FakeFit()
    per_step = {"mlp": (1e-3, 1e6), "cnn": (4e-3, 4e6)}
    measured = []

    def measure(config, dataset, timed_steps=20):
        measured.append(config.name)
        seconds, flops = per_step[config.model.name]
        return {"seconds_per_step": seconds if timed_steps else None, "flops_per_step": flops}

    monkeypatch.setattr(compare_lib, "fit", fake)
    monkeypatch.setattr(compare_lib, "measure_step", measure)
    monkeypatch.setattr(compare_lib, "forward_flops", lambda config, spec: 1e3)
    fake.measured = measured
    return fake


def _lr(config) -> float:
    return config.optimizer.learning_rate


@pytest.mark.slow
def test_sweep_selects_by_validation_when_test_disagrees(tmp_path, stubbed):
    # validation ranks lr 3e-3 first; test ranks 1e-2 first: the choice must follow validation
    val = {1e-3: 0.80, 3e-3: 0.90, 1e-2: 0.70}
    test = {1e-3: 0.80, 3e-3: 0.60, 1e-2: 0.99}
    stubbed.scores = lambda c: (val[_lr(c)], test[_lr(c)])
    path = _compare(tmp_path, sweep={"optimizer.learning_rate": LRS, "select": {"metric": "val_accuracy"}})
    result = compare_lib.compare(path, tmp_path / "work")
    assert all(row["setting"] == json.dumps({"optimizer.learning_rate": 3e-3}) for row in result["rows"])
    assert {t["setting"]["optimizer.learning_rate"] for t in result["trials"] if t["chosen"]} == {3e-3}


def test_sweep_selection_reads_no_test_metric():
    class ValidationOnly(dict):
        def __getitem__(self, key):
            assert not key.startswith("test"), f"selection read {key}"
            return super().__getitem__(key)

        def get(self, key, default=None):
            assert not key.startswith("test"), f"selection read {key}"
            return super().get(key, default)

    results = [{"final": ValidationOnly(val_accuracy=v, test_accuracy=t)} for v, t in ((0.8, 0.9), (0.9, 0.1))]
    scores = [[compare_lib.validation_score(r, "val_accuracy")] for r in results]
    assert compare_lib.select_setting(scores, "val_accuracy") == 1
    assert compare_lib.select_setting([[0.3], [0.2]], "val_loss") == 1


@pytest.mark.slow
def test_sweep_trains_every_setting_on_the_tuning_seed_then_every_seed_at_the_choice(tmp_path, stubbed):
    stubbed.scores = lambda c: ({1e-3: 0.8, 3e-3: 0.9, 1e-2: 0.7}[_lr(c)], 0.5)
    path = _compare(tmp_path, seeds=[0, 1, 2], sweep={"optimizer.learning_rate": LRS})
    compare_lib.compare(path, tmp_path / "work")
    mlp = [(c.seed, _lr(c)) for c, _ in stubbed.calls if c.name == "tiny_mlp"]
    assert mlp == [(0, 1e-3), (0, 3e-3), (0, 1e-2), (1, 3e-3), (2, 3e-3)]


@pytest.mark.slow
def test_sweep_report_lists_every_trial_marks_the_choice_and_flags_the_edge(tmp_path, stubbed):
    stubbed.scores = lambda c: ({1e-3: 0.8, 3e-3: 0.85, 1e-2: 0.9}[_lr(c)], 0.5)
    path = _compare(tmp_path, sweep={"optimizer.learning_rate": LRS})
    compare_lib.compare(path, tmp_path / "work")
    text = (tmp_path / "work" / "report" / "report.md").read_text()
    assert "learning_rate at the top of the grid: widen it" in text
    trial_rows = [line for line in text.splitlines() if line.startswith("| tiny_") and "learning_rate=" in line]
    assert len(trial_rows) == 2 * len(LRS)
    assert sum("←" in line for line in trial_rows) == 2


def test_random_sweep_samples_n_settings_with_the_compare_seed(tmp_path):
    grid = {"optimizer.learning_rate": LRS, "optimizer.weight_decay": [0.0, 1e-4]}
    configs = [compare_lib.load_compare(_compare(tmp_path, seed=seed, sweep={**grid, "random": 3}))
               for seed in (0, 0, 1)]
    points = [c.arms[0].sweep.settings(c.seed) for c in configs]
    grid = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    assert len(points[0]) == 3 and points[0] == points[1]  # the same seed draws the same settings
    assert all(p in grid for p in points[0] + points[2])
    assert len({json.dumps(p, sort_keys=True) for p in points[0]}) == 3  # without repeats


def test_model_entry_sweep_overrides_the_compare_sweep(tmp_path, stubbed):
    mlp = _model(tmp_path, "tiny_mlp", {"name": "mlp", "hidden_sizes": [8]})
    cnn = _model(tmp_path, "tiny_cnn", {"name": "cnn", "features": [4], "hidden": 8})
    path = _compare(tmp_path, sweep={"optimizer.learning_rate": LRS},
                    models=[mlp, {"config": cnn, "sweep": {}}])
    config = compare_lib.load_compare(path)
    assert [bool(arm.sweep) for arm in config.arms] == [True, False]


@pytest.mark.slow
def test_resuming_a_half_finished_sweep_reuses_every_finished_trial(tmp_path, stubbed):
    path = _compare(tmp_path, sweep={"optimizer.learning_rate": LRS})
    stubbed.stop_after = 4  # stopped in the fifth run: tiny_mlp's 3 trials and final seed 1, then tiny_cnn
    assert compare_lib.compare(path, tmp_path / "work")["stopped"] == "SIGINT"
    finished = [run_dir for _, run_dir in stubbed.calls[:4]]
    stubbed.calls.clear()
    stubbed.stop_after = None
    result = compare_lib.compare(path, tmp_path / "work")
    retrained = [run_dir for _, run_dir in stubbed.calls]
    assert not set(retrained) & set(finished)
    assert (result["trained"], result["reused"]) == (4, 4)


@pytest.mark.slow
def test_seconds_budget_gives_each_model_seconds_over_its_measured_step_time(tmp_path, stubbed):
    path = _compare(tmp_path, budget={"seconds": 0.1})  # mlp 1 ms/step -> 100 steps; cnn 4 ms/step -> 25
    result = compare_lib.compare(path, tmp_path / "work")
    steps = {c.name: c.train.steps for c, _ in stubbed.calls}
    assert steps == {"tiny_mlp": 100, "tiny_cnn": 25}
    assert {(r["config"], r["steps"]) for r in result["rows"]} == {("tiny_mlp", 100), ("tiny_cnn", 25)}
    text = (tmp_path / "work" / "report" / "report.md").read_text()
    assert "0.1 s of measured step time" in text and "tiny_mlp 100 steps" in text


@pytest.mark.slow
def test_flops_budget_gives_each_model_flops_over_its_step_flops(tmp_path, stubbed):
    path = _compare(tmp_path, budget={"flops": 1e8})  # mlp 1e6 FLOPs/step -> 100 steps; cnn 4e6 -> 25
    compare_lib.compare(path, tmp_path / "work")
    assert {c.name: c.train.steps for c, _ in stubbed.calls} == {"tiny_mlp": 100, "tiny_cnn": 25}


@pytest.mark.slow
def test_budget_calibration_is_measured_once_and_kept(tmp_path, stubbed):
    path = _compare(tmp_path, budget={"seconds": 0.1})
    compare_lib.compare(path, tmp_path / "work")
    measured = len(stubbed.measured)
    result = compare_lib.compare(path, tmp_path / "work")
    assert len(stubbed.measured) == measured and result["trained"] == 0


@pytest.mark.slow
def test_budget_s_stops_launching_runs_and_reports_what_was_skipped(tmp_path, stubbed, monkeypatch):
    clock = iter(range(0, 10_000, 10))  # every reading 10 s later than the last
    monkeypatch.setattr(compare_lib, "_now", lambda: next(clock))
    path = _compare(tmp_path)
    result = compare_lib.compare(path, tmp_path / "work", budget_s=15)
    assert result["trained"] >= 1 and result["skipped"]
    assert result["trained"] + len(result["skipped"]) == 4
    text = (tmp_path / "work" / "report" / "report.md").read_text()
    assert "--budget-s 15 ran out" in text


@pytest.mark.slow
def test_many_datasets_write_one_report_with_a_model_by_dataset_table(tmp_path, stubbed):
    for dataset in ("digits", "mnist1d"):
        _model(tmp_path, f"{dataset}_mlp", {"name": "mlp", "hidden_sizes": [8]}, dataset, sub=dataset)
    path = _compare(tmp_path, dataset=None, datasets=["digits", "mnist1d"],
                    models=[str(tmp_path / "{dataset}" / "mlp.yaml")])
    raw = yaml.safe_load(open(path))
    raw.pop("dataset")
    open(path, "w").write(yaml.safe_dump(raw))
    result = compare_lib.compare(path, tmp_path / "work")
    assert {(r["dataset"], r["config"]) for r in result["rows"]} == {("digits", "digits_mlp"),
                                                                    ("mnist1d", "mnist1d_mlp")}
    text = (tmp_path / "work" / "report" / "report.md").read_text()
    assert "| model | digits | mnist1d |" in text and "## digits" in text and "## mnist1d" in text
    for name in ("heatmap.png", "digits_curves.png", "mnist1d_flops.png"):
        assert (tmp_path / "work" / "report" / name).read_bytes()[:4] == b"\x89PNG"


def test_confidence_interval_matches_a_hand_computed_example():
    mean, std, half = report.mean_ci([0.90, 0.92, 0.94])
    # mean 0.92, sample std 0.02, t(0.975, df=2) = 4.302653: half-width 4.302653 * 0.02 / sqrt(3)
    assert (mean, std) == pytest.approx((0.92, 0.02))
    assert half == pytest.approx(0.0496827, rel=1e-5)


def test_paired_t_test_matches_a_hand_computed_p_value():
    a, b = [0.95, 0.96, 0.97], [0.93, 0.95, 0.94]
    # differences 0.02, 0.01, 0.03: t = 0.02 / (0.01 / sqrt(3)) = 2 sqrt(3); for df = 2 the two-sided
    # p-value has the closed form 1 - t / sqrt(t^2 + 2)
    t = 2 * math.sqrt(3)
    assert report.paired_t_test(a, b) == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-9)
    assert report.paired_t_test(a, a) == 1.0


def test_ranking_marks_models_not_distinguishable_from_the_best():
    def runs(config, accuracies):
        return [{"dataset": "d", "config": config, "model": "m", "family": "f", "seed": seed, "params": 1,
                 "flops_per_example": 1.0, "steps": 10, "batch_size": 1, "final_accuracy": acc}
                for seed, acc in enumerate(accuracies)]

    rows = runs("a", [0.95, 0.96, 0.97]) + runs("b", [0.94, 0.97, 0.95]) + runs("c", [0.50, 0.52, 0.51])
    marks = {m["config"]: m["vs_best"] for m in report.summarize(rows)}
    assert marks == {"a": "best", "b": "same", "c": "worse"}


@pytest.mark.parametrize("change, phrases", [
    ({"sweep": {"optimizer.learning_rate": LRS, "selct": {"seeds": 1}}}, ("unknown key 'sweep.selct'",
                                                                          "did you mean 'select'")),
    ({"sweep": {"optimizer.learning_rat": LRS}}, ("unknown key 'optimizer.learning_rat'",
                                                  "did you mean 'learning_rate'")),
    ({"sweep": {"optimizer.learning_rate": [-1.0]}}, ("optimizer.learning_rate", "out of range")),
    ({"budget": {"steps": 5, "seconds": 3}}, ("budget: give exactly one of",)),
    ({"budget": {"seconds": -3}}, ("budget.seconds", "out of range")),
    ({"budget": {"flop": 1e9}}, ("unknown key 'budget.flop'", "did you mean 'flops'")),
    ({"sweep": {"optimizer.learning_rate": LRS, "select": {"metric": "test_accuracy"}}},
     ("'test_accuracy' is not valid",)),
    ({"datasets": ["digits", "mnist1dd"]}, ("datasets[1]", "did you mean 'mnist1d'")),
])
def test_bad_compare_config_is_one_clear_line(tmp_path, zoo_main, one_line_error, change, phrases):
    path = _compare(tmp_path, **change)
    if "datasets" in change:
        raw = yaml.safe_load(open(path))
        raw.pop("dataset")
        open(path, "w").write(yaml.safe_dump(raw))
    status, _, err = zoo_main("compare", path, "--workdir", tmp_path / "work")
    assert status == 2
    one_line_error(err, *phrases)
    assert not (tmp_path / "work").exists()


def test_sweep_without_a_validation_split_is_refused(tmp_path):
    mlp = _model(tmp_path, "tiny_mlp", {"name": "mlp", "hidden_sizes": [8]})
    raw = yaml.safe_load(open(mlp))
    raw["data"]["validation"] = 0.0
    open(mlp, "w").write(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="validation split only"):
        compare_lib.load_compare(_compare(tmp_path, models=[mlp], sweep={"optimizer.learning_rate": LRS}))


@pytest.mark.slow
def test_train_step_flops_exceed_twice_the_forward_flops(compile_cache):
    from zoo.config import from_dict
    from zoo.data import load_dataset

    config = from_dict(merged(TINY, {"model": {"name": "mlp", "hidden_sizes": [16]}}))
    dataset = load_dataset("digits")
    measured = compare_lib.measure_step(config, dataset, timed_steps=2)
    forward = compare_lib.forward_flops(config, dataset.spec) * config.data.batch_size
    assert measured["flops_per_step"] > 2 * forward and measured["seconds_per_step"] > 0


def test_dataset_entry_may_be_a_data_mapping_merged_into_every_model(tmp_path, stubbed):
    mlp = _model(tmp_path, "tiny_mlp", {"name": "mlp", "hidden_sizes": [8]})
    path = _compare(tmp_path, models=[mlp], datasets=["digits", {"name": "digits", "display": "digits_v20",
                                                                 "validation": 0.2}])
    raw = yaml.safe_load(open(path))
    raw.pop("dataset")
    open(path, "w").write(yaml.safe_dump(raw))
    config = compare_lib.load_compare(path)
    arms = {arm.dataset: arm.base for arm in config.arms}
    assert (arms["digits"].data.validation, arms["digits_v20"].data.validation) == (0.1, 0.2)
    assert (arms["digits"].name, arms["digits_v20"].name) == ("digits_tiny_mlp", "digits_v20_tiny_mlp")
