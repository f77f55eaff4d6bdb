"""CSV tables: one row per example, a header row, `label: <column>`, every other column a number.

String labels are allowed (the sorted distinct values become the class names; integer labels are
class ids). With `task: regress` the label column holds numeric targets, and `label` may name several
(`label: [price, tax]`). The test split comes from `test_path`, or `test: 0.2` carves one out
(stratified by class, by data.seed; at random for regression targets)."""

from __future__ import annotations

import csv as csv_module
from pathlib import Path

import numpy as np

from zoo.data import limits, source, targets
from zoo.data.split import stratified_indices
from zoo.errors import DataError, listing


def _read(path: Path, label: tuple[str, ...]) -> tuple[list[str], np.ndarray, list[list[str]]]:
    """(feature column names, features float32 (N, D), the raw strings of the label columns per row)
    of one CSV file, read row by row into blocks, within zoo's memory limit."""
    try:
        limits.check_bytes(path.stat().st_size, f"CSV file {path}")
        with open(path, newline="") as handle:
            rows = csv_module.reader(handle)
            header = [name.strip() for name in next(rows, [])]
            if not header:
                raise DataError(f"{path} is empty: a CSV needs a header row and one row per example")
            features = _feature_columns(path, header, label)
            blocks, labels = _rows(path, rows, header, features, [header.index(name) for name in label])
    except (OSError, UnicodeDecodeError, csv_module.Error) as error:
        raise DataError(f"{path} cannot be read as CSV ({error})") from None
    if not labels:
        raise DataError(f"{path} has a header but no rows")
    return [header[i] for i in features], np.concatenate(blocks), labels


def _feature_columns(path: Path, header: list[str], label: tuple[str, ...]) -> list[int]:
    missing = next((name for name in label if name not in header), None)
    if missing is not None:
        raise DataError(f"{path} has no label column '{missing}': its columns are {listing(header)}; "
                        "set data.label to one of them")
    features = [i for i in range(len(header)) if header[i] not in label]
    if not features:
        raise DataError(f"{path} has only the label column(s) {listing(list(label))}: give at least one feature "
                        "column")
    return features


def _rows(path: Path, rows, header: list[str], features: list[int], label_at: list[int]):
    """(float32 blocks of feature rows, the label columns' strings per row); refuses a short row, a
    non-number or a non-finite number naming its line and column."""
    block_rows = max(1, min(4096, (16 << 20) // (4 * len(features))))
    blocks, labels, block, held = [], [], None, 0
    for number, row in enumerate(rows, start=2):  # line numbers as an editor shows them
        if len(row) != len(header):
            raise DataError(f"{path} line {number} has {len(row)} cells, the header {len(header)}")
        if block is None or len(labels) % block_rows == 0:
            held += 4 * len(features) * block_rows
            limits.check_bytes(held, f"the values of CSV file {path}")
            block = np.empty((block_rows, len(features)), np.float32)
            blocks.append(block)
        values = block[len(labels) % block_rows]
        for j, column in enumerate(features):
            try:
                values[j] = float(row[column])
            except ValueError:
                raise DataError(f"{path} line {number}, column '{header[column]}': '{row[column]}' is not a "
                                "number (feature columns must be numeric)") from None
        if not np.isfinite(values).all():
            column = features[int(np.argmin(np.isfinite(values)))]
            raise DataError(f"{path} line {number}, column '{header[column]}': '{row[column].strip()}' is not a "
                            "finite number (NaN and infinity are refused): fix or drop the row")
        labels.append([row[i].strip() for i in label_at])
    if blocks:
        blocks[-1] = blocks[-1][:len(labels) - (len(blocks) - 1) * block_rows]
    return blocks or [np.empty((0, len(features)), np.float32)], labels


def _class_ids(labels: list[str], names: list[str] | None = None) -> tuple[np.ndarray, list[str] | None]:
    """Integer labels stay class ids (no names); anything else maps to sorted distinct names."""
    if names is None:
        try:
            return np.array([int(v) for v in labels], np.int64), None
        except ValueError:
            names = sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    return np.array([index.get(v, -1) for v in labels], np.int64), names


def _label_columns(config, task: str) -> tuple[str, ...]:
    """data.label as a tuple of column names: one class column, or (regress) one or more targets."""
    what = "target (or a list of them)" if task == "regress" else "class"
    if not config.label:
        raise DataError(f"data.name 'csv' needs data.label: the name of the column holding the {what}")
    label = (config.label,) if isinstance(config.label, str) else tuple(config.label)
    if len(set(label)) != len(label):
        raise DataError(f"data.label {list(label)} names a column twice: give each target once")
    if task != "regress" and len(label) > 1:
        raise DataError(f"data.label names {len(label)} columns, but a classification takes one class column "
                        "(several numeric targets are task: regress)")
    return label


def load(config, name: str = "csv", task: str = "classify"):
    from zoo.data import Dataset

    label = _label_columns(config, task)
    root = source.resolve(config.path, name)
    columns, x, raw = _read(root, label)
    files = [root]
    test = None
    if config.test_path:
        test_path = source.resolve(config.test_path, name)
        test_columns, x_test, raw_test = _read(test_path, label)
        if test_columns != columns:
            raise DataError(f"{test_path} has columns {listing(test_columns)}, {root} has {listing(columns)}: "
                            "the test file needs the same columns")
        files.append(test_path)
        test = (test_path, x_test, raw_test)
    elif not config.test:
        raise DataError(f"{root}: a CSV source needs a test split: set data.test (e.g. 0.2) to carve one out, "
                        "or data.test_path to a second file")
    recorded = {**source.record("csv", root, files), "columns": columns}
    if task == "regress":
        return _regression(config, root, x, raw, test, label, recorded)
    raw = [cells[0] for cells in raw]
    if test:
        test_path, x_test, raw_test = test[0], test[1], [cells[0] for cells in test[2]]
        source.check_classification(len(set(raw) | set(raw_test)), len(raw) + len(raw_test), str(root))
        y, names = _class_ids(raw)
        if names is None:
            y_test, _ = _class_ids(raw_test)
        else:
            unseen = sorted(set(raw_test) - set(names))
            if unseen:
                raise DataError(f"{test_path} has label '{unseen[0]}', never seen in {root}")
            y_test, _ = _class_ids(raw_test, names)
        x_train, y_train = x, y
    else:
        source.check_classification(len(set(raw)), len(raw), str(root))
        y, names = _class_ids(raw)
        source.check_labels(y, None, str(root))
        kept, held = stratified_indices(y, config.test, config.seed + 1)
        x_train, y_train, x_test, y_test = x[kept], y[kept], x[held], y[held]
    return Dataset.from_arrays(x_train, y_train, x_test, y_test, class_names=names,
                               name=root.stem, where=str(root), source=recorded)


def _regression(config, root: Path, x, raw, test, label: tuple[str, ...], recorded: dict):
    """A regression dataset of the CSV's target columns (task: regress); the test split from the test
    file, or carved out at random by data.seed."""
    from zoo.data import Dataset

    y = targets.parse_cells(raw, label, str(root))
    if test:
        test_path, x_test, raw_test = test
        x_train, y_train, y_test = x, y, targets.parse_cells(raw_test, label, str(test_path))
    else:
        kept, held = targets.random_indices(len(y), config.test, config.seed + 1)
        x_train, y_train, x_test, y_test = x[kept], y[kept], x[held], y[held]
    return Dataset.from_arrays(x_train, y_train, x_test, y_test, name=root.stem, where=str(root), source=recorded,
                               task="regress", target_names=label)
