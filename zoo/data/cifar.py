"""CIFAR-10 and CIFAR-100, the official binary versions (never the "python version": it needs unsafe loading).

CIFAR-10: data_batch_1.bin ... data_batch_5.bin and test_batch.bin, records of 1 label byte and
3072 pixel bytes (red, green, blue planes of 32x32); class names from batches.meta.txt.
CIFAR-100: train.bin and test.bin, records of a coarse and a fine label byte and 3072 pixel bytes;
`label_mode: fine|coarse`; names from fine_label_names.txt / coarse_label_names.txt."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.data import limits, source
from zoo.errors import DataError

PIXELS = 3 * 32 * 32


def read_records(path: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 32, 32, 3) uint8, labels (N, label_bytes) uint8) of one binary file."""
    record = label_bytes + PIXELS
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as error:
        raise DataError(f"{path} cannot be read ({error})") from None
    if len(data) == 0 or len(data) % record:
        raise DataError(f"{path} holds {len(data)} bytes, not a whole number of {record}-byte records "
                        f"({label_bytes} label byte(s) + {PIXELS} pixels): the file is truncated or of "
                        "another CIFAR version")
    records = data.reshape(-1, record)
    images = records[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), records[:, :label_bytes]


def _names(path: Path) -> tuple | None:
    if not path.is_file():
        return None
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    return names or None


def _need(root: Path, name: str, kind: str) -> Path:
    path = root / name
    if not path.is_file():
        raise DataError(f"{root} lacks {name}: data.path must be the folder of the {kind} binary version "
                        f"({'data_batch_1.bin ... test_batch.bin' if kind == 'cifar10' else 'train.bin, test.bin'})")
    return path


def _check_size(paths: list[Path], root: Path) -> None:
    """The records are read into memory: refuses files larger than the memory limit before reading."""
    limits.check_bytes(sum(path.stat().st_size for path in paths), f"the {len(paths)} .bin files of {root}")


def load(config, name: str | None = None):
    from zoo.data import Dataset

    kind = name or config.name
    root = source.resolve(config.path, kind)
    if not root.is_dir():
        raise DataError(f"data.path {root} must be the folder holding the {kind} .bin files")
    if kind == "cifar10":
        train_files = sorted(root.glob("data_batch_*.bin"))
        if not train_files:
            _need(root, "data_batch_1.bin", kind)
        test_file = _need(root, "test_batch.bin", kind)
        _check_size([*train_files, test_file], root)
        parts = [read_records(path, 1) for path in train_files]
        x_train = np.concatenate([p[0] for p in parts])
        y_train = np.concatenate([p[1][:, 0] for p in parts])
        x_test, y_test = read_records(test_file, 1)
        y_test = y_test[:, 0]
        names_file = root / "batches.meta.txt"
        num_classes = 10
    else:
        train_files = [_need(root, "train.bin", kind)]
        test_file = _need(root, "test.bin", kind)
        column = 0 if config.label_mode == "coarse" else 1
        _check_size([*train_files, test_file], root)
        x_train, y_train = read_records(train_files[0], 2)
        x_test, y_test = read_records(test_file, 2)
        y_train, y_test = y_train[:, column], y_test[:, column]
        names_file = root / f"{config.label_mode}_label_names.txt"
        num_classes = 20 if config.label_mode == "coarse" else 100
    names = _names(names_file)
    if names is not None and len(names) != num_classes:
        names = None  # a names file of another version: ids are names enough
    files = [*train_files, test_file, *([names_file] if names else [])]
    return Dataset.from_arrays(x_train, y_train, x_test, y_test,
                               class_names=names or tuple(str(i) for i in range(num_classes)),
                               name=kind, where=str(root), source=source.record(kind, root, files))
