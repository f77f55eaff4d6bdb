"""Regression targets (`task: regress`): one or more float columns per example, checked as they are
read, and standardised by the training split. The run records the names, mean and std in
`DataSpec.targets` ({"names", "mean", "std"}); evaluation metrics, predict and export undo it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from zoo.errors import DataError

MIN_STD = 1e-12  # a constant target is centred, not blown up


def default_names(count: int) -> tuple[str, ...]:
    return ("y",) if count == 1 else tuple(f"y{i}" for i in range(count))


def as_targets(ys: dict, names, where: str) -> tuple[dict, tuple[str, ...]]:
    """({split: float32 [N, K]}, the K target names) of every split's targets: numbers, shaped [N] or
    [N, K], the same K in every split, all finite; refuses anything else in one line naming the split,
    the row and the column."""
    out = {}
    for split, y in ys.items():
        y = np.asarray(y)
        if y.dtype == bool or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
            raise DataError(f"{where} y_{split} holds {y.dtype}: task 'regress' needs numeric targets, float [N] "
                            "or [N, K]")
        if y.ndim not in (1, 2):
            raise DataError(f"{where} y_{split} has shape {y.shape}: task 'regress' takes targets of shape [N] "
                            "or [N, K] (K targets per example)")
        out[split] = (y[:, None] if y.ndim == 1 else y).astype(np.float32)
    count = out["train"].shape[1]
    wrong = next((split for split, y in out.items() if y.shape[1] != count), None)
    if wrong:
        raise DataError(f"{where} y_{wrong} has {out[wrong].shape[1]} targets per example, y_train {count}: "
                        "every split needs the same target columns")
    names = tuple(str(n) for n in names) if names is not None else default_names(count)
    if len(names) != count:
        raise DataError(f"{where}: {len(names)} target names for {count} target columns: give one name per column")
    for split, y in out.items():
        bad = np.argwhere(~np.isfinite(y))
        if bad.size:
            row, column = (int(i) for i in bad[0])
            raise DataError(f"{where} y_{split} row {row}, column '{names[column]}': {y[row, column]} is not a "
                            "finite number (NaN and infinity are refused): fix or drop that example")
    return out, names


def parse_cells(rows: list, names: tuple[str, ...], where: str, first_line: int = 2) -> np.ndarray:
    """float32 [N, K] of text cells (rows of K strings, as a CSV reader gives them); refuses a cell
    that is not a finite number, naming its line (`first_line` is the first row's) and column."""
    out = np.empty((len(rows), len(names)), np.float32)
    for index, cells in enumerate(rows):
        for column, cell in enumerate(cells):
            try:
                value = float(cell)
            except ValueError:
                raise DataError(f"{where} line {index + first_line}, column '{names[column]}': '{cell}' is not a "
                                "number (task 'regress' needs numeric targets): fix or drop the row") from None
            if not math.isfinite(value):
                raise DataError(f"{where} line {index + first_line}, column '{names[column]}': '{cell}' is not a "
                                "finite number (NaN and infinity are refused): fix or drop the row")
            out[index, column] = value
    return out


def standardise(dataset):
    """`dataset` with every split's targets standardised by the training split's mean and std (per
    target, float64), recorded in `spec.targets`; a dataset without targets is returned as it is."""
    spec = dataset.spec
    if spec.targets is None:
        return dataset
    y_train = np.asarray(dataset.y_train, np.float64)
    mean = y_train.mean(axis=0) if len(y_train) else np.zeros(y_train.shape[1])
    std = y_train.std(axis=0) if len(y_train) else np.ones(y_train.shape[1])
    std = np.where(std < MIN_STD, 1.0, std)
    scaled = {f"y_{split}": ((np.asarray(y, np.float64) - mean) / std).astype(np.float32)
              for split in ("train", "val", "test") if (y := getattr(dataset, f"y_{split}")) is not None}
    targets = {"names": list(spec.targets["names"]), "mean": mean.tolist(), "std": std.tolist()}
    return dataclasses.replace(dataset, spec=dataclasses.replace(spec, targets=targets), **scaled)


def random_indices(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held_out) index arrays, both sorted: `fraction` of `count` rows chosen by `seed` alone
    (targets have no classes to stratify by)."""
    rng = np.random.default_rng([seed, 0x5A11])
    take = int(round(fraction * count))
    if fraction > 0 and count >= 2:
        take = min(max(take, 1), count - 1)
    held_out = np.sort(rng.permutation(count)[:take])
    return np.setdiff1d(np.arange(count), held_out), held_out
