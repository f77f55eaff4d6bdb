"""Issue 22, "what a new user tripped on", the compare items: a compare on your own CSV (item 5),
derived configs that change the model (item 6), `tensorboard: true` in a compare (item 8), where
`zoo bench` writes (item 9), and what a `{seconds: S}` budget and the ETA count (item 10)."""

from __future__ import annotations

import importlib
import importlib.util
import io
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_compare_protocol import FakeFit, _compare, _model

from zoo import data as data_lib
from zoo.comparison.schema import load_compare
from zoo.config import load
from zoo.errors import ConfigError
from zoo.metrics import Progress

REPO = Path(__file__).resolve().parents[1]
runner_lib = importlib.import_module("zoo.comparison.runner")


def write_wine_csv(path: Path) -> Path:
    """scikit-learn's wine data (178 rows, 13 columns, class in `target`) as docs/own-data.md writes it."""
    from sklearn.datasets import load_wine

    wine = load_wine()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, np.column_stack([wine.data, wine.target]), delimiter=",", comments="", fmt="%g",
               header=",".join([*wine.feature_names, "target"]))
    return path


def compare_on(tmp_path, dataset_key: str, entry) -> str:
    """A compare config of the tiny MLP with `dataset_key` (dataset or datasets) set to `entry`."""
    raw = yaml.safe_load(open(_compare(tmp_path, models=[_model(tmp_path, "tiny_mlp", {"name": "mlp"})])))
    raw.pop("dataset")
    raw[dataset_key] = entry
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


# --- item 5: a compare on your own CSV -------------------------------------------------------------


def test_a_compare_data_mapping_gives_label_to_the_csv_reader_and_display_to_the_report(tmp_path):
    """Item 22.5: in `datasets: [{name: csv, ..., label: target}]` `label` is data.label (the class
    column), as in a run's data section; the report's name for the dataset is `display`."""
    csv = write_wine_csv(tmp_path / "wine.csv")
    entry = {"name": "csv", "path": str(csv), "label": "target", "test": 0.2, "display": "wine"}
    config = load_compare(compare_on(tmp_path, "datasets", [entry]))
    assert config.datasets == ("wine",)
    assert (config.arms[0].base.data.name, config.arms[0].base.data.label) == ("csv", "target")


def test_the_dataset_key_takes_a_data_mapping(tmp_path):
    """Item 22.5: `dataset:` takes the same data mapping as `datasets:` (its own error offered one);
    without `display` the report names it after the format and the file."""
    csv = write_wine_csv(tmp_path / "wine.csv")
    config = load_compare(compare_on(tmp_path, "dataset", {"name": "csv", "path": str(csv), "label": "target"}))
    assert config.datasets == ("csv_wine",)
    assert config.arms[0].base.data.label == "target"


def test_a_compare_data_mapping_is_checked_by_the_data_schema_at_its_own_key(tmp_path):
    """Item 22.5: the data mapping is validated by zoo.config's DataConfig; a misspelt key is named
    at its place in the compare config, with the did-you-mean."""
    path = compare_on(tmp_path, "datasets", [{"name": "csv", "path": "x.csv", "lable": "target"}])
    with pytest.raises(ConfigError, match=r"unknown key 'datasets\[0\]\.lable': did you mean 'label'"):
        load_compare(path)


def test_label_of_a_dataset_without_a_label_column_points_to_display(tmp_path):
    """Item 22.5: `label` once named the dataset in the report; given to a source without a label
    column, the refusal says that the report's name is now `display`."""
    path = compare_on(tmp_path, "datasets", ["digits", {"name": "digits", "label": "digits_v20", "validation": 0.2}])
    with pytest.raises(ConfigError, match=r"datasets\[1\]\.label.*display: digits_v20"):
        load_compare(path)


def test_the_own_csv_example_compare_parses_against_a_generated_wine_csv(tmp_path):
    """Item 22.5: configs/compare/own_csv.yaml (first line: the command that runs it) parses with
    `zoo.load_compare` and its data loads from a wine CSV written as docs/own-data.md says."""
    path = REPO / "configs" / "compare" / "own_csv.yaml"
    assert path.read_text().splitlines()[0].startswith("# zoo compare configs/compare/own_csv.yaml")
    csv = write_wine_csv(tmp_path / "data" / "wine.csv")
    config = load_compare(path, [f"dataset.path={csv}"])
    assert config.datasets == ("wine",) and len(config.arms) >= 2
    assert {arm.base.data.label for arm in config.arms} == {"target"}
    dataset = data_lib.load(config.arms[0].base.data)
    assert dataset.spec.num_classes == 3 and dataset.spec.input_shape == (13, 1)
    assert "data/wine.csv" in (REPO / "docs" / "own-data.md").read_text()


# --- item 6: derived configs that change the model --------------------------------------------------


def write_base_and_child(tmp_path, base_model: dict, child_model: dict) -> Path:
    base = {"name": "base", "data": {"name": "digits"}, "model": base_model, "train": {"steps": 10}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"base": "base.yaml", "name": "child", "model": child_model}))
    return child


def test_a_derived_config_that_changes_model_name_does_not_keep_the_base_hyperparameters(tmp_path):
    """Item 22.6: `base:` an MLP config and `model: {name: cnn}`: the MLP's hidden_sizes do not carry
    over (the model section is replaced when the name differs)."""
    child = write_base_and_child(tmp_path, {"name": "mlp", "hidden_sizes": [16], "dropout": 0.1},
                                 {"name": "cnn", "features": [4]})
    assert load(child).model.hparams == {"features": [4]}


def test_a_derived_config_with_the_same_model_name_still_merges_the_hyperparameters(tmp_path):
    """Item 22.6: the model section still merges key by key when the name stays (or is not given)."""
    child = write_base_and_child(tmp_path, {"name": "mlp", "hidden_sizes": [16]}, {"dropout": 0.1})
    assert load(child).model.hparams == {"hidden_sizes": [16], "dropout": 0.1}


def test_a_compare_refuses_a_bad_model_hyperparameter_before_any_run(tmp_path, zoo_main, one_line_error):
    """Item 22.6: every member's model hyperparameters are checked when the compare config is read,
    before the first run trains: one line naming the compare file and the model file, exit 2, no
    workdir."""
    mlp = _model(tmp_path, "tiny_mlp", {"name": "mlp", "hidden_sizes": [8]})
    cnn = _model(tmp_path, "tiny_cnn", {"name": "cnn", "hidden_sizes": [8]})
    path = _compare(tmp_path, models=[mlp, cnn])
    status, _, err = zoo_main("compare", path, "--workdir", tmp_path / "work")
    assert status == 2
    one_line_error(err, f"{path}: models: {cnn}: ", "model 'cnn' has no hyperparameter 'hidden_sizes'")
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("base_extra, key", [({"model": {"name": "cnn", "hiden": 8}}, "model.hiden"),
                                             ({"optimizer": {"learning_rat": 0.1}}, "optimizer.learning_rat")])
def test_a_bad_key_set_by_a_base_names_the_base(tmp_path, base_extra, key):
    """Item 22.6: when a compare member's bad key (a model hyperparameter or any other) came from its
    base config, the error names the member's file and that base."""
    child = write_base_and_child(tmp_path, {"name": "cnn"}, {"features": [4]})
    base = yaml.safe_load((tmp_path / "base.yaml").read_text())
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**base, **base_extra}))
    with pytest.raises(ConfigError) as refusal:
        load_compare(_compare(tmp_path, models=[str(child)]))
    message = str(refusal.value)
    assert f"models: {child}: " in message and f"({key} is set in its base {tmp_path / 'base.yaml'})" in message


# --- item 8: tensorboard in a compare ---------------------------------------------------------------


def test_compare_tensorboard_true_turns_on_tensorboard_in_every_run(tmp_path):
    """Item 22.8: `tensorboard: true` in a compare config sets logging.tensorboard in every run."""
    config = load_compare(_compare(tmp_path, tensorboard=True))
    runs = [config.run_config(arm, seed) for arm in config.arms for seed in config.seeds]
    assert len(runs) == 4 and all(run.logging.tensorboard for run in runs)
    assert not any(load_compare(_compare(tmp_path)).run_config(arm, 0).logging.tensorboard
                   for arm in config.arms)


# --- item 9: where zoo bench writes -----------------------------------------------------------------


def test_zoo_bench_help_says_results_go_to_a_run_folder(capsys):
    """Item 22.9: `zoo bench --help` gives runs/bench/<time>/ as the default place for the results,
    and writing the committed benchmarks/ record as an explicit --out."""
    from zoo import cli

    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: runs/bench/<UTC time>/" in text and "--out benchmarks" in text


def test_zoo_bench_by_default_does_not_write_the_committed_benchmarks_folder(monkeypatch):
    """Item 22.9: with no --out, `zoo bench` hands benchmarks/bench.py no output folder, and
    bench.py's own default is a new folder under runs/bench/, never benchmarks/ (checked dry: the
    benchmark does not run)."""
    import subprocess

    from zoo import cli

    forwarded = []
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: forwarded.append(command) or
                        subprocess.CompletedProcess(command, 0))
    assert cli.main(["bench", "--quick"]) == 0
    assert "--out" not in forwarded[0] and "--quick" in forwarded[0]
    spec = importlib.util.spec_from_file_location("bench_script", REPO / "benchmarks" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_script", bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    out = bench.default_out_dir()
    assert out.parts[:2] == ("runs", "bench") and len(out.parts) == 3
    assert (REPO / "benchmarks").resolve() not in (REPO / out).resolve().parents


# --- item 10: a seconds budget, its evaluations and the ETA -----------------------------------------


def evaluation_steps(config) -> set[int]:
    """The steps a run of `config` evaluates at: every eval_every, every checkpoint, the last step."""
    steps = config.train.steps
    every = [n for n in (config.train.eval_every, config.checkpoint.every) if n]
    return {s for n in every for s in range(n, steps + 1, n)} | {steps}


def test_a_seconds_budget_gives_each_run_at_most_twenty_evaluations(tmp_path):
    """Item 22.10: the compare's eval_every: 100 under {seconds: 30} of a 1 ms step (30,000 steps)
    gave 300 evaluations; the interval (and checkpoint.every, which also evaluates) now stretches
    to at most 20 evaluations per run (plus the last step), whatever the step count."""
    mlp = _model(tmp_path, "tiny_mlp", {"name": "mlp", "hidden_sizes": [8]})
    raw = yaml.safe_load(open(mlp))
    raw["checkpoint"]["every"] = 500  # as configs/digits/ have it
    Path(mlp).write_text(yaml.safe_dump(raw))
    config = load_compare(_compare(tmp_path, models=[mlp], budget={"seconds": 30}, eval_every=100))
    for steps in (30_000, 3_127, 40):
        run = config.run_config(config.arms[0], 0, steps=steps)
        assert run.train.steps == steps and len(evaluation_steps(run)) <= 21, steps


def test_a_model_configs_own_eval_every_is_kept_under_a_seconds_budget(tmp_path):
    """Item 22.10: a model config that sets train.eval_every itself keeps it (the compare sets none)."""
    mlp = _model(tmp_path, "tiny_mlp", {"name": "mlp", "hidden_sizes": [8]})
    raw = yaml.safe_load(open(mlp))
    raw["train"]["eval_every"] = 100
    Path(mlp).write_text(yaml.safe_dump(raw))
    config = load_compare(_compare(tmp_path, models=[mlp], budget={"seconds": 30}))
    assert config.run_config(config.arms[0], 0, steps=30_000).train.eval_every == 100


class ClockedFit(FakeFit):
    """A FakeFit that advances the runner's clock by `walls[model name]` per run."""

    def __init__(self, walls: dict):
        super().__init__()
        self.walls, self.now = walls, 0.0

    def clock(self) -> float:
        return self.now

    def __call__(self, config, run_dir, progress=None, dataset=None):
        self.now += self.walls[config.model.name]
        return super().__call__(config, run_dir, progress, dataset)


def test_the_eta_counts_each_model_at_its_own_measured_time(tmp_path, monkeypatch):
    """Item 22.10: the ETA was the mean run time of every finished run times the runs left, so a slow
    model after fast ones was under-counted. Each run left now counts its own model's measured time
    (its finished runs, else its calibrated steps x step time x the overhead measured so far)."""
    fit = ClockedFit({"mlp": 10.0, "cnn": 40.0})
    monkeypatch.setattr(runner_lib, "fit", fit)
    monkeypatch.setattr(runner_lib, "_now", fit.clock)
    monkeypatch.setattr(runner_lib, "measure_step", lambda config, dataset, timed_steps=20: {
        "seconds_per_step": {"mlp": 1e-3, "cnn": 4e-3}[config.model.name], "flops_per_step": 1e6})
    config = load_compare(_compare(tmp_path, budget={"seconds": 0.1}, seeds=[0, 1, 2]))
    stream = io.StringIO()
    runner = runner_lib._Runner(config, tmp_path / "work", {"digits": None}, Progress(stream, False), None)
    etas = []
    for arm in config.arms:
        for seed in config.seeds:
            runner.run(arm, {}, seed, "final")
            etas.append(stream.getvalue().splitlines()[-1].rsplit("ETA ", 1)[1])
    # mlp: 100 steps x 1 ms promised 0.1 s, took 10 s; cnn: 25 x 4 ms, the same 0.1 s, so 10 s until
    # its own first run shows 40 s
    assert etas == ["50 s", "40 s", "30 s", "1 min 20 s", "40 s", "0 s"]
    assert math.isclose(sum(runner.run_seconds), 150.0)
