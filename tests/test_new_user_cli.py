"""What a new user tripped on at the command line (issue 22) and its hardening (issue 26): the runs
table's honest test column and dataset, damaged metrics files, terminal escapes from data, a closed
stdout, stray stderr (shared memory, Ctrl-C in Grain workers, absl), and `zoo predict` on a training
CSV or a missing run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import zoo
from conftest import REPO

ESCAPED_NAMES = ["\x1b[31mred", "left\u202eright"]  # a colour escape and a right-to-left override


def write_run(root: Path, name: str, metrics=(), result=None, config=None, meta=None) -> Path:
    """A run directory written by hand: config.json, metrics.jsonl (records, or raw text/bytes), result.json,
    and `meta` as the JSON document of a committed checkpoint step 10."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = config or {"model": {"name": "mlp"}, "data": {"name": "digits"}, "train": {"steps": 20}}
    (run_dir / "config.json").write_text(json.dumps(config))
    if isinstance(metrics, bytes):
        (run_dir / "metrics.jsonl").write_bytes(metrics)
    else:
        (run_dir / "metrics.jsonl").write_text(metrics if isinstance(metrics, str) else
                                               "".join(json.dumps(record) + "\n" for record in metrics))
    if result is not None:
        (run_dir / "result.json").write_text(json.dumps(result))
    if meta is not None:
        step = run_dir / "checkpoints" / "10"
        (step / "meta").mkdir(parents=True)
        (step / "commit_success.txt").write_text("")
        (step / "meta" / "metadata").write_text(json.dumps(meta))
    return run_dir


def evaluations(*rows):
    """metrics.jsonl records of (step, val accuracy, test accuracy) rows."""
    return [{"step": step, "split": split, "accuracy": accuracy}
            for step, val, test in rows for split, accuracy in (("val", val), ("test", test))]


# 22.4: the test column is the test accuracy of the checkpoint selected on validation


def test_runs_gives_the_test_accuracy_of_the_validation_best_checkpoint_of_a_finished_run(tmp_path):
    """Issue 22.4: a finished run's test column is result.json's best_checkpoint test_accuracy (the
    step chosen on validation), not the highest test accuracy over all evaluations."""
    from zoo.rundir import list_runs

    write_run(tmp_path, "r", evaluations((10, 0.8, 0.9), (20, 0.85, 0.7)),
              result={"steps": 20, "best_checkpoint": {"step": 20, "val_accuracy": 0.85, "test_accuracy": 0.7}})
    (row,) = list_runs(tmp_path)
    assert row["status"] == "finished"
    assert row["test_at_best_val"] == 0.7 and "test_best" not in row


def test_runs_reads_an_unfinished_runs_test_accuracy_at_its_best_validation_step_ties_to_the_earliest(tmp_path):
    """Issue 22.4: without result.json, the test accuracy at the step of the highest validation
    accuracy in metrics.jsonl; of equal validation accuracies the earliest step."""
    from zoo.rundir import list_runs

    write_run(tmp_path, "r", evaluations((5, 0.6, 0.95), (10, 0.8, 0.5), (15, 0.8, 0.9), (20, 0.7, 0.99)))
    (row,) = list_runs(tmp_path)
    assert (row["status"], row["test_at_best_val"]) == ("unfinished", 0.5)


def test_runs_table_heads_the_test_column_test_at_best_val(tmp_path, zoo_main):
    """Issue 22.4: the table names the column for what it holds: "test @ best val", with that number."""
    write_run(tmp_path, "r", evaluations((10, 0.8, 0.9), (20, 0.85, 0.7)))
    status, out, _ = zoo_main("runs", tmp_path)
    header, _, row = out.splitlines()
    assert status == 0 and "test @ best val" in header and "test best" not in header
    assert row.split()[-4] == "0.7000"  # ..., test last, test @ best val, status, wall (2 words)


def test_runs_names_the_dataset_a_finished_in_memory_run_trained_on(tmp_path):
    """Issue 22.4: a run trained on arrays from Python shows its dataset's name (result.json), not the
    config's data.name."""
    from zoo.rundir import list_runs

    write_run(tmp_path, "r", evaluations((20, 0.8, 0.7)), result={"steps": 20, "dataset": "mine", "in_memory": True})
    assert list_runs(tmp_path)[0]["dataset"] == "mine"


def test_runs_names_the_dataset_an_unfinished_in_memory_run_trains_on(tmp_path):
    """Issue 22.4: before result.json exists, the name comes from the latest checkpoint's document."""
    from zoo.rundir import list_runs

    write_run(tmp_path, "r", evaluations((10, 0.8, 0.7)), meta={"in_memory": True, "spec": {"name": "mine"}})
    assert list_runs(tmp_path)[0]["dataset"] == "mine"


def test_runs_names_an_unnamed_in_memory_dataset_arrays(tmp_path):
    """Issue 22.4: an in-memory run whose spec carries no name shows "arrays"."""
    from zoo.rundir import list_runs

    write_run(tmp_path, "r", evaluations((10, 0.8, 0.7)), meta={"in_memory": True, "spec": {}})
    assert list_runs(tmp_path)[0]["dataset"] == "arrays"


# 26.6: a damaged metrics file is marked, never a crash


def test_runs_marks_a_metrics_file_with_lines_that_are_not_metric_records_damaged(tmp_path):
    """Issue 26.6: `[1,2]`, a bare string, a record without its step or split: the run is listed as
    damaged, with what the good records say."""
    from zoo.rundir import list_runs

    text = "\n".join(['{"step": 10, "split": "val", "accuracy": 0.5}', "[1,2]", '"text"', '{"split": "val"}',
                      '{"step": 20, "accuracy": 0.9}']) + "\n"
    write_run(tmp_path, "r", text)
    (row,) = list_runs(tmp_path)
    assert (row["status"], row["validation_last"], row["steps_done"]) == ("damaged", 0.5, 10)


def test_runs_marks_an_undecodable_metrics_file_damaged(tmp_path, zoo_main):
    """Issue 26.6: bytes that are not UTF-8 in metrics.jsonl: the run is listed as damaged, the table
    still printed."""
    write_run(tmp_path, "r", b'{"step": 10, "split": "val", "accuracy": 0.5}\n\xff\xfe\x00\n')
    status, out, err = zoo_main("runs", tmp_path)
    assert (status, err) == (0, "")
    assert out.splitlines()[2].split()[-3] == "damaged"


def test_runs_keeps_a_line_cut_short_at_the_end_unremarked(tmp_path):
    """Issue 26.6: a last line cut short by a kill is what a killed run leaves: not damage."""
    from zoo.rundir import list_runs

    write_run(tmp_path, "r", '{"step": 10, "split": "val", "accuracy": 0.5}\n{"step": 15, "spl')
    assert list_runs(tmp_path)[0]["status"] == "unfinished"


# 26.11: escapes from data are printed escaped in tables, exact in --json and --out


def test_printable_escapes_control_and_bidi_characters():
    """Issue 26.11: one helper for every table: control characters and U+202E in repr style."""
    from zoo.util import printable

    assert printable("a\x1b[31mb\u202ec\td\x7f") == "a\\x1b[31mb\\u202ec\\td\\x7f"
    assert printable("chat ünïcodé 猫 C:\\dir") == "chat ünïcodé 猫 C:\\dir"


@pytest.fixture(scope="module")
def escaped_run(tmp_path_factory, tiny_config):
    """A tiny run on arrays from Python whose class names hold a colour escape and U+202E, and one input."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    data = zoo.Dataset.from_arrays(x[:90], y[:90], x[90:], y[90:], class_names=ESCAPED_NAMES, name="mine")
    root = tmp_path_factory.mktemp("escaped")
    zoo.fit(tiny_config({"train": {"steps": 5}}), root / "run", dataset=data)
    np.save(root / "x.npy", x[:2])
    return root


def test_predict_csv_on_stdout_prints_class_names_escaped(escaped_run, zoo_main):
    """Issue 26.11: the CSV printed to a terminal carries no raw escape or bidi character."""
    status, out, err = zoo_main("predict", escaped_run / "run", escaped_run / "x.npy")
    assert status == 0, err
    assert "\x1b" not in out and "\u202e" not in out
    assert "\\x1b[31mred" in out and "left\\u202eright" in out


def test_predict_json_and_out_keep_class_names_exact(escaped_run, zoo_main, tmp_path):
    """Issue 26.11: --json and the file written with --out hold the exact class names."""
    status, out, _ = zoo_main("predict", escaped_run / "run", escaped_run / "x.npy", "--json")
    assert status == 0 and {row["class"] for row in json.loads(out)} <= set(ESCAPED_NAMES)
    status, _, _ = zoo_main("predict", escaped_run / "run", escaped_run / "x.npy", "--out", tmp_path / "p.csv")
    text = (tmp_path / "p.csv").read_text()
    assert status == 0 and ESCAPED_NAMES[0] in text and ESCAPED_NAMES[1] in text


def test_runs_table_prints_run_and_dataset_names_escaped(tmp_path, zoo_main):
    """Issue 26.11: a run directory and a dataset name holding escapes are printed escaped."""
    write_run(tmp_path, "run\x1b[2J\u202e", evaluations((20, 0.8, 0.7)),
              result={"steps": 20, "dataset": "d\x1b]0;title\x07", "in_memory": True})
    status, out, _ = zoo_main("runs", tmp_path)
    assert status == 0 and "\x1b" not in out and "\u202e" not in out and "\x07" not in out
    assert "run\\x1b[2J\\u202e" in out and "d\\x1b]0;title\\x07" in out


# 22.12: a closed stdout ends quietly


def test_runs_into_a_closed_pipe_ends_quietly(tmp_path, cli_env):
    """Issue 22.12: `zoo runs | head` where head has gone: exit 0 and nothing on stderr."""
    write_run(tmp_path, "r", evaluations((20, 0.8, 0.7)))
    reader, writer = os.pipe()
    os.close(reader)  # nobody will read: every write to stdout fails with EPIPE
    try:
        result = subprocess.run([sys.executable, "-m", "zoo.cli", "runs", str(tmp_path)], cwd=REPO, env=cli_env(),
                                stdout=writer, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(writer)
    assert (result.returncode, result.stderr) == (0, "")


# 22.11: nothing stray on stderr


@pytest.fixture(scope="module")
def image_config(tmp_path_factory):
    """A config training an MLP on a small PNG folder, decoded in one Grain worker process."""
    import yaml
    from data_files import write_png_folder

    root = tmp_path_factory.mktemp("images")
    write_png_folder(root / "png", n_train=120, n_test=30)
    path = root / "images.yaml"
    path.write_text(yaml.safe_dump({
        "name": "images", "data": {"name": "image_folder", "path": str(root / "png"), "batch_size": 16,
                                   "eval_batch_size": 64, "workers": 1},
        "model": {"name": "mlp", "hidden_sizes": [8]}, "train": {"steps": 10, "log_every": 5},
        "checkpoint": {"every": 5}}))
    return path


def _unexpected(stderr: str, *allowed_starts: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith(allowed_starts)]


@pytest.mark.slow
def test_an_image_folder_run_with_workers_warns_of_no_leaked_shared_memory(image_config, tmp_path, zoo_process):
    """Issue 22.11 (a): after a run whose batches came from Grain worker processes, stderr holds the
    progress lines alone (no resource_tracker "leaked shared_memory objects" warning)."""
    result = zoo_process("train", image_config, "--workdir", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert _unexpected(result.stderr, "step ") == []


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _interrupt_when(process: subprocess.Popen, ready, timeout: float = 120) -> None:
    """Sends SIGINT to the process group of `process` (as Ctrl-C in a terminal does) once `ready()`."""
    deadline = time.monotonic() + timeout
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["worker starting", "training"])
def test_ctrl_c_with_grain_workers_prints_no_worker_traceback(moment, image_config, tmp_path, cli_env):
    """Issue 22.11 (b): Ctrl-C (SIGINT to the whole process group) while a Grain worker process starts
    up or while it feeds batches: the run saves and stops with its one line, and no worker prints a
    KeyboardInterrupt traceback."""
    command = [sys.executable, "-m", "zoo.cli", "train", str(image_config), "--workdir", str(tmp_path / "run"),
               "--set", "train.steps=100000"]
    process = subprocess.Popen(command, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    if moment == "worker starting":
        _interrupt_when(process, lambda: any("spawn_main" in line for _, line in _children(process.pid)))
    else:
        _interrupt_when(process, lambda: (tmp_path / "run" / "checkpoints" / "5").is_dir())
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, stderr
    assert _unexpected(stderr, "step ", "zoo: stopped by SIGINT at step ") == []


@pytest.mark.slow
def test_load_run_from_python_prints_nothing_on_stderr(escaped_run, cli_env):
    """Issue 22.11 (c): `zoo.load_run` and `predict` from Python print no absl WARNING lines."""
    code = ("import sys, numpy as np, zoo; run = zoo.load_run(sys.argv[1]); "
            "print(run.predict(np.load(sys.argv[2])).shape)")
    result = subprocess.run([sys.executable, "-c", code, str(escaped_run / "run"), str(escaped_run / "x.npy")],
                            cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "(2, 2)", "")


# 22.13: predict on the training CSV, and on a run that is not there


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory, tiny_config):
    """A tiny run on a CSV whose label column is 'species', and that training file."""
    from data_files import write_csv

    root = tmp_path_factory.mktemp("csv")
    path = write_csv(root / "train.csv", n=120)
    zoo.fit(tiny_config({"data": {"name": "csv", "path": str(path), "label": "species", "test": 0.25},
                         "train": {"steps": 5}}), root / "run")
    return root


def test_predict_on_the_training_csv_drops_the_label_column_with_one_note(csv_run, zoo_main):
    """Issue 22.13: the run's label column (data.label) is dropped by name, said in one line on stderr."""
    status, out, err = zoo_main("predict", csv_run / "run", csv_run / "train.csv")
    assert status == 0, err
    assert len(out.splitlines()) == 1 + 120
    (line,) = err.splitlines()
    assert "dropped the label column 'species'" in line and "train.csv" in line


def test_predict_on_a_missing_run_directory_says_it_does_not_exist(tmp_path, zoo_main, one_line_error):
    """Issue 22.13: a target that is not there is named as missing, not as an unreadable export file."""
    status, out, err = zoo_main("predict", tmp_path / "runs" / "nope", tmp_path / "x.npy")
    assert status == 2 and out == ""
    one_line_error(err, f"run directory or export file '{tmp_path / 'runs' / 'nope'}' does not exist")
