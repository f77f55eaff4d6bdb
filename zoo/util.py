"""Small helpers every floor may use: atomic file writes and time formatting. Imports nothing from zoo."""

from __future__ import annotations

import datetime
import os
import tempfile
from pathlib import Path


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Writes `data` to `path` so that a reader sees the old file or the new one, never a part.

    The temporary file is unique per writer (tempfile, in the same directory so the rename stays on
    one filesystem): two processes writing the same path do not collide; the last rename wins.
    """
    path = Path(path)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        binary = isinstance(data, bytes)
        with os.fdopen(handle, "wb" if binary else "w", **({} if binary else {"newline": ""})) as file:
            file.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a plain write would give the usual mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def clock(seconds: float) -> str:
    """A duration for people: '42 s', '3 min 05 s'."""
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def utc_timestamp() -> str:
    """Now, in UTC, ISO 8601 to the second: '2026-12-03T00:41:07+00:00'."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
