"""The kill-and-resume harness (test tooling, not part of the package): start `zoo train` in a child process, SIGKILL it at a chosen moment,
rerun it, and judge whether anything was lost. tests/tools/soak_kill.py and tests/test_reliability.py use it.

Each trial kills a tiny training run at a moment drawn from the seed: after a delay, while a
checkpoint is being written (its temporary directory has appeared), right after a step is
committed, or while old steps are being removed (trash/ exists). The next start must resume from
the newest committed step; after `--chain` kills the run is finished and its final train state
must equal an uninterrupted run's, bit for bit. Prints one summary line.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# Dropout, BatchNorm and shifted batches: every part of the state a resume must restore.
CONFIG = {
    "name": "soak",
    "seed": 0,
    "data": {"name": "digits", "batch_size": 32, "eval_batch_size": 360, "augment": {"crop_pad": 1}},
    "model": {"name": "mlp", "hidden_sizes": [32], "dropout": 0.1, "norm": "batch"},
    "optimizer": {"name": "adam", "learning_rate": 3e-3, "schedule": "cosine"},
    "train": {"steps": 60, "log_every": 1},
    "checkpoint": {"every": 5, "keep": 2, "keep_best": 1},
}
MOMENTS = ("delay", "writing", "committed", "deleting")


def write_config(path: Path, config: dict = CONFIG) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def launch(config_path: Path, run_dir: Path, env: dict | None = None, processes: int = 1) -> list[subprocess.Popen]:
    """`zoo train` in one process, or in `processes` processes of one cluster on 127.0.0.1 (what
    `zoo launch --local N` starts; started here so that a kill reaches every one of them)."""
    command = [sys.executable, "-m", "zoo.cli", "train", str(config_path), "--workdir", str(run_dir)]
    if processes == 1:
        return [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)]
    from zoo.launch import child_env, free_port

    port = free_port()
    return [subprocess.Popen([*command, "--distributed"], cwd=REPO,
                             env=child_env(dict(env or os.environ), port, processes, index, None),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for index in range(processes)]


def committed_steps(run_dir: Path) -> list[int]:
    """Step directories with their final name and commit marker, as Orbax leaves them."""
    from zoo.rundir import committed_steps as on_disk

    return on_disk(run_dir)


def trained_until(run_dir: Path) -> int:
    """The last step whose train metrics reached metrics.jsonl (how far a killed run got)."""
    path = Path(run_dir) / "metrics.jsonl"
    steps = [int(m) for m in re.findall(r'"step": (\d+), "split": "train"', path.read_text())] \
        if path.exists() else []
    return max(steps, default=0)


def draw_moment(rng: random.Random) -> tuple[str, float]:
    kind = rng.choice(MOMENTS)
    return kind, (rng.uniform(0.5, 6.0) if kind == "delay" else rng.randint(1, 4))


def _moment_reached(kind: str, value: float, run_dir: Path, started: float, start_step: int) -> bool:
    every = CONFIG["checkpoint"]["every"]
    if kind == "delay":
        return time.monotonic() - started >= value
    root = run_dir / "checkpoints"
    names = [entry.name for entry in os.scandir(root)] if root.is_dir() else []
    target = min(start_step + int(value) * every, CONFIG["train"]["steps"])
    if kind == "writing":
        return any(n.split(".")[0].isdigit() and int(n.split(".")[0]) >= target and "tmp" in n for n in names)
    new_steps = [int(n) for n in names if n.isdigit() and int(n) > start_step]
    if kind == "committed":
        return any(step >= target for step in new_steps)
    return "trash" in names and bool(new_steps)  # deleting: an old step was renamed aside after a new one


def train_until(config_path: Path, run_dir: Path, moment: tuple[str, float] | None, env=None,
              timeout: float = 300, processes: int = 1) -> dict:
    """Starts `zoo train` (in `processes` processes), SIGKILLs all at `moment` (None: lets it
    finish); returns what happened, with process 0's stderr and first non-zero exit status."""
    start_step = max(committed_steps(run_dir), default=0)
    group, started = launch(config_path, run_dir, env, processes), time.monotonic()
    killed = False
    while any(process.poll() is None for process in group):
        if moment and _moment_reached(*moment, run_dir, started, start_step):
            for process in group:
                process.send_signal(signal.SIGKILL)
            killed = True
            break
        if time.monotonic() - started > timeout:
            for process in group:
                process.kill()
            raise TimeoutError(f"zoo train did not finish in {timeout} s")
        time.sleep(0.002)
    outputs = [process.communicate()[1] for process in group]
    stderr = outputs[0]
    process = next((p for p in group if p.returncode), group[0])
    left = [p.name for p in (run_dir / "checkpoints").iterdir()] if (run_dir / "checkpoints").is_dir() else []
    return {"moment": moment, "killed": killed, "returncode": process.returncode, "stderr": stderr,
            "left_tmp": killed and any("tmp" in name for name in left),
            "left_trash": killed and "trash" in left,
            "committed_after": max(committed_steps(run_dir), default=None),
            "trained_until": trained_until(run_dir)}


def started_from(stderr: str) -> int | None:
    """The step a run resumed from (0 for a fresh start; None if it was killed before saying)."""
    found = re.search(r"resuming from step (\d+)", stderr)
    if found:
        return int(found.group(1))
    return 0 if re.search(r"^step \d+/\d+", stderr, re.M) else None


def chain(config_path: Path, run_dir: Path, moments: list, env=None, processes: int = 1) -> list[dict]:
    """One run killed at each of `moments` in turn, then finished; a record per start."""
    records = []
    for moment in [*moments, None]:
        records.append(train_until(config_path, run_dir, moment, env, processes=processes))
        if not records[-1]["killed"]:
            break  # it finished before the moment came
    return records


def judge(records: list[dict]) -> dict:
    """Per kill: did the next start that reached training resume from the newest committed step?"""
    kills = resumed = corrupted = lost_beyond = left_tmp = left_trash = 0
    redone = []
    for i, record in enumerate(records):
        corrupted += "damaged" in record["stderr"] or (not record["killed"] and record["returncode"] != 0)
        if not record["killed"]:
            continue
        kills += 1
        left_tmp += record["left_tmp"]
        left_trash += record["left_trash"]
        expected = record["committed_after"] or 0
        later = [started_from(r["stderr"]) for r in records[i + 1:]]
        start = next((s for s in later if s is not None), None)
        resumed += start == expected
        lost_beyond += max(0, expected - (start or 0))
        redone.append(record["trained_until"] - (start or 0))
    return {"kills": kills, "resumed": resumed, "corrupted": corrupted, "lost_beyond": lost_beyond,
            "left_tmp": left_tmp, "left_trash": left_trash, "redone": redone}


def final_state(run_dir: Path):
    """The train state of a run's newest checkpoint, restored and verified by zoo."""
    from zoo import checkpoint as ckpt, rundir
    from zoo.training import setup as setup_lib

    config = rundir.read_config(run_dir)
    checkpoints = ckpt.Checkpoints(Path(run_dir) / rundir.CHECKPOINTS, read_only=True)
    state, _ = checkpoints.restore(checkpoints.latest_step(), setup_lib.build_setup(config).abstract_state())
    return state


def max_abs_difference(a, b) -> float:
    """The largest |a - b| over every array of two train states (inf if their structures differ)."""
    import jax
    import numpy as np

    leaves_a, tree_a = jax.tree_util.tree_flatten(jax.device_get(a))
    leaves_b, tree_b = jax.tree_util.tree_flatten(jax.device_get(b))
    if tree_a != tree_b:
        return float("inf")
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)), initial=0.0))
               for x, y in zip(leaves_a, leaves_b))
