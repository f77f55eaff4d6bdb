"""TensorBoard event files read back, and the `zoo runs` table."""

from __future__ import annotations

import fcntl
import json
import struct

import pytest

from zoo.metrics import read_jsonl


def _events(run_dir) -> dict:
    """{(tag, step): value} from the TFRecord event files in run_dir, parsed with tensorboardX's protobufs."""
    from tensorboardX.proto import event_pb2

    values = {}
    for path in run_dir.glob("events.out.tfevents*"):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12:i + 12 + length])
            i += 12 + length + 4  # length, its CRC, the record, its CRC
            for value in event.summary.value:
                values[(value.tag, event.step)] = value.simple_value
    return values


@pytest.fixture(scope="module")
def finished_run(tiny_config, tmp_path_factory):
    from zoo.training import fit

    pytest.importorskip("tensorboardX")
    run_dir = tmp_path_factory.mktemp("tb") / "mlp" / "seed0"
    fit(tiny_config({"logging": {"tensorboard": True}}), run_dir)
    return run_dir


def test_tensorboard_events_hold_the_metrics_written_to_jsonl(finished_run):
    events = _events(finished_run)
    records = read_jsonl(finished_run / "metrics.jsonl")
    for record in records:
        for key in ("loss", "accuracy", "lr", "examples_per_sec") if record["split"] == "train" else ("loss", "accuracy"):
            assert events[(f"{record['split']}/{key}", record["step"])] == pytest.approx(record[key], rel=1e-6)
    assert ("test/accuracy", 20) in events and ("val/accuracy", 20) in events and ("train/lr", 5) in events


def test_tensorboard_events_hold_the_hyperparameters(finished_run):
    assert ("_hparams_/experiment", 0) in _events(finished_run)


@pytest.mark.slow
def test_tensorboard_off_writes_no_event_files(tiny_config, tmp_path):
    from zoo.training import fit

    fit(tiny_config({"train": {"steps": 5}}), tmp_path)
    assert not list(tmp_path.glob("events.out.tfevents*"))


def test_runs_lists_a_finished_run_with_its_accuracies(finished_run):
    from zoo.rundir import list_runs

    (row,) = list_runs(finished_run.parents[1])
    tests = [r["accuracy"] for r in read_jsonl(finished_run / "metrics.jsonl") if r["split"] == "test"]
    assert row["name"] == "mlp/seed0" and row["model"] == "mlp" and row["dataset"] == "digits"
    assert (row["steps_done"], row["steps_total"], row["status"]) == (20, 20, "finished")
    chosen_on_validation = json.loads((finished_run / "result.json").read_text())["best_checkpoint"]
    assert (row["test_last"], row["test_at_best_val"]) == (tests[-1], chosen_on_validation["test_accuracy"])
    vals = [r["accuracy"] for r in read_jsonl(finished_run / "metrics.jsonl") if r["split"] == "val"]
    assert (row["validation_last"], row["validation_best"]) == (vals[-1], max(vals))


def test_runs_reports_a_locked_run_as_running(finished_run):
    from zoo.rundir import list_runs

    with (finished_run / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert list_runs(finished_run)[0]["status"] == "running"
    assert list_runs(finished_run)[0]["status"] == "finished"


def test_runs_reports_an_unreadable_config_as_damaged(tmp_path):
    from zoo.rundir import list_runs

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text("{not json")
    assert list_runs(tmp_path)[0]["status"] == "damaged"


def test_runs_reports_a_run_without_result_as_unfinished(tmp_path):
    from zoo.rundir import list_runs

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text(json.dumps(
        {"model": {"name": "mlp"}, "data": {"name": "digits"}, "train": {"steps": 10}}))
    (tmp_path / "r" / "metrics.jsonl").write_text(json.dumps({"step": 5, "split": "test", "accuracy": 0.5}) + "\n")
    row = list_runs(tmp_path)[0]
    assert (row["status"], row["steps_done"], row["test_last"]) == ("unfinished", 5, 0.5)


def test_runs_json_prints_one_object_per_run(zoo_main, finished_run):
    status, out, _ = zoo_main("runs", finished_run.parents[1], "--json")
    assert status == 0 and [r["name"] for r in json.loads(out)] == ["mlp/seed0"]


def test_runs_of_a_missing_folder_is_refused_in_one_line(zoo_main, one_line_error, tmp_path):
    status, _, err = zoo_main("runs", tmp_path / "nothing")
    assert status == 2
    one_line_error(err, "is not a directory")


def test_tensorboard_key_of_the_wrong_type_is_refused(tiny_config):
    from zoo.errors import ConfigError

    with pytest.raises(ConfigError, match="logging.tensorboard"):
        tiny_config({"logging": {"tensorboard": "yes"}})
