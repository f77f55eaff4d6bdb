"""What every run records of its data: where it came from, a content fingerprint, and the training
split's normalisation statistics (applied the same way by training, evaluation and prediction)."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np

from zoo.data.arrays import chunks, release
from zoo.errors import DataError

_FINGERPRINTS: dict = {}  # (path, size, mtime) of every file -> fingerprint; in memory, per process


def resolve(path: str | None, name: str) -> Path:
    """`path` (relative to the working directory or absolute) resolved; refuses a missing one."""
    if not path:
        raise DataError(f"data.name '{name}' reads files: set data.path to the file or folder holding them")
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise DataError(f"data path '{path}' does not exist (resolved to {resolved}): check data.path "
                        "(relative paths start at the working directory)")
    return resolved


def fingerprint(paths: list[Path], root: Path) -> dict:
    """Total size, file count and a BLAKE2 hash of the files' names and bytes. Cached in memory by
    (path, size, mtime), so a process reads each file set once."""
    stats = [(str(p), *_size_mtime(p)) for p in paths]
    key = tuple(stats)
    if key in _FINGERPRINTS:
        return dict(_FINGERPRINTS[key])
    digest = hashlib.blake2b(digest_size=16)
    for path in paths:
        base = root if root.is_dir() else root.parent
        name = str(path.relative_to(base)) if path.is_relative_to(base) else str(path)
        digest.update(name.encode() + b"\0")
        with open(path, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
        digest.update(b"\0")
    out = {"files": len(paths), "bytes": sum(s[1] for s in stats), "hash": digest.hexdigest()}
    _FINGERPRINTS[key] = out
    return dict(out)


def _size_mtime(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def record(kind: str, root: Path, paths: list[Path]) -> dict:
    """The source entry of a DataSpec: kind, resolved path, fingerprint of the files read."""
    return {"kind": kind, "path": str(root), "fingerprint": fingerprint(paths, root)}


def check_unchanged(recorded: dict | None, current: dict | None) -> None:
    """Raises DataError when the files a run was trained on have changed since (by fingerprint)."""
    if not recorded or not current:
        return
    if recorded.get("kind") == "arrays" and current.get("kind") != "arrays":
        raise DataError("this run was trained on in-memory arrays (zoo.Dataset.from_arrays), which the run "
                        "directory does not hold: pass them again with zoo.evaluate(run_dir, dataset=...)")
    if recorded.get("kind") != current.get("kind"):
        raise DataError(f"this run was trained on {recorded.get('kind')} data, the config now reads "
                        f"{current.get('kind')}: restore its data section, or pass --allow-changed-data")
    if "fingerprint" not in recorded:
        return
    if recorded["fingerprint"] != current.get("fingerprint") or recorded.get("path") != current.get("path"):
        before, now = recorded["fingerprint"], current.get("fingerprint") or {}
        raise DataError(
            f"the data at {recorded.get('path')} changed since training ({before.get('files')} files, "
            f"{before.get('bytes')} bytes, hash {str(before.get('hash'))[:12]} then; {now.get('files')} files, "
            f"{now.get('bytes')} bytes, hash {str(now.get('hash'))[:12]} now): restore the data, or pass "
            "--allow-changed-data to evaluate on it anyway")


MAX_CLASSES = 1000  # more distinct labels than this look like a regression target, not classes
FEW_CLASSES = 20  # up to this many distinct labels are classes however few the rows


def check_labels(y, num_classes: int | None, where: str) -> int:
    """Labels must be integers in [0, num_classes); returns the class count (max + 1 when not given)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be one integer per example, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        floating = np.issubdtype(y.dtype, np.floating)
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(y) & (np.mod(y, 1) == 0) & (np.abs(y) < 2**53) if floating else np.zeros(1, bool)
        if not whole.all():
            row = int(np.argmin(whole))
            at = f" (row {row}: {y[row]})" if floating else ""
            raise DataError(f"{where}: labels must be integer class ids, got {y.dtype}{at}: fix or drop that example")
    if y.size and y.min() < 0:
        raise DataError(f"{where}: label {int(y.min())} is negative (row {int(np.argmin(y))}): class ids run from 0 "
                        "to the class count - 1")
    top = int(y.max()) if y.size else -1
    if num_classes is not None and top >= num_classes:
        raise DataError(f"{where}: label {top} is out of range for {num_classes} classes: class ids run "
                        f"from 0 to {num_classes - 1}")
    return num_classes if num_classes is not None else top + 1


def class_ids(ys: dict, class_names, where: str) -> tuple[dict, tuple | None, int]:
    """({split: int32 class ids}, class names, class count) of the labels of every split. With `class_names`
    the labels index them. Without, labels 0..K-1 stay as they are; any other integers (1..3, or 0, 5,
    9) are remapped to 0..K-1 in sorted order and their values become the class names, so predictions
    print the labels the data used. Refuses labels that look like a regression target."""
    num_classes = len(class_names) if class_names is not None else None
    arrays = {split: np.asarray(y) for split, y in ys.items()}
    for split, y in arrays.items():
        check_labels(y, num_classes, f"{where} y_{split}")
    if class_names is not None:
        return {split: y.astype(np.int32) for split, y in arrays.items()}, tuple(class_names), num_classes
    values = np.unique(np.concatenate([np.unique(y).astype(np.int64) for y in arrays.values()]))
    check_classification(len(values), sum(len(y) for y in arrays.values()), where)
    if np.array_equal(values, np.arange(len(values))):
        return {split: y.astype(np.int32) for split, y in arrays.items()}, None, len(values)
    ids = {split: np.searchsorted(values, y.astype(np.int64)).astype(np.int32) for split, y in arrays.items()}
    return ids, tuple(str(v) for v in values.tolist()), len(values)


def check_classification(distinct: int, rows: int, where: str) -> None:
    """Refuses labels with more distinct values than a classification plausibly has: over MAX_CLASSES,
    or (beyond FEW_CLASSES) more than half the rows."""
    if distinct > MAX_CLASSES or (distinct > FEW_CLASSES and 2 * distinct > rows):
        raise DataError(f"{where}: the labels take {distinct:,} distinct values in {rows:,} rows, which looks "
                        "like a regression target: classification needs integer class labels (at most "
                        f"{MAX_CLASSES}, several rows each); pick a class column, or give class names if these "
                        "are classes, or set task: regress to predict the values (docs/tasks.md)")


def check_finite(x, where: str) -> None:
    """Refuses NaN or infinity in float inputs, naming the first such row and position. Reads in chunks
    of about 64 MB, so a memory-mapped split is never loaded whole."""
    if not np.issubdtype(np.dtype(x.dtype), np.floating):
        return
    row_bytes = max(1, math.prod(x.shape[1:]) * np.dtype(x.dtype).itemsize)
    rows = max(1, (64 << 20) // row_bytes)
    for start in range(0, len(x), rows):
        batch = np.asarray(x[start:start + rows])
        release(x)
        finite = np.isfinite(batch)
        if not finite.all():
            row, *position = (int(i) for i in np.argwhere(~finite)[0])
            place = f"column {position[0]}" if len(position) == 1 else f"position {tuple(position)}"
            raise DataError(f"{where} row {start + row}, {place}: {batch[(row, *position)]} is not a finite "
                            "number: fix or drop that example (NaN and infinity are refused)")


def statistics(x, per_column: bool, scale: float = 1.0) -> dict:
    """Mean and std of the training split (times `scale`), per channel (last axis) or per column
    (every position), in float64, read in chunks so a memory-mapped split is never loaded whole; and
    "range": the smallest and largest raw value (before `scale`), which decides the value range
    prediction takes float inputs in (see `zoo.inference.inputs.conform`)."""
    count, total, squares, low, high = 0, None, None, np.inf, -np.inf
    for batch in chunks(x):
        if batch.size:
            low, high = min(low, float(batch.min())), max(high, float(batch.max()))
        batch = batch.astype(np.float64) * scale
        axes = (0,) if per_column else tuple(range(batch.ndim - 1))
        rows = batch.shape[0] if per_column else int(np.prod(batch.shape[:-1]))
        part, part_sq = batch.sum(axis=axes), np.square(batch).sum(axis=axes)
        total = part if total is None else total + part
        squares = part_sq if squares is None else squares + part_sq
        count += rows
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - np.square(mean), 0.0))
    std = np.where(std < 1e-6, 1.0, std)  # a constant feature is centred, not blown up
    return {"scale": scale, "mean": mean.astype(np.float32).ravel().tolist(),
            "std": std.astype(np.float32).ravel().tolist(), "shape": list(mean.shape),
            "range": [low, high] if count else None}


def preprocessor(normalization: dict | None, dtype: str, xp=np):
    """The function raw batch -> model input: token ids to int32; values to float32, times the
    recorded scale, minus the training mean, over the training std (where recorded). `xp` is numpy
    (data pipeline, predict) or jax.numpy (traced into an export)."""
    if dtype == "int32":
        return lambda x: xp.asarray(x).astype(xp.int32, copy=False)  # no copy of int32 windows (text)
    normalization = normalization or {}
    scale = np.float32(normalization.get("scale", 1.0))
    mean = std = None
    if normalization.get("mean") is not None:
        shape = tuple(normalization["shape"])
        mean = np.asarray(normalization["mean"], np.float32).reshape(shape)
        std = np.asarray(normalization["std"], np.float32).reshape(shape)

    def apply(x):
        x = xp.asarray(x).astype(xp.float32)
        if scale != 1:
            x = x * scale
        return x if mean is None else (x - mean) / std

    return apply
