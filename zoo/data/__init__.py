"""Datasets by name. A dataset is in-memory NumPy arrays plus a `DataSpec`; data knows nothing of models."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Callable

import numpy as np

from zoo.data.batching import BatchIterator, eval_batches
from zoo.data.split import select_classes, with_validation
from zoo.errors import DataError

KINDS = ("image", "signal", "tokens")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a model needs to know of its data: one example's shape, its kind, the classes."""

    name: str
    input_shape: tuple
    kind: str
    num_classes: int
    vocab_size: int | None = None
    train_size: int = 0
    test_size: int = 0
    val_size: int = 0
    class_names: tuple | None = None  # one name per class where the source has them

    def to_json(self) -> dict:
        out = {**dataclasses.asdict(self), "input_shape": list(self.input_shape)}
        if self.class_names is not None:
            out["class_names"] = list(self.class_names)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "DataSpec":
        names = data.get("class_names")
        return cls(**{**data, "input_shape": tuple(data["input_shape"]),
                      "class_names": tuple(names) if names is not None else None})

    @property
    def dtype(self) -> str:
        return "int32" if self.kind == "tokens" else "float32"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train, validation and test splits. A source without its own validation split gets one held out
    of train by `with_validation` (selection reads validation only; test is reported, never chosen on)."""

    spec: DataSpec
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    @property
    def has_validation(self) -> bool:
        return self.x_val is not None and len(self.x_val) > 0


def _loaders() -> dict[str, Callable[[], Dataset]]:
    from zoo.data import digits, mnist1d

    return {
        "digits": digits.load,
        "mnist1d": mnist1d.load,
        "mnist1d_shuffled": mnist1d.load_shuffled,
    }


def list_datasets() -> list[str]:
    return sorted(_loaders())


def load_dataset(name: str) -> Dataset:
    loaders = _loaders()
    if name not in loaders:
        near = difflib.get_close_matches(name, list(loaders), n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise DataError(f"unknown dataset '{name}': {hint}choose one of {', '.join(sorted(loaders))}")
    return loaders[name]()


def check_inputs(spec: DataSpec, x: np.ndarray) -> None:
    """Raises DataError when `x` (a batch) does not match the spec's shape and kind."""
    if tuple(x.shape[1:]) != tuple(spec.input_shape):
        raise DataError(
            f"dataset '{spec.name}' gave inputs of shape {tuple(x.shape[1:])}, its spec says "
            f"{tuple(spec.input_shape)}: fix the data files or the spec"
        )
    integer = np.issubdtype(x.dtype, np.integer)
    if integer != (spec.kind == "tokens"):
        raise DataError(
            f"dataset '{spec.name}' is of kind '{spec.kind}' but its inputs are {x.dtype}: "
            "token ids must be integers, images and signals floats"
        )


__all__ = ["BatchIterator", "DataSpec", "Dataset", "KINDS", "check_inputs", "eval_batches",
           "list_datasets", "load_dataset", "select_classes", "with_validation"]
