"""Where metrics go: a JSON-lines file in the run directory, and a progress display for people."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from zoo.util import atomic_write


class JsonlWriter:
    """Appends one JSON object per line; each line is flushed so a killed run loses nothing written.
    A file deleted while the run writes it is recreated by the next record, and `warn` (the progress
    stream's `log`) is told once per deletion: the log then starts at that record's step."""

    def __init__(self, path: str | Path, warn=None):
        self.path = Path(path)
        self._warn = warn
        self._written = False  # whether the file should exist: this writer wrote or kept it

    def write(self, record: dict) -> None:
        if self._written and self._warn is not None and not self.path.exists():
            self._warn(f"{self.path.name} was deleted while the run trained: the log restarts at step "
                       f"{record.get('step')}")
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        self._written = True

    def truncate_after(self, step: int) -> None:
        """Drops records past `step` (a resumed run rewrites them); atomic by rename."""
        if not self.path.exists():
            return
        kept = [line for line in read_jsonl(self.path) if _step_of(line) <= step]
        atomic_write(self.path, "".join(json.dumps(record) + "\n" for record in kept))
        self._written = True


def _step_of(record: dict) -> float:
    """A record's step (0 when it has none); a step that is not a number sorts past every step."""
    step = record.get("step", 0)
    return step if isinstance(step, (int, float)) and not isinstance(step, bool) else float("inf")


class Discard:
    """A metrics writer that keeps nothing: processes other than 0 write no bookkeeping files."""

    def write(self, record: dict) -> None:
        pass

    def truncate_after(self, step: int) -> None:
        pass


class TensorBoardWriter:
    """Event files for TensorBoard (tensorboardX, no TensorFlow): each record's numbers as
'<split>/<key>' scalars at its step, and the run's hyperparameters once, beside the task's main
    test metric (`metric`: accuracy, r2, bpc)."""

    def __init__(self, logdir: str | Path, hparams: dict | None = None, metric: str = "accuracy"):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            from zoo.errors import ConfigError

            raise ConfigError("logging.tensorboard needs tensorboardX: pip install 'zoo[tensorboard]' "
                              "(or set logging.tensorboard: false)") from None
        self._writer = SummaryWriter(str(logdir))
        if hparams:
            from tensorboardX.summary import hparams as hparams_summary

            flat = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
                    for k, v in _flatten(hparams).items() if v is not None}
            for summary in hparams_summary(flat, {f"test/{metric}": 0.0}):
                self._writer.file_writer.add_summary(summary)

    def write(self, record: dict) -> None:
        split, step = record.get("split", "train"), int(record["step"])
        for key, value in record.items():
            if key not in ("step", "split") and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(f"{split}/{key}", value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class Tee:
    """Writes each record to several writers; truncation (on resume) concerns the JSON lines only."""

    def __init__(self, jsonl: JsonlWriter, *others):
        self.jsonl, self.others = jsonl, others

    def write(self, record: dict) -> None:
        self.jsonl.write(record)
        for writer in self.others:
            writer.write(record)

    def truncate_after(self, step: int) -> None:
        self.jsonl.truncate_after(step)

    def close(self) -> None:
        for writer in self.others:
            writer.close()


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a JSON-lines file, one a line; lines that are not one are skipped: a line
    cut short by a kill, or valid JSON of another kind (`[1,2]`) written by something else."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: brackets nested past Python's limit
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def format_metrics(metrics: dict) -> str:
    parts = []
    for key, value in metrics.items():
        if isinstance(value, float):
            value = f"{value:.4f}" if abs(value) < 1000 and not math.isnan(value) else f"{value:.4g}"
        parts.append(f"{key} {value}")
    return "  ".join(parts)


def format_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_line(step: int, total: int, metrics: dict | None, examples_per_sec: float | None,
                  eta_seconds: float | None) -> str:
    """'step 100/600  loss 0.4123  10,240 examples/s  ETA 0:00:12' (rate and ETA exclude compile time)."""
    parts = [f"step {step}/{total}"]
    parts += [f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
              for key, value in (metrics or {}).items()]
    if examples_per_sec is not None:
        parts.append(f"{examples_per_sec:,.0f} examples/s")
    parts.append(f"ETA {format_eta(eta_seconds)}")
    return "  ".join(parts)


class Progress:
    """A tqdm bar on a terminal; off a terminal (files, CI), one plain line per update: the loop updates
    every `train.log_every` steps, and also whenever `due()` (every `every_seconds`, default 30 s).
    The rate and ETA shown are the loop's, which exclude compile time (tqdm's own would not)."""

    def __init__(self, stream=None, interactive: bool | None = None, prefix: str = "",
                 every_seconds: float = 30.0, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.prefix = prefix
        self.every_seconds = 1.0 if self.interactive else every_seconds
        self.clock = clock
        self._bar = None
        self._total = None
        self._last = clock()

    def start(self, total: int, initial: int = 0) -> None:
        if self.interactive:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, file=self.stream, desc=self.prefix or None,
                             dynamic_ncols=True, leave=False,
                             bar_format="{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {postfix}")
        self._total = total
        self._last = self.clock()

    def due(self) -> bool:
        """True when the last update is `every_seconds` old: the loop then updates between log steps."""
        return self.clock() - self._last >= self.every_seconds

    def update(self, step: int, metrics: dict | None = None, examples_per_sec: float | None = None,
               eta_seconds: float | None = None) -> None:
        self._last = self.clock()
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            postfix = progress_line(step, self._total, metrics, examples_per_sec, eta_seconds)
            self._bar.set_postfix_str(postfix.split("  ", 1)[1] if "  " in postfix else postfix, refresh=True)
        else:
            self.log(progress_line(step, self._total, metrics, examples_per_sec, eta_seconds))

    def log(self, message: str) -> None:
        text = f"{self.prefix} {message}".strip() if self.prefix else message
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class Silent(Progress):
    """Reports nothing (library use, tests)."""

    def __init__(self):
        super().__init__(interactive=False)

    def start(self, total: int, initial: int = 0) -> None:
        pass

    def due(self) -> bool:
        return False

    def update(self, step: int, metrics: dict | None = None, examples_per_sec: float | None = None,
               eta_seconds: float | None = None) -> None:
        pass

    def log(self, message: str) -> None:
        pass
