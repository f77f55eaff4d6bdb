"""Reliability: bit-identical resume, kill -9 at any moment, damaged checkpoints detected, clean
stops, one writer per run directory, checkpoints that move between device counts, no unsafe code."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from zoo import rundir
from zoo import checkpoint as ckpt
from tools import soak
from zoo.errors import CheckpointError, DamagedCheckpointError
from zoo.metrics import Progress
from zoo.training import loop
from zoo.training import setup as setup_lib

REPO = Path(__file__).resolve().parents[1]
# Dropout, BatchNorm, shifted batches, weight decay and a schedule: every part of the state matters.
EVERY_SOURCE_OF_STATE = {
    "data": {"augment": {"crop_pad": 1}},
    "model": {"hidden_sizes": [32], "dropout": 0.2, "norm": "batch"},
    "optimizer": {"name": "adamw", "weight_decay": 1e-3, "schedule": "warmup_cosine", "warmup_steps": 5},
    "train": {"steps": 40, "steps_per_call": 4},
}


class Recorder(Progress):
    """Collects log lines; sends this process SIGTERM once training reaches `stop_at`."""

    def __init__(self, stop_at: int | None = None):
        super().__init__(interactive=False)
        self.lines, self.stop_at = [], stop_at

    def log(self, message: str) -> None:
        self.lines.append(message)

    def update(self, step: int, metrics=None, **rates) -> None:
        if self.stop_at is not None and step >= self.stop_at:
            self.stop_at = None
            os.kill(os.getpid(), signal.SIGTERM)


def restore(run_dir: Path, step: int | None = None):
    """(state, meta) of a run's checkpoint (the latest by default), verified."""
    checkpoints = ckpt.Checkpoints(Path(run_dir) / "checkpoints", read_only=True)
    step = checkpoints.latest_step() if step is None else step
    return checkpoints.restore(step, setup_lib.build_setup(rundir.read_config(run_dir)).abstract_state())


def largest_array_file(step_dir: Path) -> Path:
    """The biggest data file of a step's arrays (raw chunks: a flipped byte there changes values)."""
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"),
               key=lambda p: p.stat().st_size)


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def trained(tmp_path, tiny_config):
    """A finished tiny run with checkpoints at steps 10, 20 and 30."""
    config = tiny_config({"train": {"steps": 30}, "checkpoint": {"keep": 3}})
    loop.fit(config, tmp_path / "run")
    return config, tmp_path / "run"


# 1. Bit-identical resume -------------------------------------------------------------------------

@pytest.mark.slow
def test_resume_after_a_stop_is_bit_identical_to_an_uninterrupted_run(tmp_path, tiny_config):
    config = tiny_config(EVERY_SOURCE_OF_STATE)
    loop.fit(config, tmp_path / "straight")
    stopped = loop.fit(config, tmp_path / "resumed", Recorder(stop_at=15))
    assert stopped["stopped"] == "SIGTERM" and 15 < stopped["step"] < 40
    recorder = Recorder()
    loop.fit(config, tmp_path / "resumed", recorder)
    assert f"resuming from step {stopped['step']}" in recorder.lines
    straight, straight_meta = restore(tmp_path / "straight")
    resumed, resumed_meta = restore(tmp_path / "resumed")
    assert int(resumed.step) == 40 and resumed.model_state["batch_stats"]
    assert soak.max_abs_difference(straight, resumed) == 0.0
    assert straight_meta["position"] == resumed_meta["position"]


@pytest.mark.slow
def test_a_checkpoint_saves_the_data_position_of_the_batches_consumed_not_of_those_fetched_ahead(
        tmp_path, tiny_config):
    config = tiny_config({"train": {"steps": 20, "steps_per_call": 4}, "checkpoint": {"every": 10, "keep": 2}})
    loop.fit(config, tmp_path / "run")
    checkpoints = ckpt.Checkpoints(tmp_path / "run" / "checkpoints", read_only=True)
    steps_per_epoch = setup_lib.build_setup(config).steps_per_epoch
    assert steps_per_epoch > 20
    assert [checkpoints.read_meta(step)["position"] for step in (10, 20)] == [
        {"epoch": 0, "index": 10}, {"epoch": 0, "index": 20}]


def test_array_checksums_change_with_any_flipped_bit_or_swapped_pair_and_not_with_the_shape():
    import numpy as np

    base = np.random.default_rng(0).standard_normal(64).astype(np.float32)
    words = base.view(np.uint32)
    changed = []
    for position, bit in [(0, 0), (7, 31), (33, 12), (63, 23)]:
        flipped = words.copy()
        flipped[position] ^= np.uint32(1 << bit)
        changed.append(flipped.view(np.float32))
    changed.append(base[[1, 0, *range(2, 64)]])
    sums = ckpt.checksums([base, *changed, base.reshape(8, 8)])
    assert len(set(sums[:-1])) == len(sums) - 1 and sums[-1] == sums[0]


# 2. Crash safety ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun_ends_with_the_same_state(tmp_path, tiny_config, cli_env):
    rng = random.Random(4)
    moments = [("writing", rng.randint(1, 3)), ("committed", rng.randint(1, 3)), ("deleting", 1),
               ("delay", rng.uniform(3.0, 5.0))]
    config_path = soak.write_config(tmp_path / "soak.yaml")
    records = soak.chain(config_path, tmp_path / "killed", moments, env=cli_env())
    verdict = soak.judge(records)
    assert verdict["kills"] >= 3, [(r["moment"], r["killed"]) for r in records]
    assert verdict["resumed"] == verdict["kills"]
    assert verdict["corrupted"] == 0 and verdict["lost_beyond"] == 0
    assert records[-1]["returncode"] == 0, records[-1]["stderr"]
    loop.fit(tiny_config(soak.CONFIG), tmp_path / "uninterrupted")
    killed, uninterrupted = restore(tmp_path / "killed")[0], restore(tmp_path / "uninterrupted")[0]
    assert soak.max_abs_difference(killed, uninterrupted) == 0.0


# 3. Integrity ------------------------------------------------------------------------------------

def flip_a_stored_bit(run_dir: Path, step: int) -> None:
    """Flips one bit in the middle of the largest array of `step` and writes the arrays back through
    the checkpoint writer, keeping the step's recorded checksums. Unlike a flipped byte in the
    (compressed) file, which sometimes leaves it undecodable, the files stay well-formed: only the
    checksum comparison can notice."""
    state, _ = restore(run_dir, step)
    leaves, treedef = jax.tree.flatten(jax.device_get(state))
    largest = max(range(len(leaves)), key=lambda i: leaves[i].size)
    changed = np.array(leaves[largest])
    changed.view(np.uint8).reshape(-1)[changed.nbytes // 2] ^= 0x01
    leaves[largest] = changed
    scratch = run_dir.parent / f"rewritten-{step}"
    writer = ckpt.Checkpoints(scratch, keep=1, keep_best=0, async_save=False)
    writer.save(step, jax.tree.unflatten(treedef, leaves), {}, {"accuracy": 0.0})
    writer.close()
    target = run_dir / "checkpoints" / str(step) / "state"
    shutil.rmtree(target)
    shutil.copytree(scratch / str(step) / "state", target)


@pytest.mark.slow
def test_a_flipped_byte_in_an_array_file_is_refused_naming_the_step_and_checksum(trained):
    _, run_dir = trained
    flip_a_stored_bit(run_dir, 30)
    with pytest.raises(DamagedCheckpointError, match=r"checkpoint step 30 is damaged: checksum mismatch"):
        restore(run_dir, 30)


@pytest.mark.slow
def test_resume_falls_back_to_the_newest_good_step_and_says_so(trained):
    config, run_dir = trained
    original, _ = restore(run_dir, 30)
    flip_byte(largest_array_file(run_dir / "checkpoints" / "30"))
    recorder = Recorder()
    loop.fit(config, run_dir, recorder)
    assert any(line.startswith("skipping: checkpoint step 30 is damaged") for line in recorder.lines)
    assert any(line.startswith("falling back to step 20") for line in recorder.lines)
    assert "resuming from step 20" in recorder.lines
    assert [p.name.split("-")[0] for p in (run_dir / "checkpoints" / "damaged").iterdir()] == ["30"]
    assert soak.max_abs_difference(restore(run_dir, 30)[0], original) == 0.0


@pytest.mark.slow
def test_train_refuses_when_every_checkpoint_is_damaged(trained):
    config, run_dir = trained
    for step in (10, 20, 30):
        (run_dir / "checkpoints" / str(step) / "meta" / "metadata").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"every checkpoint in .* is damaged \(steps 10, 20, 30\)"):
        loop.fit(config, run_dir)


@pytest.mark.slow
def test_uncommitted_and_half_deleted_steps_are_never_offered(trained):
    _, run_dir = trained
    root = run_dir / "checkpoints"
    shutil.copytree(root / "30", root / "40")
    (root / "40" / "commit_success.txt").unlink()  # renamed into place but never committed
    shutil.copytree(root / "30", root / "50")
    shutil.rmtree(root / "50" / "meta")  # a deletion cut short
    shutil.copytree(root / "30", root / "60.orbax-checkpoint-tmp-1234")  # a write cut short
    checkpoints = ckpt.Checkpoints(root, read_only=True)
    assert checkpoints.steps() == [10, 20, 30]
    assert checkpoints.latest_step() == 30
    with pytest.raises(DamagedCheckpointError, match="step 40 .* is incomplete"):
        checkpoints.read_meta(40)


@pytest.mark.slow
def test_stale_temporary_directories_are_removed_at_start(trained):
    config, run_dir = trained
    root = run_dir / "checkpoints"
    shutil.copytree(root / "30", root / "40.orbax-checkpoint-tmp-1234")
    shutil.copytree(root / "10", root / "trash" / "10")
    loop.fit(config, run_dir)
    assert sorted(p.name for p in root.iterdir()) == ["10", "20", "30"]


# 4. Stopping cleanly -----------------------------------------------------------------------------

@pytest.mark.slow
def test_sigterm_finishes_the_step_writes_a_checkpoint_and_the_rerun_resumes(tmp_path, write_config,
                                                                              zoo_process):
    config = write_config({"train": {"steps": 2000, "log_every": 10}, "checkpoint": {"every": 1000}})
    run_dir = tmp_path / "run"
    process = zoo_process("train", config, "--workdir", run_dir, wait=False)
    while soak.trained_until(run_dir) < 10 and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    stopped_at = int(re.search(r"stopped by SIGTERM at step (\d+), checkpoint written", stderr).group(1))
    assert process.returncode == 128 + signal.SIGTERM and 10 <= stopped_at < 2000
    assert ckpt.Checkpoints(run_dir / "checkpoints", read_only=True).latest_step() == stopped_at
    rerun = zoo_process("train", config, "--workdir", run_dir)
    assert rerun.returncode == 0 and f"resuming from step {stopped_at}" in rerun.stderr


@pytest.mark.slow
def test_a_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
        tmp_path, write_config, zoo_main):
    # tanh keeps step 1's logits finite; at lr 1e36 step 2's overflow (found by scanning lr).
    config = write_config({"model": {"activation": "tanh"},
                           "optimizer": {"name": "sgd", "learning_rate": 1e36, "momentum": 0.0,
                                         "schedule": "constant"},
                           "train": {"log_every": 1}, "checkpoint": {"every": 1}})
    status, _, err = zoo_main("train", config, "--workdir", tmp_path / "run")
    assert status == 2
    assert ("training diverged: the evaluation loss is not finite at step 2; "
            "the last good checkpoint (step 1) is kept") in err
    state, _ = restore(tmp_path / "run")
    assert int(state.step) == 1


@pytest.mark.slow
def test_a_failed_asynchronous_save_is_reported(tmp_path, tiny_config, monkeypatch):
    from orbax.checkpoint._src.path import atomicity

    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def fail_at_step_20(self):
        if self.get_final().name == "20":
            raise OSError("No space left on device (simulated)")
        await finalize(self)

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", fail_at_step_20)
    with pytest.raises(CheckpointError, match=r"saving a checkpoint .* failed: No space left on device"):
        loop.fit(tiny_config(), tmp_path / "run")
    monkeypatch.undo()
    state, _ = restore(tmp_path / "run")
    assert int(state.step) == 10


# 5. One writer -----------------------------------------------------------------------------------

def _hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process holding the run directory's lock, as a running `zoo train` does."""
    run_dir.mkdir(parents=True, exist_ok=True)
    code = ("import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run_dir / rundir.LOCK_FILE)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


@pytest.mark.slow
def test_a_second_writer_on_a_run_dir_in_use_is_refused(tmp_path, write_config, zoo_main, one_line_error):
    holder = _hold_lock(tmp_path / "run")
    try:
        status, _, err = zoo_main("train", write_config(), "--workdir", tmp_path / "run")
    finally:
        holder.kill(), holder.wait()
    assert status == 2
    one_line_error(err, "is in use by another `zoo train`", "use another --workdir")


@pytest.mark.slow
def test_a_lock_left_by_a_killed_run_does_not_block(tmp_path, write_config, zoo_main):
    holder = _hold_lock(tmp_path / "run")
    holder.send_signal(signal.SIGKILL), holder.wait()
    status, _, err = zoo_main("train", write_config(), "--workdir", tmp_path / "run")
    assert status == 0, err


# 7. Any device count -----------------------------------------------------------------------------

@pytest.mark.slow
def test_a_checkpoint_saved_on_8_devices_evaluates_and_trains_on_1(tmp_path, write_config, zoo_process,
                                                                    zoo_main):
    config = write_config({"train": {"steps": 100}})
    run_dir = tmp_path / "run"
    process = zoo_process("train", config, "--workdir", run_dir, devices=8, wait=False)
    while not soak.committed_steps(run_dir) and process.poll() is None:
        time.sleep(0.002)
    process.kill(), process.communicate()
    saved = restore(run_dir)[1]
    assert saved["devices"] == 8 and saved["step"] < 100
    status, out, err = zoo_main("eval", run_dir)
    assert status == 0 and f"{saved['step']}" in out, err
    status, _, err = zoo_main("train", config, "--workdir", run_dir)
    assert status == 0 and f"resuming from step {saved['step']}" in err and "saved on 8 devices" in err


@pytest.mark.slow
def test_a_checkpoint_saved_on_1_device_evaluates_and_trains_on_8(tmp_path, tiny_config, write_config,
                                                                    zoo_process):
    overrides = {"train": {"steps": 40}}
    stopped = loop.fit(tiny_config(overrides), tmp_path / "run", Recorder(stop_at=10))
    evaluated = zoo_process("eval", tmp_path / "run", "--json", devices=8)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["step"] == stopped["step"]
    trained = zoo_process("train", write_config(overrides), "--workdir", tmp_path / "run", devices=8)
    assert trained.returncode == 0, trained.stderr
    assert f"resuming from step {stopped['step']}" in trained.stderr
    assert restore(tmp_path / "run")[1]["devices"] == 8


# 8. Security -------------------------------------------------------------------------------------

UNSAFE = re.compile(r"\b(c?[pP]ickle|eval\(|exec\(|FullLoader|yaml\.(load|unsafe_load)\()")


def test_no_pickle_unsafe_yaml_eval_or_exec_in_the_package_or_scripts():
    sources = [*(REPO / "zoo").rglob("*.py"), *(REPO / "scripts").rglob("*.py")]
    found = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
             for path in sources for number, line in enumerate(path.read_text().splitlines(), 1)
             if UNSAFE.search(line)]
    assert not found, "\n".join(found)


def test_np_load_is_only_used_with_allow_pickle_false():
    calls = [(path, call) for path in (REPO / "zoo").rglob("*.py")
             for call in re.findall(r"np\.load\([^)]*\)", path.read_text())]
    assert all("allow_pickle=False" in call for _, call in calls), calls


def test_a_config_name_cannot_escape_the_runs_directory(tmp_path, write_config, zoo_main, one_line_error,
                                                        monkeypatch):
    config = write_config({"name": "../../etc"})
    monkeypatch.chdir(tmp_path)
    status, _, err = zoo_main("train", config)
    assert status == 2
    one_line_error(err, "name: '../../etc' is out of range", "runs/<name>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


@pytest.mark.slow
def test_training_writes_only_inside_the_run_directory(tmp_path, write_config, zoo_main, snapshot):
    config = write_config()
    before = snapshot(tmp_path)
    status, _, err = zoo_main("train", config, "--workdir", tmp_path / "run")
    assert status == 0, err
    changed = {path for path, entry in snapshot(tmp_path).items() if before.get(path) != entry}
    assert changed and all(path == "run" or path.startswith("run/") for path in changed), changed

