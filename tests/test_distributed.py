"""Two processes, one run: `jax.distributed` on 127.0.0.1 with gloo collectives on CPU (one
simulated device per process, two in all). Every process is a real `zoo` subprocess with a hard
timeout; the uninterrupted 2-process run is trained once and is the reference of the others. Those
are marked slow; the checks of each process's share of the data at the end run in this process."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, TINY, merged, subprocess_xla_flags
from tools import soak
from zoo.data import BatchIterator, eval_batches
from zoo.data.pipeline import Rows

CONFIG = merged(TINY, {"train": {"steps": 40, "log_every": 1}, "checkpoint": {"every": 10, "keep": 2}})
TIMEOUT = 150  # seconds any group of processes may take before the test fails (and kills them)


def env(compile_cache: Path, devices: int = 1, **extra) -> dict:
    out = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(compile_cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **extra}
    out["XLA_FLAGS"] = subprocess_xla_flags(devices)
    return out


def zoo(*args, environment: dict, wait: bool = True):
    command = [sys.executable, "-m", "zoo.cli", *map(str, args)]
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=TIMEOUT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_pair(config: Path, workdirs, compile_cache: Path) -> list[subprocess.Popen]:
    """Processes 0 and 1 of one cluster (ZOO_* variables), each training into its workdir."""
    port = free_port()
    return [zoo("train", config, "--workdir", workdir, "--distributed", wait=False,
                environment=env(compile_cache, ZOO_COORDINATOR=f"127.0.0.1:{port}", ZOO_NUM_PROCESSES="2",
                                ZOO_PROCESS_ID=str(index)))
            for index, workdir in enumerate(workdirs)]


def finish(processes, timeout: float = TIMEOUT) -> list[tuple[int, str]]:
    """(exit status, stderr) of each process; all are killed if any outlives `timeout`."""
    deadline, results = time.monotonic() + timeout, []
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((process.returncode, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results


def start_long_pair(tmp_path: Path, write_config, compile_cache: Path):
    """A 2-process run of 5000 steps into one run dir, returned once it has trained 10 steps."""
    config = write_config({"train": {"steps": 5000, "log_every": 10}, "checkpoint": {"every": 5000}})
    run_dir = tmp_path / "run"
    processes = start_pair(config, [run_dir, run_dir], compile_cache)
    deadline = time.monotonic() + TIMEOUT
    while (soak.trained_until(run_dir) < 10 and time.monotonic() < deadline
           and all(process.poll() is None for process in processes)):
        time.sleep(0.01)
    return processes, run_dir


def launch(config: Path, workdir: Path, compile_cache: Path):
    return zoo("launch", "--local", 2, "--", "train", config, "--workdir", workdir,
               environment=env(compile_cache))


def committed(run_dir: Path) -> list[int]:
    return soak.committed_steps(run_dir)


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, config_path, compile_cache):
    """An uninterrupted 2-process run, started by `zoo launch --local 2`: (CompletedProcess, run dir)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    return launch(config_path, run_dir, compile_cache), run_dir


@pytest.mark.slow
def test_both_processes_exit_0_and_their_output_is_prefixed(reference):
    result, run_dir = reference
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\[0\] tiny: mlp .* step 40 ", result.stdout, re.M), result.stdout
    assert "[1] " not in result.stdout  # process 0 alone reports the run
    assert json.loads((run_dir / "result.json").read_text())["final_step"] == 40


@pytest.mark.slow
def test_exactly_one_metrics_record_per_step(reference):
    _, run_dir = reference
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == list(range(1, 41))
    assert [r["step"] for r in records if r["split"] == "test"] == [10, 20, 30, 40]


@pytest.mark.slow
def test_final_state_is_bit_equal_to_one_process_with_the_same_device_count(tmp_path, reference, config_path,
                                                                            compile_cache):
    single = zoo("train", config_path, "--workdir", tmp_path / "single", environment=env(compile_cache, devices=2))
    assert single.returncode == 0, single.stderr
    _, run_dir = reference
    assert soak.max_abs_difference(soak.final_state(run_dir), soak.final_state(tmp_path / "single")) == 0.0


TASK_RUNS = {  # a tiny run of each task beyond classification, its eval batch dividing no split
    "regress": (merged(TINY, {"name": "tiny_regress", "task": "regress", "optimizer": {"learning_rate": 1e-2},
                              "data": {"name": "diabetes", "batch_size": 32, "eval_batch_size": 64},
                              "checkpoint": {"every": 20, "keep": 1}}),
                {"test_rmse", "test_mae", "test_r2", "val_r2"}),
    "lm": ({"name": "tiny_lm", "seed": 0, "task": "lm", "model": {"name": "lstm_lm", "embed_dim": 8, "hidden_size": 8},
            "data": {"name": "pydoc", "vocabulary": "byte", "seq_len": 16, "batch_size": 8, "eval_batch_size": 250},
            "train": {"steps": 10, "log_every": 5}, "checkpoint": {"every": 10, "keep": 1}},
           {"test_bpc", "test_loss", "val_bpc"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASK_RUNS))
def test_a_task_on_two_processes_records_the_metrics_of_one_process_with_two_devices(task, tmp_path, compile_cache):
    """Issue 24: each task's eval sums (a regression's squared and absolute errors and target moments;
    a language model's nats and token counts) reduce across processes: 2 processes record the metrics
    (and train to the state) of 1 process with the same 2 devices. No eval batch divides its splits
    (diabetes: 35 validation and 88 test rows for 64; pydoc at 16 bytes: 2,913 and 1,456 windows for 250)."""
    raw, keys = TASK_RUNS[task]
    config = tmp_path / f"{task}.yaml"
    config.write_text(yaml.safe_dump(raw))
    pair = launch(config, tmp_path / "pair", compile_cache)
    single = zoo("train", config, "--workdir", tmp_path / "single", environment=env(compile_cache, devices=2))
    assert pair.returncode == 0 and single.returncode == 0, pair.stderr + single.stderr
    results = [json.loads((tmp_path / name / "result.json").read_text())["final"] for name in ("pair", "single")]
    assert keys <= set(results[0])
    assert results[0] == pytest.approx(results[1], rel=1e-6)
    assert soak.max_abs_difference(soak.final_state(tmp_path / "pair"), soak.final_state(tmp_path / "single")) == 0.0


@pytest.mark.slow
def test_killing_both_mid_run_then_rerunning_is_bit_identical_to_an_uninterrupted_run(
        tmp_path, reference, config_path, compile_cache):
    run_dir = tmp_path / "run"
    processes = start_pair(config_path, [run_dir, run_dir], compile_cache)
    deadline = time.monotonic() + TIMEOUT
    while not committed(run_dir) and time.monotonic() < deadline and all(p.poll() is None for p in processes):
        time.sleep(0.005)
    for process in processes:
        process.kill()
    finish(processes)
    assert committed(run_dir) and max(committed(run_dir)) < 40, "the kill came after the run had finished"
    rerun = launch(config_path, run_dir, compile_cache)
    assert rerun.returncode == 0, rerun.stderr
    assert re.search(r"^\[0\] resuming from step [1-3]0$", rerun.stderr, re.M), rerun.stderr
    assert soak.max_abs_difference(soak.final_state(run_dir), soak.final_state(reference[1])) == 0.0


@pytest.mark.slow
def test_a_damaged_newest_step_makes_both_fall_back_to_the_same_step_moved_aside_once(
        tmp_path, reference, config_path, compile_cache):
    run_dir = tmp_path / "run"
    shutil.copytree(reference[1], run_dir)
    (run_dir / "checkpoints" / "40" / "meta" / "metadata").write_text("{not json")
    results = finish(start_pair(config_path, [run_dir, run_dir], compile_cache))
    assert [status for status, _ in results] == [0, 0], results
    assert "falling back to step 30" in results[0][1]
    assert [p.name.split("-")[0] for p in (run_dir / "checkpoints" / "damaged").iterdir()] == ["40"]
    # Both restored step 30: from there, the same 10 steps give the uninterrupted run's state.
    assert soak.max_abs_difference(soak.final_state(run_dir), soak.final_state(reference[1])) == 0.0


@pytest.mark.slow
def test_sigterm_to_one_process_makes_both_save_the_same_step_and_exit_143(tmp_path, write_config,
                                                                            compile_cache):
    processes, run_dir = start_long_pair(tmp_path, write_config, compile_cache)
    processes[1].send_signal(signal.SIGTERM)
    results = finish(processes)
    assert [status for status, _ in results] == [143, 143], results
    steps = {int(re.search(r"stopped by SIGTERM at step (\d+), checkpoint written", stderr).group(1))
             for _, stderr in results}
    assert len(steps) == 1 and committed(run_dir) == [steps.pop()]


@pytest.mark.slow
@pytest.mark.parametrize("killed", [0, 1], ids=["coordinator", "other"])
def test_a_process_killed_mid_run_ends_the_other_with_one_line_and_exit_1(tmp_path, write_config, compile_cache,
                                                                          killed):
    processes, _ = start_long_pair(tmp_path, write_config, compile_cache)
    processes[killed].kill()
    killed_at = time.monotonic()
    [(status, stderr)] = finish([processes[1 - killed]], timeout=30)
    processes[killed].communicate()
    lines = [line for line in stderr.splitlines() if not line.startswith(("[Gloo]", "step "))]
    assert status == 1 and len(lines) == 1, stderr
    assert lines[0].startswith(f"zoo: error: process {1 - killed} lost contact with the rest of the run")
    assert "rerun the same command" in lines[0] and time.monotonic() - killed_at < 20


@pytest.mark.slow
def test_run_directories_that_are_not_shared_are_refused_in_one_line(tmp_path, config_path, compile_cache):
    results = finish(start_pair(config_path, [tmp_path / "host0", tmp_path / "host1"], compile_cache))
    for status, stderr in results:
        lines = [line for line in stderr.splitlines() if not line.startswith("[Gloo]")]
        assert status == 2 and len(lines) == 1, stderr
        assert "is not shared" in lines[0] and "same --workdir" in lines[0]
    assert not (tmp_path / "host1").exists() and not (tmp_path / "host0" / "checkpoints").exists()


@pytest.mark.slow
def test_the_readme_distributed_command_without_process_info_is_one_line_and_exit_2(
        tmp_path, config_path, compile_cache, one_line_error):
    result = zoo("train", config_path, "--workdir", tmp_path / "run", "--distributed",
                 environment=env(compile_cache, JAX_COORDINATOR_ADDRESS="127.0.0.1:29411"))
    assert result.returncode == 2
    one_line_error(result.stderr, "the number of processes is not given", "--num-processes N", "ZOO_NUM_PROCESSES")
    assert not (tmp_path / "run").exists()


# Data per process (in this process: no cluster needed) ------------------------------------------

class Recording:
    """An array that records which rows were read."""

    def __init__(self, array):
        self.array, self.read = array, set()

    def __len__(self):
        return len(self.array)

    def __getitem__(self, index):
        rows = np.arange(len(self.array))[index]
        self.read.update(np.atleast_1d(rows).tolist())
        return self.array[index]


def test_each_process_reads_only_its_rows_of_every_training_batch():
    x, y = np.arange(512, dtype=np.float32).reshape(512, 1, 1, 1), np.arange(512) % 4
    batches = BatchIterator.IN_PROCESS_BLOCK  # what one read of the pipeline gathers
    whole = BatchIterator(x, y, 16, seed=3)
    global_rows = [set(next(whole)[0].ravel().astype(int)) for _ in range(batches)]
    recorded = Recording(x)
    second = BatchIterator(recorded, y, 16, seed=3, rows=Rows(1, 2))
    local = [set(next(second)[0].ravel().astype(int)) for _ in range(batches)]
    for rows, batch in zip(local, global_rows):
        assert len(rows) == 8 and rows < batch
    assert recorded.read == set().union(*local)  # the other process's rows were never read


def test_each_process_evaluates_only_its_share_of_every_batch_and_the_shares_make_the_whole():
    x, y = np.arange(50, dtype=np.float32).reshape(50, 1), np.arange(50)
    recorded = [Recording(x), Recording(x)]
    shares = [list(eval_batches(recorded[i], y, 20, process=i, processes=2)) for i in range(2)]
    whole = list(eval_batches(x, y, 20))
    for (xa, ya, ma), (xb, yb, mb), (xw, yw, mw) in zip(*shares, whole):
        np.testing.assert_array_equal(np.concatenate([xa, xb]), xw)
        np.testing.assert_array_equal(np.concatenate([ma, mb]), mw)
    assert recorded[0].read.isdisjoint(recorded[1].read) and len(recorded[0].read | recorded[1].read) == 50


# One process's stderr, relayed (zoo/launch.py) ------------------------------------------------------

# What jaxlib 0.10.2 prints when process 0, host of the coordination service, dies (then SIGABRT).
RUNTIME_FATAL = """\
E1203 07:11:22.071954   23795 coordination_service_agent.cc:289] Polled an error from coordination service (this can be an error from this or another task).
F1203 07:11:22.071979   23795 client.h:80] Terminating process because the JAX distributed service detected fatal errors. This most likely indicates that another task died; see the other task logs for more details. absl::Status: UNAVAILABLE: Failed to send RPC to coordination service. Either the leader task was preempted/died/restarted unexpectedly or this task is experiencing network issues.
Additional GRPC error information from remote target coordination_service while calling /xla.coordination.CoordinationService/PollForError:
:UNKNOWN:Error received from peer  {grpc_message:"Socket closed", grpc_status:14}
*** Check failure stack trace: ***
    @     0x7f58d8440634  absl::lts_20260107::log_internal::LogMessage::SendToLog()
    @     0x7f58e02a71f5  (unknown)
"""


def relayed(lines: str, status: int, process_id=1) -> tuple[int, str]:
    import io
    import threading

    from zoo.launch import Relay

    out = io.StringIO()
    relay = Relay(out, "", threading.Lock(), process_id)
    for line in lines.splitlines(keepends=True):
        relay.feed(line)
    return relay.close(status), out.getvalue()


def test_the_runtime_fatal_log_of_a_lost_coordinator_becomes_one_line_and_exit_1():
    status, text = relayed("step 10/40  loss 2.2\n" + RUNTIME_FATAL, 134)
    lines = text.splitlines()
    assert status == 1 and len(lines) == 2 and lines[0] == "step 10/40  loss 2.2", text
    assert lines[1].startswith("zoo: error: process 1 lost contact with the rest of the run (the JAX distributed "
                               "service is gone: UNAVAILABLE: Failed to send RPC to coordination service)")
    assert "process 0, the coordinator, stopped or crashed" in lines[1]


def test_our_own_lost_peer_line_wins_over_the_runtime_fatal_log():
    own = "zoo: error: process 1 lost contact with the rest of the run (UNKNOWN: Gloo AllGather failed)\n"
    status, text = relayed(RUNTIME_FATAL + own, 134)
    assert (status, text) == (1, own)


def test_runtime_log_lines_of_a_process_that_goes_on_are_passed_on_unchanged_and_in_order():
    lines = "W1203 07:11:27.011132   23852 coordination_service.cc:185] a warning\nstep 10/40\n"
    assert relayed(lines, 0) == (0, lines)
    assert relayed(lines, 3) == (3, lines)


def test_held_runtime_log_lines_pass_on_after_the_hold_while_the_process_runs(monkeypatch):
    import io
    import threading

    from zoo import launch

    monkeypatch.setattr(launch, "HOLD_SECONDS", 0.0)
    out = io.StringIO()
    relay = launch.Relay(out, "[1] ", threading.Lock(), 1)
    relay.feed("W1203 07:11:27.011132   23852 coordination_service.cc:185] a warning\n")
    assert out.getvalue() == ""
    time.sleep(0.01)
    relay.tick()
    assert out.getvalue() == "[1] W1203 07:11:27.011132   23852 coordination_service.cc:185] a warning\n"


@pytest.mark.slow
def test_a_stop_signal_delivered_twice_at_once_is_one_request_and_a_later_one_acts_at_once():
    from zoo.training import hooks

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever earlier code left there
    try:
        with hooks.stop_requests() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # a scheduler's and the supervisor's copy of one request
            time.sleep(0.05)
            assert stop["signal"] == "SIGINT"
            time.sleep(hooks.REPEAT_SECONDS + 0.05)
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
    finally:
        signal.signal(signal.SIGINT, before)
