"""Everything about a run directory: its file names, the commit marker of a checkpoint step, the
writer's lock and the multi-process claim, the stored config (read, and checked on continue), and
the runs table that `zoo runs` prints. The trainer, restore, the importer, compare and the test
harnesses all go through it; it imports no JAX, no Orbax and no model code."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from pathlib import Path

from zoo import distributed
from zoo.config import Config, from_dict
from zoo.errors import CheckpointError, RunError, ZooError
from zoo.metrics import read_jsonl
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
    but those in CHANGEABLE."""
    path = run_dir / CONFIG_FILE
    if not path.exists():
        return None
    try:  # through from_dict: keys added to the schema since it was written take their defaults
        stored = from_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, ZooError):
        return None  # written atomically; an unreadable one is not ours to judge, the checkpoint's is
    keys = sorted(key for key in _diff_keys(stored.to_dict(), config.to_dict()) if key not in CHANGEABLE)
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


def write_json_once(path: Path, data) -> None:
    """Writes `data` unless the file already holds it (a resumed run leaves its files untouched)."""
    try:
        if json.loads(path.read_text()) == data:
            return
    except (OSError, json.JSONDecodeError):
        pass
    atomic_write(path, json.dumps(data, indent=2))


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
    latest, incomplete = _steps_on_disk(run_dir / CHECKPOINTS)
    steps_seen = [r["step"] for r in records if isinstance(r.get("step"), int)]
    row["steps_done"] = latest if latest is not None else (max(steps_seen) if steps_seen else 0)
    row["validation_last"], row["validation_best"] = _accuracies(records, "val")
    row["test_last"], row["test_best"] = _accuracies(records, "test")
    if row["wall_seconds"] is None and (run_dir / METRICS_FILE).is_file() and (run_dir / CONFIG_FILE).is_file():
        row["wall_seconds"] = max(0.0, (run_dir / METRICS_FILE).stat().st_mtime - (run_dir / CONFIG_FILE).stat().st_mtime)
    if (run_dir / LOCK_FILE).exists() and _locked(run_dir / LOCK_FILE):
        row["status"] = "running"
    elif damaged or incomplete or (records and latest is None and (run_dir / CHECKPOINTS).is_dir()):
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
