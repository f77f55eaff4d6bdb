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


CACHE_ENV = "ZOO_CACHE_DIR"  # where zoo keeps its per-user caches (else $XDG_CACHE_HOME/zoo, else ~/.cache/zoo)
# JAX's words when an entry of its persistent compilation cache cannot be read or written
# (jax/_src/compiler.py): it then compiles as usual and warns once per module.
_CACHE_TROUBLE = ("Error reading persistent compilation cache", "Error writing persistent compilation cache")


def cache_dir() -> Path:
    """zoo's per-user cache directory: $ZOO_CACHE_DIR, else $XDG_CACHE_HOME/zoo, else ~/.cache/zoo."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        return Path(chosen).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "zoo"


def _usable_cache(path: Path) -> str | None:
    """Why `path` cannot hold a compilation cache (None when it can): JAX runs what it finds there,
    so it must be a directory of ours that nobody else can write to, and writable by us."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = path.stat()
        if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o022):
            return "it is not a directory only you can write to (JAX runs what it finds there)"
        handle, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        return f"it cannot be written ({error.strerror or error})"
    return None


def enable_compile_cache(warn) -> Path | None:
    """Turns on JAX's persistent compilation cache in `cache_dir()/jax` (every compile of this
    process is kept and found again by the next one), unless JAX's own cache directory is set
    already (jax_compilation_cache_dir, JAX_COMPILATION_CACHE_DIR: the user's choice is kept).
    A directory that cannot be used, and entries JAX cannot read or write (a corrupt cache),
    cost one `warn(line)` each per process and a normal compile, never a failure. Returns the
    directory in use (None: off)."""
    import warnings

    import jax

    if jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    path = cache_dir() / "jax"
    problem = _usable_cache(path)
    if problem:
        warn(f"compilation cache off: {path}: {problem}; set {CACHE_ENV} to another directory, or pass "
             "--no-compile-cache")
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # zoo's steps compile in 0.1-5 s
    previous, warned = warnings.showwarning, []

    def show(message, category, filename, lineno, file=None, line=None):
        if not str(message).startswith(_CACHE_TROUBLE):
            return previous(message, category, filename, lineno, file, line)
        if not warned:
            warned.append(message)
            why = str(message).split(": ", 1)[-1][:120]
            warn(f"the compilation cache in {path} has an entry JAX cannot use ({why}): compiled normally "
                 f"instead; delete {path} if this repeats")

    warnings.showwarning = show
    return path


def printable(text) -> str:
    """`text` safe to print on a terminal: control, bidi and other invisible characters (a colour
    escape, U+202E) written as Python writes them in a repr (\\x1b, \\u202e), all else as it is. Every
    table and CSV printed for people goes through it; --json and files written with --out keep the
    exact values."""
    text = str(text)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
