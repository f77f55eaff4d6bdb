"""Regression end to end (issue 24, `task: regress`): a CSV with two target columns trains (one tiny run
shared by the session), evaluates to exactly the recorded metrics, predicts in the targets' original
units from the run and from its export; bad targets are refused at load; the built-in diabetes data,
the least-squares baseline and the regression report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

TARGETS = ("price", "tax")


def write_csv(path, rows: int = 120, seed: int = 0, cell=None) -> None:
    """Three features and two targets on very different scales; `cell` = (row, column, text) replaces one."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    price = 100 + 20 * x[:, 0] - 10 * x[:, 1] + rng.normal(0, 2, rows)
    tax = -5 + 0.1 * x[:, 2] + rng.normal(0, 0.01, rows)
    lines = [["a", "b", "c", *TARGETS]] + [[f"{v:.6g}" for v in (*x[i], price[i], tax[i])] for i in range(rows)]
    if cell is not None:
        row, column, text = cell
        lines[row][lines[0].index(column)] = text
    path.write_text("\n".join(",".join(line) for line in lines) + "\n")


def regression_config(csv_path, **overrides) -> dict:
    return {"name": "prices", "seed": 0, "task": "regress",
            "data": {"name": "csv", "path": str(csv_path), "label": list(TARGETS), "test": 0.25, "batch_size": 16,
                     "eval_batch_size": 64},
            "model": {"name": "mlp", "hidden_sizes": [8]},
            "optimizer": {"name": "adam", "learning_rate": 1e-2},
            "train": {"steps": 30, "log_every": 10}, "checkpoint": {"every": 15, "keep": 2, "keep_best": 1},
            "logging": {"tensorboard": True}, **overrides}


@pytest.fixture(scope="session")
def regression_run(tmp_path_factory, compile_cache):
    """(run directory, CSV path, config) of a tiny MLP regression on a two-target CSV, trained once."""
    from zoo.config import from_dict
    from zoo.training import fit

    root = tmp_path_factory.mktemp("regression")
    write_csv(root / "prices.csv")
    config = from_dict(regression_config(root / "prices.csv"))
    fit(config, root / "run")
    return root / "run", root / "prices.csv", config


def _test_split(config):
    """The raw test split (features, targets in original units) of the run's data, as the CSV gives it."""
    from zoo import data

    dataset = data.load(config.data, "regress")
    return np.asarray(dataset.x_test), np.asarray(dataset.y_test, np.float64)


@pytest.mark.slow
def test_eval_of_a_regression_run_equals_the_recorded_metrics(regression_run, zoo_main):
    """`zoo eval --best --json` of a regression run gives exactly the loss, RMSE, MAE and R² recorded
    at save time, per split; metrics.jsonl holds the same four per evaluated split."""
    run_dir, _, _ = regression_run
    status, out, err = zoo_main("eval", run_dir, "--best", "--json")
    assert status == 0, err
    result = json.loads(out)
    for split in ("val", "test"):
        assert list(result[split]) == ["loss", "rmse", "mae", "r2"]
        assert result[split] == {key: result["recorded"][f"{split}_{key}"] for key in result[split]}
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {tuple(r) for r in records if r["split"] == "test"} == {("step", "split", "loss", "rmse", "mae", "r2")}


@pytest.mark.slow
def test_predict_returns_values_in_the_targets_original_units(regression_run):
    """LoadedRun.predict undoes the training split's standardisation: its RMSE and R² against the raw
    test targets (prices near 100, taxes near -5) are the metrics recorded for the test split."""
    from sklearn.metrics import r2_score, root_mean_squared_error

    import zoo

    run_dir, _, config = regression_run
    run = zoo.load_run(run_dir, step="best")
    x_test, y_test = _test_split(config)
    predicted = run.predict(x_test)
    assert predicted.shape == y_test.shape == (30, 2) and run.target_names == list(TARGETS)
    recorded = run.meta["metrics"]
    assert root_mean_squared_error(y_test, predicted) == pytest.approx(recorded["test_rmse"], rel=1e-4)
    assert r2_score(y_test, predicted) == pytest.approx(recorded["test_r2"], rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_zoo_predict_writes_one_value_per_target_and_export_predicts_the_same(regression_run, zoo_main, tmp_path):
    """`zoo predict RUN data.csv` (the training CSV: its target columns are dropped) writes a CSV of the
    input and one column per target; a `.zoo` export carries the target scaling (its header names it)
    and predicting from it gives the run's values."""
    import zoo

    run_dir, csv_path, _ = regression_run
    status, out, err = zoo_main("predict", run_dir, csv_path, "--step", "best")
    assert status == 0, err
    assert "dropped the label columns 'price', 'tax'" in err
    header, *rows = out.strip().splitlines()
    assert header == "input,price,tax" and len(rows) == 120
    x = np.loadtxt(csv_path, delimiter=",", skiprows=1, usecols=(0, 1, 2), dtype=np.float32)
    expected = zoo.load_run(run_dir, step="best").predict(x)
    np.testing.assert_allclose([[float(v) for v in row.split(",")[1:]] for row in rows], expected, rtol=1e-6)
    np.save(tmp_path / "x.npy", x[:7])
    status, _, err = zoo_main("export", run_dir, "--out", tmp_path / "model.zoo", "--step", "best")
    assert status == 0, err
    from zoo.interop import artifact

    header = artifact.read(tmp_path / "model.zoo")[0]
    assert header["outputs"] == "values" and header["targets"]["names"] == list(TARGETS)
    status, out, err = zoo_main("predict", tmp_path / "model.zoo", tmp_path / "x.npy", "--json")
    assert status == 0, err
    exported = [[row[name] for name in TARGETS] for row in json.loads(out)]
    np.testing.assert_allclose(exported, expected[:7], rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_tensorboard_events_of_a_regression_hold_its_metrics_and_no_accuracy(regression_run):
    """TensorBoard goes through the task: each evaluated split's loss, RMSE, MAE and R² (as in
    metrics.jsonl) are scalars of the event file, and no accuracy is made up for a regression."""
    from test_logs_and_runs import _events

    run_dir, _, _ = regression_run
    events = _events(run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in records if r["split"] in ("val", "test")]
    assert evaluated
    for record in evaluated:
        for key in ("loss", "rmse", "mae", "r2"):
            assert events[(f"{record['split']}/{key}", record["step"])] == pytest.approx(record[key], rel=1e-6)
    assert not any("accuracy" in tag for tag, _ in events)


@pytest.mark.slow
def test_onnx_export_of_a_regression_gives_the_runs_values_in_onnxruntime(regression_run, tmp_path):
    """`--format onnx` of a regression exports the values in the targets' original units (the scaling
    inside the graph): onnxruntime gives what the run predicts."""
    pytest.importorskip("jax2onnx")
    pytest.importorskip("onnxruntime")
    import zoo
    from zoo.interop.export import export_run
    from zoo.interop.onnx_export import run_onnx

    run_dir, _, config = regression_run
    export_run(run_dir, tmp_path / "model.onnx", step="best", fmt="onnx")
    x = _test_split(config)[0][:5].astype(np.float32)
    np.testing.assert_allclose(run_onnx((tmp_path / "model.onnx").read_bytes(), x),
                               zoo.load_run(run_dir, step="best").predict(x), rtol=1e-5, atol=1e-4)


@pytest.mark.slow  # trains the session's regression run when first
def test_zoo_runs_names_the_metric_a_regression_row_holds(regression_run, zoo_main):
    """`zoo runs` beside a regression run adds a metric column: its rows hold R² (the task's main
    metric; the test value at the validation-loss best step)."""
    run_dir, _, _ = regression_run
    status, out, err = zoo_main("runs", run_dir.parent)
    assert status == 0, err
    header, _, row = out.splitlines()[:3]
    assert header.split()[4] == "metric" and row.split()[4] == "r2"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["best_r2"] == result["best_checkpoint"]["test_r2"]


BAD_TARGETS = {
    "non-numeric target": ((5, "price", "cheap"), ("line 6, column 'price'", "'cheap' is not a number")),
    "NaN target": ((9, "tax", "nan"), ("line 10, column 'tax'", "not a finite number")),
    "infinite feature": ((3, "b", "inf"), ("line 4, column 'b'", "not a finite number")),
}


@pytest.mark.parametrize("case", sorted(BAD_TARGETS))
def test_a_bad_cell_of_a_regression_csv_is_refused_at_load_naming_its_line_and_column(case, tmp_path,
                                                                                     refused_train):
    """Issue 24 bad input: a target that is not a finite number, or a non-finite feature, is refused in
    one line naming the row (as an editor numbers lines) and the column; exit 2, nothing written."""
    cell, phrases = BAD_TARGETS[case]
    write_csv(tmp_path / "bad.csv", cell=cell)
    refused_train(None, *phrases, replace=regression_config(tmp_path / "bad.csv"))


def test_several_label_columns_on_a_classification_are_refused(tmp_path, refused_train):
    """Issue 24: data.label naming two columns is for regression targets; a classification refuses it."""
    write_csv(tmp_path / "data.csv")
    config = regression_config(tmp_path / "data.csv")
    del config["task"]
    refused_train(None, "data.label names 2 columns", "task: regress", replace=config)


def test_class_names_in_an_npz_of_a_regression_are_refused(tmp_path, refused_train):
    """Issue 24: class names (a num_classes-style key of the data) on a regression run: one line."""
    x, y = np.zeros((20, 3), np.float32), np.linspace(0, 1, 20, dtype=np.float32)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x, y_test=y, class_names=np.array(["a", "b"]))
    config = regression_config(tmp_path / "d.npz")
    config["data"] = {"name": "npz", "path": str(tmp_path / "d.npz"), "batch_size": 8}
    refused_train(None, "class names", "task 'regress'", replace=config)


def test_diabetes_is_a_built_in_regression_dataset_standardised_by_its_training_split():
    """Issue 24: `data.name: diabetes` (scikit-learn's, offline): 10 features, one target in its own
    units, a fixed 354/88 split; preparing it standardises the targets by the training split (the
    validation rows held out first) and records the mean and std that predict undoes."""
    from zoo import data
    from zoo.config import from_dict

    config = from_dict({"task": "regress", "data": {"name": "diabetes"}, "train": {"steps": 1}})
    raw = data.load(config.data, "regress")
    assert (raw.spec.input_shape, raw.spec.train_size, raw.spec.test_size) == ((10, 1), 354, 88)
    assert raw.spec.targets == {"names": ["progression"]} and 25 <= raw.y_test.min() < raw.y_test.max() <= 346
    prepared = data.prepare(raw, config.data)
    targets = prepared.spec.targets
    assert abs(prepared.y_train.mean()) < 1e-5 and prepared.y_train.std() == pytest.approx(1.0, rel=1e-4)
    np.testing.assert_allclose(prepared.y_test * targets["std"][0] + targets["mean"][0], raw.y_test, rtol=1e-5)


def test_the_least_squares_baseline_equals_scikit_learn_on_the_same_rows():
    """Issue 24: the report's linear baseline is ordinary least squares fit on the rows the models train
    on and scored on the test split, equal to scikit-learn's LinearRegression there."""
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import r2_score, root_mean_squared_error

    from zoo import data
    from zoo.comparison.runner import least_squares
    from zoo.config import from_dict

    config = from_dict({"task": "regress", "data": {"name": "diabetes"}, "train": {"steps": 1}})
    prepared = data.prepare(data.load(config.data, "regress"), config.data)
    raw = data.load(config.data, "regress")
    train_x = np.asarray(prepared.x_train).reshape(len(prepared.x_train), -1)
    train_y = prepared.y_train[:, 0] * prepared.spec.targets["std"][0] + prepared.spec.targets["mean"][0]
    fit = LinearRegression().fit(train_x, train_y)
    predicted = fit.predict(np.asarray(prepared.x_test).reshape(len(prepared.x_test), -1))
    baseline = least_squares(prepared)
    assert baseline["train_rows"] == 319 and baseline["test_rows"] == 88
    assert baseline["r2"] == pytest.approx(r2_score(raw.y_test, predicted), rel=1e-4)
    assert baseline["rmse"] == pytest.approx(root_mean_squared_error(raw.y_test, predicted), rel=1e-4)


def _rows(tmp_path) -> list[dict]:
    rows = []
    for config, r2s, rmses in (("diabetes_a", (0.50, 0.52, 0.51), (60.1, 59.0, 59.9)),
                               ("diabetes_b", (0.40, 0.47, 0.44), (66.0, 61.5, 62.2))):
        for seed, (r2, rmse) in enumerate(zip(r2s, rmses)):
            run_dir = tmp_path / "runs" / config / f"seed{seed}"
            run_dir.mkdir(parents=True)
            (run_dir / "metrics.jsonl").write_text("".join(
                json.dumps({"step": s, "split": split, "loss": 1.0, "rmse": 60.0, "mae": 50.0, "r2": r2}) + "\n"
                for s in (50, 100) for split in ("val", "test")))
            rows.append({"compare": "diabetes", "dataset": "diabetes", "config": config, "label": config[-1],
                         "model": "mlp", "family": "dnn", "seed": seed, "params": 11, "flops_per_example": 21.0,
                         "batch_size": 32, "steps": 100, "compile_seconds": 1.0, "ms_per_step": 0.1,
                         "examples_per_sec": 1e5, "train_seconds": 0.1, "wall_seconds": 1.0, "final_r2": r2,
                         "final_rmse": rmse, "final_val_r2": 0.3, "final_val_rmse": 62.0,
                         "best_r2": r2, "best_rmse": rmse, "final_loss": 0.6, "final_step": 100,
                         "run_dir": f"runs/{config}/seed{seed}"})
    return rows


@pytest.mark.slow
def test_a_regression_report_ranks_by_r2_and_gives_rmse_with_its_ci_and_paired_tests(tmp_path):
    """Issue 24, compare report: a regression's table has R² and RMSE columns, each with its 95% CI and a
    paired t-test against the best model (by R²); results.csv names them; the least-squares line is printed."""
    from zoo.comparison import report

    rows = _rows(tmp_path)
    baseline = {"method": "ordinary least squares", "train_rows": 319, "test_rows": 88, "r2": 0.5004,
                "rmse": 60.42, "mae": 50.29}
    meta = {"name": "diabetes", "dataset": "diabetes", "seeds": [0, 1, 2], "budget": "100 steps",
            "task": "regress", "baselines": {"diabetes": baseline}}
    written = report.write_report(tmp_path / "report", rows, meta, tmp_path)
    a, b = written["models"]
    assert (a["label"], b["label"]) == ("a", "b") and a["vs_best"] == a["vs_best_rmse"] == "best"
    assert b["p_vs_best_rmse"] == pytest.approx(report.paired_t_test(
        [r["final_rmse"] for r in rows[:3]], [r["final_rmse"] for r in rows[3:]]))
    assert b["final_rmse_ci"] == pytest.approx(report.mean_ci(r["final_rmse"] for r in rows[3:])[2])
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| final test R² | 95% CI | vs best (paired t) | test R² at best val | final test RMSE | 95% CI |" in text
    assert "test R² 0.5004, RMSE 60.42" in text and "test R² 0.5004" in written["table"]
    header = (tmp_path / "report" / "results.csv").read_text().splitlines()[0].split(",")
    assert {"final_r2", "final_rmse", "best_r2", "final_val_rmse"} <= set(header) and "final_accuracy" not in header
    assert not math.isnan(b["p_vs_best"])


def test_a_compare_of_two_tasks_or_selecting_regression_on_accuracy_is_refused(tmp_path, zoo_main, one_line_error):
    """Issue 24: one compare trains one task (its report ranks one metric); a regression sweep cannot
    select on val_accuracy. Each: one line, exit 2, before anything trains."""
    write_csv(tmp_path / "data.csv")
    mixed = {"name": "mixed", "dataset": {"name": "csv", "path": str(tmp_path / "data.csv"), "label": "price",
                                          "test": 0.2}, "budget": {"steps": 5},
             "models": ["configs/diabetes/linear.yaml", "configs/digits/mlp.yaml"]}
    sweep = {"name": "sweep", "dataset": "diabetes", "budget": {"steps": 5}, "models": ["configs/diabetes/linear.yaml"],
             "sweep": {"optimizer.learning_rate": [1e-3, 3e-3], "select": {"metric": "val_accuracy"}}}
    for raw, phrases in ((mixed, ("a compare trains one task",)), (sweep, ("sweep.select.metric 'val_accuracy'",))):
        (tmp_path / "compare.yaml").write_text(yaml.safe_dump(raw))
        status, _, err = zoo_main("compare", tmp_path / "compare.yaml", "--workdir", tmp_path / "work")
        assert status == 2 and not (tmp_path / "work").exists()
        one_line_error(err, *phrases)
