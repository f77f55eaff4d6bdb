"""CSV tables: one row per example, a header row, `label: <column>`, every other column a number.

String labels are allowed (the sorted distinct values become the class names; integer labels are
class ids). The test split comes from `test_path`, or `test: 0.2` carves one out (stratified, by
data.seed)."""

from __future__ import annotations

import csv as csv_module
from pathlib import Path

import numpy as np

from zoo.data import limits, source
from zoo.data.split import stratified_indices
from zoo.errors import DataError, listing


def _read(path: Path, label: str) -> tuple[list[str], np.ndarray, list[str]]:
    """(feature column names, features float32 (N, D), raw label strings) of one CSV file, read row by
    row into blocks, within zoo's memory limit."""
    try:
        limits.check_bytes(path.stat().st_size, f"CSV file {path}")
        with open(path, newline="") as handle:
            rows = csv_module.reader(handle)
            header = [name.strip() for name in next(rows, [])]
            if not header:
                raise DataError(f"{path} is empty: a CSV needs a header row and one row per example")
            features = _feature_columns(path, header, label)
            blocks, labels = _rows(path, rows, header, features, header.index(label))
    except (OSError, UnicodeDecodeError, csv_module.Error) as error:
        raise DataError(f"{path} cannot be read as CSV ({error})") from None
    if not labels:
        raise DataError(f"{path} has a header but no rows")
    return [header[i] for i in features], np.concatenate(blocks), labels


def _feature_columns(path: Path, header: list[str], label: str) -> list[int]:
    if label not in header:
        raise DataError(f"{path} has no label column '{label}': its columns are {listing(header)}; "
                        "set data.label to one of them")
    label_at = header.index(label)
    features = [i for i in range(len(header)) if i != label_at]
    if not features:
        raise DataError(f"{path} has only the label column '{label}': give at least one feature column")
    return features


def _rows(path: Path, rows, header: list[str], features: list[int], label_at: int):
    """(float32 blocks of feature rows, label strings); refuses a short row, a non-number or a
    non-finite number naming its line and column."""
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
        labels.append(row[label_at].strip())
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


def load(config, name: str = "csv"):
    from zoo.data import Dataset

    if not config.label:
        raise DataError("data.name 'csv' needs data.label: the name of the column holding the class")
    root = source.resolve(config.path, name)
    columns, x, raw = _read(root, config.label)
    files = [root]
    if config.test_path:
        test_path = source.resolve(config.test_path, name)
        test_columns, x_test, raw_test = _read(test_path, config.label)
        if test_columns != columns:
            raise DataError(f"{test_path} has columns {listing(test_columns)}, {root} has {listing(columns)}: "
                            "the test file needs the same columns")
        files.append(test_path)
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
    elif config.test:
        source.check_classification(len(set(raw)), len(raw), str(root))
        y, names = _class_ids(raw)
        source.check_labels(y, None, str(root))
        kept, held = stratified_indices(y, config.test, config.seed + 1)
        x_train, y_train, x_test, y_test = x[kept], y[kept], x[held], y[held]
    else:
        raise DataError(f"{root}: a CSV source needs a test split: set data.test (e.g. 0.2) to carve one out, "
                        "or data.test_path to a second file")
    return Dataset.from_arrays(x_train, y_train, x_test, y_test, class_names=names,
                               name=root.stem, where=str(root),
                               source={**source.record("csv", root, files), "columns": columns})
