"""Everything about a run directory: its file names, the commit marker of a checkpoint step, the
writer's lock and the multi-process claim, the stored config (read, and checked on continue), and
the runs table that `zoo runs` prints. The trainer, restore, the importer, compare and the test
harnesses all go through it; it imports no JAX, no Orbax and no model code."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import secrets
import time
from pathlib import Path

from zoo import distributed
from zoo.config import Config, from_dict
from zoo.errors import CheckpointError, RunError, ZooError
from zoo.util import atomic_write

CONFIG_FILE, METRICS_FILE, RESULT_FILE, LOCK_FILE = "config.json", "metrics.jsonl", "result.json", ".lock"
CHECKPOINTS = "checkpoints"  # the Orbax step directories, one per saved step
COMMITTED = "commit_success.txt"  # Orbax writes it before a step directory gets its final name
TOKEN_FILE = ".processes"  # process 0 writes a fresh token at each start; the others must read it
SHARED_WAIT_SECONDS = 5.0  # how long the others look for the token (network filesystems lag)


def committed_steps(run_dir: str | Path) -> list[int]:
    """The step numbers under checkpoints/ whose save committed, ascending (read from the files)."""
    directory = Path(run_dir) / CHECKPOINTS
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and (p / COMMITTED).is_file())


def has_started(run_dir: str | Path) -> bool:
    """Whether any step directory (committed or not) exists: a run that has begun saving."""
    return any(p.name.isdigit() for p in (Path(run_dir) / CHECKPOINTS).glob("*"))


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """One writer per run directory. flock dies with its process, so a killed run leaves no lock."""
    path = run_dir / LOCK_FILE
    handle = path.open("a")  # never written: an existing lock file stays untouched
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunError(f"run directory '{run_dir}' is in use by another `zoo train` (it holds the lock "
                       f"on {path}): wait for it to finish or use another --workdir") from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


@contextlib.contextmanager
def claim_run_dir(run_dir: Path):
    """Process 0 creates the run directory and holds its lock for the run. With several processes it
    also leaves a fresh token there that every other process must read: a directory they do not
    share (disks local to each host) is refused by all in one line instead of hanging at a save."""
    if distributed.count() == 1:
        run_dir.mkdir(parents=True, exist_ok=True)
        with run_lock(run_dir):
            yield
        return
    token = distributed.broadcast_ints([secrets.randbits(62)])[0]
    with contextlib.ExitStack() as held:
        def claim():
            if distributed.is_primary():
                run_dir.mkdir(parents=True, exist_ok=True)
                held.enter_context(run_lock(run_dir))
                atomic_write(run_dir / TOKEN_FILE, str(token))

        distributed.agreed(claim)
        distributed.agreed(lambda: distributed.is_primary() or _see_token(run_dir, token))
        yield


def _see_token(run_dir: Path, token: int) -> bool:
    deadline = time.monotonic() + SHARED_WAIT_SECONDS
    while True:
        try:
            if (run_dir / TOKEN_FILE).read_text().strip() == str(token):
                return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RunError(f"run directory '{run_dir}' is not shared: process {distributed.index()} does not see "
                           "the token process 0 wrote there; give every process the same --workdir on a "
                           "filesystem they all mount (NFS, Lustre, GCS FUSE)")
        time.sleep(0.1)


# What may change when a run is continued: its length (the schedule is recomputed) and cadences.
CHANGEABLE = ("train.steps", "train.epochs", "train.log_every", "train.eval_every", "checkpoint.every",
              "train.xla_options")


def check_same_config(run_dir: Path, config: Config) -> Config | None:
    """The config the run directory was trained with (None for a new run); refuses any change
    but those in CHANGEABLE. A directory whose run never saved a checkpoint (refused or diverged
    before its first) holds nothing to continue: any config starts over there (None)."""
    path = run_dir / CONFIG_FILE
    if not path.exists():
        return None
    try:  # through from_dict: keys added to the schema since it was written take their defaults
        stored = from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, RecursionError, ZooError):  # ValueError: bad UTF-8 or JSON
        return None  # written atomically; an unreadable one is not ours to judge, the checkpoint's is
    keys = sorted(key for key in _diff_keys(stored.to_dict(), config.to_dict()) if key not in CHANGEABLE)
    if keys and not has_started(run_dir):
        return None
    if keys:
        raise RunError(f"run directory '{run_dir}' holds a run of another config (differs in "
                       f"{', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}; a run continues with "
                       f"only {', '.join(CHANGEABLE)} changed): use another --workdir")
    return stored


def _diff_keys(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in set(a) | set(b):
            yield from _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
    elif a != b:
        yield prefix.rstrip(".")


def write_json_once(path: Path, data) -> bool:
    """Writes `data` unless the file already holds it (a resumed run leaves its files untouched).
    True when it replaced a file that held other data."""
    try:
        if json.loads(path.read_text()) == data:
            return False
    except (OSError, ValueError, RecursionError):
        pass
    replaced = path.exists()
    atomic_write(path, json.dumps(data, indent=2))
    return replaced


def read_config(run_dir: str | Path) -> Config:
    """The config a run directory was trained with (its config.json)."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        return from_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"'{path}' cannot be read ({error}): is '{run_dir}' a zoo run directory?") from None


# The runs table: one row per run directory, read from its files alone.


def find_runs(root: str | Path) -> list[Path]:
    """Directories under `root` (itself included) holding a config.json or checkpoints/, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise ZooError(f"'{root}' is not a directory: give a folder holding run directories (default runs/)")
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        if CONFIG_FILE in filenames or CHECKPOINTS in dirnames:
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
    committed = committed_steps(checkpoints.parent)
    steps = sum(1 for child in checkpoints.iterdir() if child.name.isdigit())
    damaged_dir = checkpoints / "damaged"
    incomplete = steps > len(committed) or (damaged_dir.is_dir() and any(damaged_dir.iterdir()))
    return (committed[-1] if committed else None), incomplete


def _number(value) -> bool:
    """A finite int or float (not a bool): what an accuracy or a time in these files must be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _json_object(path: Path) -> tuple[dict | None, bool]:
    """(the JSON object in `path`, None when there is none; whether the file is there but no such object)."""
    if not path.is_file():
        return None, False
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # ValueError: bad UTF-8 or JSON
        return None, True
    return (document, False) if isinstance(document, dict) else (None, True)


def _metric_records(path: Path) -> tuple[list[dict], bool]:
    """(the records of a metrics.jsonl: objects with an integer step and a split; whether it holds
    anything else). A last line cut short is what a killed run leaves, not damage."""
    if not path.is_file():
        return [], False
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):  # unreadable, or not UTF-8
        return [], True
    records, damaged = [], False
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            damaged = damaged or number < len(lines)
            continue
        step = record.get("step") if isinstance(record, dict) else None
        if isinstance(step, int) and not isinstance(step, bool) and isinstance(record.get("split"), str):
            records.append(record)
        else:
            damaged = True
    return records, damaged


def _accuracies(records: list, split: str, metric: str = "accuracy",
                mode: str = "max") -> tuple[float | None, float | None]:
    """The last and the best value of `metric` (the task's main one; best by `mode`) on `split`."""
    values = [r[metric] for r in records if r["split"] == split and _number(r.get(metric))]
    return (values[-1], (max if mode == "max" else min)(values)) if values else (None, None)


def _test_at_best_validation(records: list, result: dict | None, metric: str = "accuracy",
                             selection: tuple = ("accuracy", "max")) -> float | None:
    """The test `metric` (accuracy for classify) of the checkpoint selected on validation: result.json's
    best_checkpoint, else (a run still training) the test value at the step of the best validation
    `selection` metric (the task's: the highest accuracy, the lowest loss) in the metrics, of equal ones
    the earliest. Never the best test value: that is a number chosen on test."""
    if result is not None and "best_checkpoint" in result:
        best = result["best_checkpoint"]
        value = best.get(f"test_{metric}") if isinstance(best, dict) else None
        return value if _number(value) else None
    chosen, mode = selection
    sign = 1 if mode == "max" else -1
    val = [(sign * r[chosen], -r["step"]) for r in records if r["split"] == "val" and _number(r.get(chosen))]
    if not val:
        return None
    step = -max(val)[1]
    tests = [r[metric] for r in records
             if r["split"] == "test" and r["step"] == step and _number(r.get(metric))]
    return tests[-1] if tests else None


def _in_memory_dataset(run_dir: Path, result: dict | None, latest: int | None) -> str | None:
    """The dataset name of a run trained on arrays from Python (its config's data.name is not what it
    read): from result.json, else from the latest checkpoint's JSON document (Checkpoints.save writes
    it to <step>/meta/metadata); "arrays" when unnamed; None for any other run."""
    if result is not None:
        document = result
    elif latest is not None:
        document = _json_object(run_dir / CHECKPOINTS / str(latest) / "meta" / "metadata")[0] or {}
    else:
        return None
    if document.get("in_memory") is not True:
        return None
    name = result.get("dataset") if result is not None else (document.get("spec") or {}).get("name")
    return name if isinstance(name, str) and name else "arrays"


def _config_fields(run_dir: Path) -> tuple[str | None, str | None, int | None, bool, str | None]:
    """(model, dataset, steps) from config.json, whether it is damaged, and its task (None: classify)."""
    config, damaged = _json_object(run_dir / CONFIG_FILE)
    try:
        steps = config["train"].get("steps")
        task = config.get("task")
        return (config["model"]["name"], config["data"]["name"], steps if isinstance(steps, int) else None, damaged,
                task if isinstance(task, str) else None)
    except (KeyError, TypeError, AttributeError):
        return None, None, None, True, None


def describe_run(run_dir: Path, root: Path) -> dict:
    """One row of the runs table, read from the run directory's files alone; a damaged file never
    raises: the run is marked "damaged"."""
    from zoo import tasks

    row = dict.fromkeys(("name", "run_dir", "model", "dataset", "steps_done", "steps_total", "validation_last",
                         "validation_best", "test_last", "test_at_best_val", "status", "wall_seconds", "metric"))
    row["name"] = str(run_dir.relative_to(root)) if run_dir != root else run_dir.name
    row["run_dir"] = str(run_dir)
    row["model"], row["dataset"], row["steps_total"], config_damaged, task_name = _config_fields(run_dir)
    task = tasks.CLASSES.get(task_name or tasks.DEFAULT, tasks.Classify)  # an unknown one: the row is damaged
    main = task.main()
    row["metric"] = main.name  # what the four metric columns hold: the task's main metric
    records, metrics_damaged = _metric_records(run_dir / METRICS_FILE)
    result, result_damaged = _json_object(run_dir / RESULT_FILE)
    if result is not None:
        steps = result.get("steps", row["steps_total"])
        row["steps_total"] = steps if isinstance(steps, int) and not isinstance(steps, bool) else row["steps_total"]
        row["wall_seconds"] = sum(result[key] for key in ("train_seconds", "compile_seconds")
                                  if _number(result.get(key)))
    latest, incomplete = _steps_on_disk(run_dir / CHECKPOINTS)
    row["dataset"] = _in_memory_dataset(run_dir, result, latest) or row["dataset"]
    row["steps_done"] = latest if latest is not None else max((r["step"] for r in records), default=0)
    row["validation_last"], row["validation_best"] = _accuracies(records, "val", main.name, main.mode)
    row["test_last"] = _accuracies(records, "test", main.name)[0]
    row["test_at_best_val"] = _test_at_best_validation(records, result, main.name, task.selection)
    if row["wall_seconds"] is None and (run_dir / METRICS_FILE).is_file() and (run_dir / CONFIG_FILE).is_file():
        row["wall_seconds"] = max(0.0, (run_dir / METRICS_FILE).stat().st_mtime - (run_dir / CONFIG_FILE).stat().st_mtime)
    unknown_task = task_name not in (None, *tasks.TASKS)
    damaged = config_damaged or metrics_damaged or result_damaged or incomplete or unknown_task
    if (run_dir / LOCK_FILE).exists() and _locked(run_dir / LOCK_FILE):
        row["status"] = "running"
    elif damaged or (records and latest is None and (run_dir / CHECKPOINTS).is_dir()):
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
