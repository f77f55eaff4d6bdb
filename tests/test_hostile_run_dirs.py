"""Issue 26, "hostile files", in run directories: a run refused or diverged before its first checkpoint
leaves nothing that blocks the next one; a step's metadata is covered by a checksum like its arrays;
`zoo eval` beside a training run that saves and deletes steps reads the newest complete one; a
metrics log deleted or holding foreign lines is survived and said so."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from zoo import checkpoint as ckpt
from zoo.errors import RunError
from zoo.metrics import JsonlWriter, Progress, read_jsonl
from zoo.training import loop

# tanh keeps the first logits finite; SGD at lr 1e36 overflows within a few steps (test_reliability).
DIVERGING = {"model": {"activation": "tanh"},
             "optimizer": {"name": "sgd", "learning_rate": 1e36, "momentum": 0.0, "schedule": "constant"},
             "train": {"log_every": 1}}
LOWER_RATE = {**DIVERGING, "optimizer": {**DIVERGING["optimizer"], "learning_rate": 3e-3}}


class Recorder(Progress):
    """Collects the progress stream's lines; calls `at_update(step)` at every progress update."""

    def __init__(self, at_update=None):
        super().__init__(interactive=False)
        self.lines, self.at_update = [], at_update

    def log(self, message: str) -> None:
        self.lines.append(message)

    def update(self, step: int, metrics=None, **rates) -> None:
        if self.at_update:
            self.at_update(step)


@pytest.fixture(scope="session")
def diverged_run(tmp_path_factory, tiny_config) -> Path:
    """A run directory whose run diverged at step 2, before its first checkpoint (step 10)."""
    run_dir = tmp_path_factory.mktemp("diverged") / "run"
    with pytest.raises(RunError, match="training diverged.*no checkpoint was written"):
        loop.fit(tiny_config(DIVERGING), run_dir)
    return run_dir


def meta_path(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / str(step) / "meta" / "metadata"


def edit_meta(run_dir: Path, step: int, change) -> None:
    """Edits one step's stored metadata by hand, as a user (or an attacker) with a text editor would."""
    path = meta_path(run_dir, step)
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


# Item 7: a refused or diverged run does not block the next one ----------------------------------

@pytest.mark.slow
def test_a_run_diverged_before_its_first_checkpoint_restarts_with_a_lower_learning_rate(
        diverged_run, tmp_path, write_config, zoo_main):
    """Item 7: after "training diverged ... Lower optimizer.learning_rate" before any checkpoint, the
    same command with a lower learning rate trains (exit 0), saying in one progress line that the
    directory's earlier config had no checkpoint and the run starts over."""
    run_dir = Path(shutil.copytree(diverged_run, tmp_path / "run"))
    status, _, err = zoo_main("train", write_config(LOWER_RATE), "--workdir", run_dir)
    assert status == 0, err
    assert (f"run directory '{run_dir}' holds no checkpoint of its earlier config: starting over with this one"
            in err.splitlines())
    assert json.loads((run_dir / "config.json").read_text())["optimizer"]["learning_rate"] == 3e-3


@pytest.mark.slow
def test_a_config_refused_late_leaves_a_diverged_run_directory_as_it_was(
        diverged_run, tmp_path, write_config, zoo_main, snapshot, one_line_error, monkeypatch):
    """Item 7: nothing is written until the run has validated: a new config for a diverged run's
    directory that is refused after the directory is claimed (TensorBoard asked for, tensorboardX
    missing) exits 2 in one line and leaves config.json, metrics.jsonl and all else as they were."""
    run_dir = Path(shutil.copytree(diverged_run, tmp_path / "run"))
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` raises ImportError
    config = write_config({**LOWER_RATE, "logging": {"tensorboard": True}})
    before = snapshot(run_dir)
    status, out, err = zoo_main("train", config, "--workdir", run_dir)
    assert status == 2, err
    one_line_error(err, "logging.tensorboard needs tensorboardX")
    assert snapshot(run_dir) == before


def test_a_run_directory_holding_a_checkpoint_still_refuses_another_config(
        run_dir, write_config, zoo_main, snapshot, one_line_error):
    """Item 7 (guard): only a directory whose run never saved a checkpoint starts over; one holding a
    checkpoint of another config is refused in one line, unchanged."""
    before = snapshot(run_dir)
    status, _, err = zoo_main("train", write_config({"optimizer": {"learning_rate": 1e-4}}), "--workdir", run_dir)
    assert status == 2
    one_line_error(err, "holds a run of another config", "optimizer.learning_rate", "use another --workdir")
    assert snapshot(run_dir) == before


def test_an_unreadable_config_json_without_a_checkpoint_starts_over(tmp_path, tiny_config):
    """Item 7: a config.json that is not UTF-8 text, in a directory whose run saved no checkpoint, is
    no run to continue (check_same_config raised UnicodeDecodeError, a traceback): the run starts over."""
    from zoo import rundir

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_bytes(b"\xff\xfe{")
    assert rundir.check_same_config(tmp_path / "run", tiny_config()) is None


# Item 8: a step's metadata carries a checksum --------------------------------------------------

def test_predict_refuses_a_step_whose_class_names_were_edited(run_dir, tmp_path, zoo_main, snapshot,
                                                             one_line_error):
    """Item 8: class names edited in a step's metadata (predict printed them: HACKED) fail the
    metadata checksum: `zoo predict` exits 2 in one line naming the step, and prints no prediction."""
    edit_meta(run_dir, 20, lambda meta: meta["spec"].update(class_names=["HACKED"] * 10))
    np.save(tmp_path / "x.npy", np.zeros((8, 8, 1), np.float32))
    before = snapshot(run_dir)
    status, out, err = zoo_main("predict", run_dir, tmp_path / "x.npy")
    assert status == 2, out + err
    one_line_error(err, "checkpoint step 20", "checksum")
    assert "HACKED" not in out and snapshot(run_dir) == before


def test_eval_best_refuses_a_step_whose_recorded_metric_was_edited(run_dir, zoo_main, snapshot, one_line_error):
    """Item 8: a validation accuracy edited in step 10's metadata (it changed what --best picks)
    fails the metadata checksum: `zoo eval --best` exits 2 in one line naming step 10."""
    edit_meta(run_dir, 10, lambda meta: meta["metrics"].update(val_accuracy=1.0))
    before = snapshot(run_dir)
    status, out, err = zoo_main("eval", run_dir, "--best")
    assert status == 2, out + err
    one_line_error(err, "checkpoint step 10", "checksum")
    assert out == "" and snapshot(run_dir) == before


@pytest.mark.slow
def test_resume_treats_a_step_with_edited_metadata_as_damaged(run_dir, tiny_config):
    """Item 8: a resume looking for the latest good step skips a step whose metadata fails its
    checksum, like one whose arrays do: it falls back to the step before and sets the edited one aside."""
    edit_meta(run_dir, 20, lambda meta: meta["position"].update(index=0))
    recorder = Recorder()
    loop.fit(tiny_config(), run_dir, recorder)
    assert any(line.startswith("skipping: checkpoint step 20 is damaged") and "checksum" in line
               for line in recorder.lines), recorder.lines
    assert "resuming from step 10" in recorder.lines
    assert [p.name.split("-")[0] for p in (run_dir / "checkpoints" / "damaged").iterdir()] == ["20"]


def test_a_step_saved_before_metadata_checksums_is_still_read(run_dir):
    """Item 8 (guard): a step of format 2, saved by a zoo that wrote no metadata checksum, still reads
    and restores."""
    def as_format_2(meta):
        meta.pop("meta_checksum", None)
        meta["format"] = 2

    edit_meta(run_dir, 20, as_format_2)
    from zoo.training.restore import restore

    restored = restore(run_dir, 20)
    assert restored.meta["format"] == 2 and int(restored.state.step) == 20


def test_metadata_nested_past_the_recursion_limit_is_a_damaged_step(run_dir):
    """Item 8: a step's metadata of brackets nested past Python's recursion limit is refused as a
    damaged step naming it (json raised RecursionError, a traceback), so a resume passes it over."""
    from zoo.errors import DamagedCheckpointError

    meta_path(run_dir, 20).write_text("[" * 100_000)
    with pytest.raises(DamagedCheckpointError, match="checkpoint step 20 is damaged: .* is not valid JSON"):
        ckpt.Checkpoints(run_dir / "checkpoints", read_only=True).read_meta(20)


# Item 9: reading the newest step while a training run saves and deletes steps -------------------

def _vanish_on_first_call(monkeypatch, run_dir: Path, owner, method: str) -> list:
    """Patches `owner.method(self, step, ...)` so that its first call first deletes that step of
    `run_dir` (as a writer's keep-N retention would, between this reader's listing and its read);
    the steps it is called for are recorded."""
    original, asked = getattr(owner, method), []

    def racing(self, step, *args, **kwargs):
        if not asked:
            shutil.rmtree(run_dir / "checkpoints" / str(step))
        asked.append(step)
        return original(self, step, *args, **kwargs)

    monkeypatch.setattr(owner, method, racing)
    return asked


def test_eval_reads_the_next_newest_step_when_the_newest_vanishes_while_read(run_dir, monkeypatch):
    """Item 9: `zoo eval` of the latest step, when that step is deleted between the listing and the
    read of its metadata, reads the newest complete step again and evaluates it instead of failing."""
    from zoo.inference.evaluate import evaluate

    recorded = json.loads(meta_path(run_dir, 10).read_text())["metrics"]
    asked = _vanish_on_first_call(monkeypatch, run_dir, ckpt.Checkpoints, "read_meta")
    result = evaluate(run_dir)
    assert asked[0] == 20 and result["step"] == 10
    assert result["recorded"] == recorded


def test_restore_reads_the_next_newest_step_when_the_newest_vanishes_while_its_arrays_are_read(
        run_dir, monkeypatch):
    """Item 9: restoring the latest step (`zoo predict`, `load_run`), when that step is deleted while
    Orbax reads its arrays, restores the newest complete step instead of failing."""
    import orbax.checkpoint as ocp

    from zoo.training.restore import restore

    asked = _vanish_on_first_call(monkeypatch, run_dir, ocp.CheckpointManager, "restore")
    restored = restore(run_dir)
    assert asked == [20, 10] and restored.step == 10 and int(restored.state.step) == 10


# Item 12: a metrics log deleted mid-run ----------------------------------------------------------

def test_a_metrics_log_deleted_mid_run_is_reported_once_when_it_restarts(tmp_path):
    """Item 12: when metrics.jsonl is deleted while the run writes it, the next record recreates it
    and one line says so, naming the step the log restarts at; later records say nothing more."""
    said = []
    writer = JsonlWriter(tmp_path / "metrics.jsonl", warn=said.append)
    writer.write({"step": 5, "split": "train"})
    (tmp_path / "metrics.jsonl").unlink()
    for record in ({"step": 10, "split": "train"}, {"step": 10, "split": "val"}, {"step": 15, "split": "train"}):
        writer.write(record)
    assert said == ["metrics.jsonl was deleted while the run trained: the log restarts at step 10"]
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [10, 10, 15]


@pytest.mark.slow
def test_training_reports_a_metrics_log_deleted_mid_run_on_the_progress_stream(tmp_path, tiny_config):
    """Item 12: `fit` wires the metrics log to the progress stream: deleting metrics.jsonl at step 5
    gives the one line when the log restarts at step 10."""
    run_dir = tmp_path / "run"
    recorder = Recorder(at_update=lambda step: step == 5 and (run_dir / "metrics.jsonl").unlink())
    loop.fit(tiny_config(), run_dir, recorder)
    assert recorder.lines.count("metrics.jsonl was deleted while the run trained: the log restarts at step 10") == 1


# Item 6 (part): a line of valid JSON that is not an object in metrics.jsonl ----------------------

def test_runs_lists_a_run_whose_metrics_log_holds_a_json_array_line(run_dir):
    """Item 6: a `[1,2]` line in metrics.jsonl is skipped: `zoo runs` still lists the run with its
    steps and accuracies (it raised AttributeError)."""
    from zoo.rundir import list_runs

    with (run_dir / "metrics.jsonl").open("a") as handle:
        handle.write("[1,2]\n")
    (row,) = list_runs(run_dir.parent)
    assert row["steps_done"] == 20 and row["validation_last"] is not None


def test_a_metrics_line_nested_past_the_recursion_limit_is_skipped(tmp_path):
    """Item 6: a metrics.jsonl line of brackets nested past Python's recursion limit is skipped like
    any line that is not a JSON object (json raised RecursionError through `zoo runs` and resume)."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 5}\n' + "[" * 100_000 + "\n")
    assert read_jsonl(path) == [{"step": 5}]


def test_a_metrics_record_whose_step_is_not_a_number_is_dropped_when_a_resume_cuts_the_log(tmp_path):
    """Item 6: a record whose step is a string does not block the cut a resume makes (comparing it to
    the step raised TypeError); it is dropped with the records past the resumed step."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 5}\n{"step": "x"}\n{"step": 15}\n')
    JsonlWriter(path).truncate_after(10)
    assert read_jsonl(path) == [{"step": 5}]


@pytest.mark.slow
def test_a_run_whose_metrics_log_holds_a_json_array_line_resumes(run_dir, tiny_config):
    """Item 6: a `[1,2]` line in metrics.jsonl does not block a resume (it raised AttributeError when
    the log was cut back to the resumed step); the line is dropped with the cut."""
    with (run_dir / "metrics.jsonl").open("a") as handle:
        handle.write("[1,2]\n")
    result = loop.fit(tiny_config({"train": {"steps": 30}}), run_dir)
    assert result["final_step"] == 30 and result["resumed_from"] == 20
    assert "[1,2]" not in (run_dir / "metrics.jsonl").read_text()
