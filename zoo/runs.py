"""`zoo runs`: one row per run directory under a folder, read from its files alone (no Orbax, no JAX)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from zoo.errors import ZooError
from zoo.metrics import read_jsonl

CONFIG_FILE, METRICS_FILE, RESULT_FILE, LOCK_FILE = "config.json", "metrics.jsonl", "result.json", ".lock"
COMMITTED = "commit_success.txt"


def find_runs(root: str | Path) -> list[Path]:
    """Directories under `root` (itself included) holding a config.json or checkpoints/, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise ZooError(f"'{root}' is not a directory: give a folder holding run directories (default runs/)")
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        if CONFIG_FILE in filenames or "checkpoints" in dirnames:
            found.add(Path(dirpath))
            dirnames[:] = []  # a run's own subfolders hold no runs
    return sorted(found)


def _locked(path: Path) -> bool:
    """Whether a process holds the flock of `path`, read from /proc/locks (taking the lock to test it
    would race a `zoo train` starting at that moment); False where /proc/locks is absent."""
    try:
        inode = path.stat().st_ino
        locks = Path("/proc/locks").read_text()
    except OSError:
        return False
    for line in locks.splitlines():
        fields = line.split()
        if len(fields) > 5 and "FLOCK" in fields and fields[5].split(":")[-1] == str(inode):
            return True
    return False


def _steps_on_disk(checkpoints: Path) -> tuple[int | None, bool]:
    """(latest committed step, whether any step directory is incomplete or set aside as damaged)."""
    if not checkpoints.is_dir():
        return None, False
    committed, incomplete = [], False
    for child in checkpoints.iterdir():
        if child.name.isdigit():
            if (child / COMMITTED).is_file():
                committed.append(int(child.name))
            else:
                incomplete = True
    damaged_dir = checkpoints / "damaged"
    if damaged_dir.is_dir() and any(damaged_dir.iterdir()):
        incomplete = True
    return (max(committed) if committed else None), incomplete


def _accuracies(records: list, split: str) -> tuple[float | None, float | None]:
    values = [r["accuracy"] for r in records if r.get("split") == split and isinstance(r.get("accuracy"), (int, float))]
    return (values[-1], max(values)) if values else (None, None)


def describe_run(run_dir: Path, root: Path) -> dict:
    row = {"name": str(run_dir.relative_to(root)) if run_dir != root else run_dir.name, "run_dir": str(run_dir),
           "model": None, "dataset": None, "steps_done": None, "steps_total": None,
           "validation_last": None, "validation_best": None, "test_last": None, "test_best": None,
           "status": None, "wall_seconds": None}
    damaged = False
    try:
        config = json.loads((run_dir / CONFIG_FILE).read_text())
        row["model"], row["dataset"] = config["model"]["name"], config["data"]["name"]
        row["steps_total"] = config["train"].get("steps")
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        damaged = True
    records = read_jsonl(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).is_file() else []
    result = None
    if (run_dir / RESULT_FILE).is_file():
        try:
            result = json.loads((run_dir / RESULT_FILE).read_text())
            row["steps_total"] = result.get("steps", row["steps_total"])
            row["wall_seconds"] = result.get("train_seconds", 0.0) + result.get("compile_seconds", 0.0)
        except (OSError, json.JSONDecodeError):
            damaged = True
    latest, incomplete = _steps_on_disk(run_dir / "checkpoints")
    steps_seen = [r["step"] for r in records if isinstance(r.get("step"), int)]
    row["steps_done"] = latest if latest is not None else (max(steps_seen) if steps_seen else 0)
    row["validation_last"], row["validation_best"] = _accuracies(records, "val")
    row["test_last"], row["test_best"] = _accuracies(records, "test")
    if row["wall_seconds"] is None and (run_dir / METRICS_FILE).is_file() and (run_dir / CONFIG_FILE).is_file():
        row["wall_seconds"] = max(0.0, (run_dir / METRICS_FILE).stat().st_mtime - (run_dir / CONFIG_FILE).stat().st_mtime)
    if (run_dir / LOCK_FILE).exists() and _locked(run_dir / LOCK_FILE):
        row["status"] = "running"
    elif damaged or incomplete or (records and latest is None and (run_dir / "checkpoints").is_dir()):
        row["status"] = "damaged"
    elif result is not None and (row["steps_total"] is None or row["steps_done"] >= row["steps_total"]):
        row["status"] = "finished"
    else:
        row["status"] = "unfinished"
    return row


def list_runs(root: str | Path = "runs") -> list[dict]:
    """One row per run directory under `root`: model, dataset, steps, accuracies, status, wall time."""
    root = Path(root)
    return [describe_run(run_dir, root) for run_dir in find_runs(root)]
