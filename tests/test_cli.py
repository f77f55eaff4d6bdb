"""The command line end to end: list, train a tiny config, evaluate from the checkpoint alone."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY, merged
from zoo import models
from zoo.cli import main

REPO = Path(__file__).resolve().parents[1]


CACHE_ENV = {}  # the suite's persistent compilation cache, once `trained` has set it up


def zoo(*args, cwd=REPO):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **CACHE_ENV}
    return subprocess.run([sys.executable, "-m", "zoo.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, compile_cache):
    """A 30-step run trained by `zoo train` in a subprocess; the later commands share its compiles."""
    CACHE_ENV.update({"JAX_COMPILATION_CACHE_DIR": str(compile_cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                      "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"})
    root = tmp_path_factory.mktemp("cli")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(merged(TINY, {"model": {"hidden_sizes": [32]}, "optimizer": {"schedule": "constant"},
                                                   "train": {"steps": 30, "log_every": 10}})))
    run_dir = root / "run"
    done = zoo("train", config, "--workdir", run_dir)
    assert done.returncode == 0, done.stderr
    return config, run_dir, done


@pytest.mark.slow  # builds every registered model, the largest ResNets included
def test_list_names_every_registered_model(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in models.list_models():
        assert f"\n{name} " in out


def test_list_counts_parameters_for_the_given_shape(capsys):
    assert main(["list", "resnet20", "--input-shape", "32,32,3"]) == 0
    assert " 272,474 " in capsys.readouterr().out


@pytest.mark.slow
def test_train_prints_final_accuracy_and_writes_run_dir(trained):
    _, run_dir, done = trained
    assert "test accuracy" in done.stdout
    assert {"config.json", "metrics.jsonl", "result.json", "checkpoints"} <= {p.name for p in run_dir.iterdir()}


@pytest.mark.slow
def test_eval_reports_exactly_the_accuracy_recorded_at_save_time(trained):
    _, run_dir, _ = trained
    out = zoo("eval", run_dir, "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["step"] == 30
    assert result["test"]["accuracy"] == result["recorded"]["test_accuracy"]
    assert result["test"]["loss"] == pytest.approx(result["recorded"]["test_loss"], rel=1e-6)
    assert result["val"]["accuracy"] == result["recorded"]["val_accuracy"]


@pytest.mark.slow
def test_eval_of_an_earlier_step_uses_that_step(trained):
    _, run_dir, _ = trained
    result = json.loads(zoo("eval", run_dir, "--step", 20, "--json").stdout)
    assert result["step"] == 20 and result["test"]["accuracy"] == result["recorded"]["test_accuracy"]


@pytest.mark.slow
def test_eval_best_picks_the_highest_validation_accuracy_step(trained):
    _, run_dir, _ = trained
    result = json.loads(zoo("eval", run_dir, "--best", "--json").stdout)
    records = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    kept = {int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()}
    best = max((r["accuracy"], r["step"]) for r in records if r["split"] == "val" and r["step"] in kept)
    assert result["step"] == best[1]


@pytest.mark.slow
def test_eval_restores_from_the_checkpoint_alone(trained, tmp_path):
    _, run_dir, _ = trained
    alone = tmp_path / "moved"
    alone.mkdir()
    os.symlink(run_dir / "checkpoints", alone / "checkpoints")  # no config.json, no metrics beside it
    result = json.loads(zoo("eval", alone, "--json").stdout)
    assert result["test"]["accuracy"] == result["recorded"]["test_accuracy"]


@pytest.mark.slow
def test_rerunning_a_finished_train_command_resumes_without_training(trained):
    config, run_dir, _ = trained
    before = (run_dir / "metrics.jsonl").read_text()
    again = zoo("train", config, "--workdir", run_dir)
    assert again.returncode == 0 and "resuming from step 30" in again.stderr
    assert (run_dir / "metrics.jsonl").read_text() == before


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["train", "configs/digits/cnn.yaml", "--set", "model.name=resnet21"], "unknown model 'resnet21'"),
    (["train", "configs/digits/cnn.yaml", "--set", "optimizer.learnin_rate=0.1"], "unknown key"),
    (["train", "configs/digits/cnn.yaml", "--set", "train.steps=many"], "train.steps: expected"),
])
def test_bad_input_ends_with_one_line_and_exit_2(args, message, tmp_path):
    out = zoo(*args, "--workdir", tmp_path / "run")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and message in out.stderr
    assert "Traceback" not in out.stderr


# The console script with fit() wrapped so that a Python warning and a native write to fd 2 (as XLA's
# out-of-memory messages are) happen during `zoo train`.
_WARNING_DURING_TRAIN = """\
import os, sys, warnings
import zoo.training
fit = zoo.training.fit
def noisy_fit(*args, **kwargs):
    warnings.warn("a library warning during training")
    os.write(2, b"a native message on fd 2\\n")
    return fit(*args, **kwargs)
zoo.training.fit = noisy_fit
from zoo.cli import console_main
sys.argv = ["zoo", *sys.argv[1:]]
console_main()
"""


@pytest.mark.slow
def test_warnings_and_native_messages_during_train_reach_the_users_stderr(tmp_path, write_config, cli_env):
    command = [sys.executable, "-c", _WARNING_DURING_TRAIN, "train", str(write_config()),
               "--workdir", str(tmp_path / "run")]
    result = subprocess.run(command, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "UserWarning: a library warning during training" in result.stderr
    assert "a native message on fd 2" in result.stderr


def test_zoo_compare_and_zoo_evaluate_are_the_functions_even_after_their_packages_are_imported():
    import zoo
    import zoo.comparison.runner
    import zoo.inference.evaluate

    assert zoo.compare is zoo.comparison.runner.compare and zoo.evaluate is zoo.inference.evaluate.evaluate
    assert callable(zoo.compare) and callable(zoo.evaluate)


def test_a_late_wakeup_of_a_closed_event_loop_prints_nothing_and_other_exceptions_still_print(
        monkeypatch, capsys):
    """After a failed checkpoint read, a TensorStore thread may wake Orbax's closed asyncio loop;
    Python would print that RuntimeError's traceback (via sys.excepthook) next to our one line."""
    import asyncio

    from zoo import cli

    monkeypatch.delenv("ZOO_DEBUG", raising=False)
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    cli._drop_late_loop_wakeups()
    loop = asyncio.new_event_loop()
    loop.close()
    try:
        loop.call_soon_threadsafe(print)
    except RuntimeError:
        sys.excepthook(*sys.exc_info())
    assert capsys.readouterr().err == ""
    try:
        raise RuntimeError("Event loop is closed")  # the same words from elsewhere are not dropped
    except RuntimeError:
        sys.excepthook(*sys.exc_info())
    assert "RuntimeError: Event loop is closed" in capsys.readouterr().err
