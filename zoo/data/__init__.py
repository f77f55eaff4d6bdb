"""Datasets by name or from files. A dataset is four to six splits (NumPy arrays, or array-likes read
from disk when indexed) plus a `DataSpec`; data knows nothing of models."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Callable

import numpy as np

from zoo.data import arrays, limits, source as source_lib, targets as targets_lib
from zoo.data.batching import eval_batches
from zoo.data.pipeline import BatchIterator, default_workers
from zoo.data.split import select_classes, with_validation
from zoo.errors import DataError, did_you_mean

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
    # Where the data came from: {"kind", "path" (resolved), "fingerprint": {"files", "bytes", "hash"}}.
    source: dict | None = None
    # Raw batch -> model input (see `preprocess`): {"scale", "mean", "std", "shape"} of the training split.
    normalization: dict | None = None
    # Text sources (zoo.data.text): {"level": "byte"} or {"level": "char", "chars": [...], "unknown": id},
    # so that sampling and evaluation decode as training did.
    vocabulary: dict | None = None
    # task: regress (zoo.data.targets): {"names": [...], "mean": [...], "std": [...]}, the training
    # split's standardisation of the targets, undone on predict, evaluation metrics and export.
    targets: dict | None = None

    def to_json(self) -> dict:
        out = {**dataclasses.asdict(self), "input_shape": list(self.input_shape)}
        if self.class_names is not None:
            out["class_names"] = list(self.class_names)
        if self.targets is None:  # a classification's spec stays as it was before regression
            del out["targets"]
        return out

    @classmethod
    def from_json(cls, data: dict) -> "DataSpec":
        names = data.get("class_names")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in known}, "input_shape": tuple(data["input_shape"]),
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

    @classmethod
    def from_arrays(cls, x_train, y_train, x_test, y_test, class_names=None, name: str = "arrays",
                    x_val=None, y_val=None, vocab_size: int | None = None, where: str | None = None,
                    source: dict | None = None, task: str = "classify", target_names=None) -> "Dataset":
        """A dataset of NumPy arrays (or memory maps): sizes, input shape, kind and class count read
        from them. 2-D inputs are vectors (token ids when integer and `vocab_size` is given), 3-D
        signals (N, L, C), 4-D images (N, H, W, C). `task="regress"`: the y are float targets [N] or
        [N, K] (named by `target_names`), and the class count is K."""
        where = where or f"dataset '{name}'"
        splits = {"train": (x_train, y_train), "test": (x_test, y_test)}
        if x_val is not None or y_val is not None:
            splits["val"] = (x_val, y_val)
        for split, (x, y) in splits.items():
            if x is None or y is None:
                raise DataError(f"{where}: give both x_{split} and y_{split}")
            if len(x) != len(y):
                raise DataError(f"{where}: x_{split} has {len(x)} rows but y_{split} has {len(y)}: one label per example")
        ys, class_names, num_classes, targets = _labels_or_targets(splits, class_names, where, task, target_names)
        _check_finite_inputs({split: x for split, (x, _) in splits.items()}, where, source)
        x_train = _as_array(x_train)
        kind, shape = _kind_of(x_train, vocab_size, where)
        as_input = (lambda x: _as_array(x)[..., None]) if kind == "signal" and x_train.ndim == 2 else _as_array
        if kind == "tokens":
            for split, (x, _) in splits.items():
                x = _as_array(x)
                if len(x) and (x.min() < 0 or x.max() >= vocab_size):
                    raise DataError(f"{where}: x_{split} holds token id {int(x.min() if x.min() < 0 else x.max())} "
                                    f"outside [0, {vocab_size}): raise data.vocab_size or fix the data")
        xs = {split: as_input(x) for split, (x, _) in splits.items()}
        for split, x in xs.items():
            if tuple(x.shape[1:]) != shape:
                raise DataError(f"{where}: x_{split} has examples of shape {tuple(x.shape[1:])}, x_train {shape}: "
                                "every split needs the same example shape")
        spec = DataSpec(name, shape, kind, num_classes, vocab_size if kind == "tokens" else None,
                        len(xs["train"]), len(xs["test"]), len(xs["val"]) if "val" in xs else 0,
                        tuple(class_names) if class_names is not None else None,
                        {**(source or {"kind": "arrays"}), **({"vectors": True} if x_train.ndim == 2 and
                                                              kind == "signal" else {})}, targets=targets)
        return cls(spec, xs["train"], ys["train"], xs["test"], ys["test"], xs.get("val"), ys.get("val"))


def _labels_or_targets(splits: dict, class_names, where: str, task: str, target_names):
    """(ys, class names, class count, DataSpec.targets) of every split's y: class ids, or for task
    'regress' float targets [N, K] (class count K, targets {"names"}: standardised by `prepare`)."""
    ys = {split: y for split, (_, y) in splits.items()}
    if task != "regress":
        return (*source_lib.class_ids(ys, class_names, where), None)
    if class_names is not None:
        raise DataError(f"{where} has class names, but task 'regress' predicts numbers: drop the class names, or "
                        "set task: classify")
    ys, names = targets_lib.as_targets(ys, target_names, where)
    return ys, None, ys["train"].shape[1], {"names": list(names)}


_FINITE: set = set()  # the sources (files, fingerprint, columns) whose inputs were found finite, per process


def _check_finite_inputs(xs: dict, where: str, source: dict | None) -> None:
    """Refuses NaN or infinity in any split, naming it, the row and the column; a file source already
    found finite in this process (a compare loads it once per run) is not read again."""
    key = json.dumps(source, sort_keys=True) if source and source.get("fingerprint") else None
    if key in _FINITE:
        return
    for split, x in xs.items():
        source_lib.check_finite(_as_array(x), f"{where} x_{split}")
    if key:
        _FINITE.add(key)


def _as_array(x):
    """Arrays and array-likes read from disk stay as they are; anything else becomes an array."""
    lazy = hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(x, "__getitem__")
    return x if isinstance(x, np.ndarray) or lazy else np.asarray(x)


def _kind_of(x, vocab_size, where) -> tuple[str, tuple]:
    integer = np.issubdtype(x.dtype, np.integer)
    if x.ndim == 2 and integer and vocab_size:
        return "tokens", tuple(x.shape[1:])
    if x.ndim == 2:
        return "signal", (x.shape[1], 1)  # a vector is a one-channel signal: every family takes it
    if x.ndim in (3, 4) and (integer or np.issubdtype(x.dtype, np.floating)):
        return ("signal" if x.ndim == 3 else "image"), tuple(x.shape[1:])
    raise DataError(f"{where}: x_train is {x.dtype} of shape {tuple(x.shape)}; inputs must be numbers shaped "
                    "(N, D) vectors, (N, L, C) signals or (N, H, W, C) images")


BUILT_IN = ("digits", "mnist1d", "mnist1d_shuffled")
REGRESSION_BUILT_IN = ("diabetes",)  # built-in datasets of float targets (task: regress)
FILE_FORMATS = ("npz", "csv", "image_folder", "idx", "cifar10", "cifar100", "text")


def _loaders() -> dict[str, Callable[[], Dataset]]:
    from zoo.config import DataConfig
    from zoo.data import diabetes, digits, mnist1d, text

    return {
        "digits": digits.load,
        "mnist1d": mnist1d.load,
        "mnist1d_shuffled": mnist1d.load_shuffled,
        "diabetes": diabetes.load,
        "pydoc": lambda: text.load(DataConfig(name="pydoc")),  # the built-in text corpus, byte level
    }


def list_datasets() -> list[str]:
    return sorted(_loaders())


def load_dataset(name: str) -> Dataset:
    loaders = _loaders()
    if name not in loaders:
        raise DataError(f"unknown dataset '{name}': {did_you_mean(name, [*loaders, *FILE_FORMATS])}"
                        f"choose one of {', '.join(sorted(loaders))}, or a file format "
                        f"({', '.join(FILE_FORMATS)}) with data.path")
    dataset = loaders[name]()
    recorded = {**(dataset.spec.source or {}), "kind": name}  # the text corpus records its fingerprint and split
    return dataclasses.replace(dataset, spec=dataclasses.replace(dataset.spec, source=recorded))


def check_task(name: str, task: str) -> None:
    """Refuses a source that cannot give what the config's task learns: float targets for regress (csv,
    npz, the built-in diabetes), text for lm; a regression or text dataset under another task."""
    from zoo.data import text

    wants = {"regress": ("csv", "npz", *REGRESSION_BUILT_IN), "lm": text.SOURCES}
    if task in wants and name not in wants[task]:
        what = ("float targets from csv or npz files (data.name: csv or npz, data.path), or the built-in "
                f"{' or '.join(REGRESSION_BUILT_IN)}") if task == "regress" else \
            f"text (data.name: {' or '.join(text.SOURCES)})"
        raise DataError(f"task '{task}' reads {what}, not '{name}': set data.name, or task: classify")
    owner = "regress" if name in REGRESSION_BUILT_IN else "lm" if name in text.SOURCES else None
    if owner and task != owner:
        raise DataError(f"data.name '{name}' is {'a regression dataset' if owner == 'regress' else 'text'}: "
                        f"set task: {owner}")


def load(data_config, task: str | None = None) -> Dataset:
    """The raw dataset a `data:` config section names: a built-in one, or files of a format at data.path.
    `task` (the config's) is checked against the source (`check_task`) and tells csv and npz files
    whether their y are class labels or regression targets (None: classify, unchecked)."""
    from zoo.data import text

    name = data_config.name
    if task is not None:
        check_task(name, task)
    if name in text.SOURCES:
        return text.load(data_config)
    for key in ("vocabulary", "seq_len"):
        if getattr(data_config, key, None) is not None:
            raise DataError(f"data.{key} applies to text sources ({', '.join(text.SOURCES)}) only, not to "
                            f"'{name}': remove it")
    if name in FILE_FORMATS:
        from zoo.data import cifar, csv, idx, image_folder, npz

        if name in ("csv", "npz"):
            return (csv.load if name == "csv" else npz.load)(data_config, task=task or "classify")
        reader = {"image_folder": image_folder.load, "idx": idx.load, "cifar10": cifar.load,
                  "cifar100": cifar.load}[name]
        return reader(data_config)
    if data_config.path is not None and name in _loaders():
        raise DataError(f"data.path is set but '{name}' is a built-in dataset: set data.name to the files' "
                        f"format ({', '.join(FILE_FORMATS)})")
    return load_dataset(name)


_STATS: dict = {}  # (fingerprint, validation, seed, normalize) -> statistics, per process


def prepare(dataset: Dataset, data_config) -> Dataset:
    """`dataset` ready to train on: a validation split, the training split's normalisation statistics
    recorded in the spec, and every split passed through `preprocess` (lazily for data on disk).
    Refuses, before anything trains, data that could not train or be evaluated (see `check_usable`)."""
    check_usable(dataset, data_config)
    dataset = targets_lib.standardise(with_validation(dataset, data_config.validation, data_config.seed))
    spec = dataset.spec
    check_inputs(spec, dataset.x_train[:1])  # the raw inputs, before preprocessing casts them
    kind = (spec.source or {}).get("kind")
    normalize = data_config.normalize if data_config.normalize is not None else kind not in BUILT_IN
    scale = 1 / 255 if np.dtype(dataset.x_train.dtype) == np.uint8 else 1.0
    normalization = None
    if spec.kind != "tokens" and (normalize or scale != 1.0):
        fingerprint = (spec.source or {}).get("fingerprint")
        key = (json.dumps(fingerprint, sort_keys=True), data_config.validation, data_config.seed,
               data_config.classes, normalize, scale)
        normalization = _STATS.get(key) if fingerprint else None
        if normalization is None:
            per_column = bool((spec.source or {}).get("vectors"))  # csv columns, npz vectors
            normalization = (source_lib.statistics(dataset.x_train, per_column, scale) if normalize
                             else {"scale": scale, "mean": None, "std": None, "shape": None})
            if fingerprint:
                _STATS[key] = normalization
    spec = dataclasses.replace(spec, normalization=normalization)
    convert = source_lib.preprocessor(normalization, spec.dtype)
    splits = {f"x_{split}": _converted(getattr(dataset, f"x_{split}"), convert)
              for split in ("train", "val", "test") if getattr(dataset, f"x_{split}") is not None}
    return dataclasses.replace(dataset, spec=spec, **splits)


def check_usable(dataset: Dataset, data_config) -> None:
    """Refuses an empty test split, NaN or infinity in inputs held in memory (file sources were checked
    as they were read, naming the file), a crop padding that moves every example out of view, and batches too
    large for zoo's memory limit."""
    spec, where = dataset.spec, f"dataset '{dataset.spec.name}'"
    if len(dataset.x_test) == 0:
        raise DataError(f"{where} has an empty test split: every run reports test accuracy; give test examples "
                        "(data.test carves a fraction of train for csv and image folders)")
    for split in ("train", "val", "test"):
        x = getattr(dataset, f"x_{split}")
        if x is not None and not arrays.is_lazy(x):
            source_lib.check_finite(x, f"{where} x_{split}")
    spatial = tuple(spec.input_shape[:-1]) if spec.kind != "tokens" else ()
    pad = data_config.augment.crop_pad
    if pad and spatial and pad >= min(spatial):
        raise DataError(f"data.augment.crop_pad {pad} is not smaller than the inputs' size {spatial} in {where}: "
                        f"use at most {min(spatial) - 1} (a crop moves examples by up to that many steps)")
    example_bytes = math.prod(spec.input_shape) * 4  # float32 or int32, as the model takes them
    for key in ("batch_size", "eval_batch_size"):
        size = getattr(data_config, key)
        if size * example_bytes > limits.max_bytes():
            raise DataError(f"data.{key} {size}: a batch of inputs of shape {tuple(spec.input_shape)} takes "
                            f"{size * example_bytes:,} bytes, over zoo's memory limit of {limits.max_bytes():,} "
                            f"(${limits.MAX_BYTES_ENV}): lower data.{key}")


_EAGER_BYTES = 256 << 20  # in-memory splits up to this size (as float32) are converted at once


def _converted(x, convert):
    if not arrays.is_lazy(x) and x.size * 4 <= _EAGER_BYTES:
        return convert(x)
    return arrays.transformed(x if arrays.is_lazy(x) else arrays.RowView(x), convert)


def preprocess(spec: DataSpec, x_raw) -> np.ndarray:
    """Raw inputs (as the source gives them) -> what the model takes, exactly as in training: the
    same scale and the training split's mean and std recorded in `spec`. For predict and export."""
    return source_lib.preprocessor(spec.normalization, spec.dtype)(x_raw)


def check_unchanged(recorded_spec: DataSpec | dict, current_spec: DataSpec) -> None:
    """Raises DataError when the data files behind a run changed since it was trained."""
    recorded = recorded_spec.source if isinstance(recorded_spec, DataSpec) else (recorded_spec or {}).get("source")
    source_lib.check_unchanged(recorded, current_spec.source)


def check_inputs(spec: DataSpec, x: np.ndarray) -> None:
    """Raises DataError when `x` (a batch) does not match the spec's shape and kind."""
    if tuple(x.shape[1:]) != tuple(spec.input_shape):
        raise DataError(
            f"dataset '{spec.name}' gave inputs of shape {tuple(x.shape[1:])}, its spec says "
            f"{tuple(spec.input_shape)}: fix the data files or the spec"
        )
    integer = np.issubdtype(x.dtype, np.integer)
    pixel_bytes = x.dtype == np.uint8 and spec.kind != "tokens"  # raw 8-bit images, scaled by preprocess
    if integer != (spec.kind == "tokens") and not pixel_bytes:
        raise DataError(
            f"dataset '{spec.name}' is of kind '{spec.kind}' but its inputs are {x.dtype}: "
            "token ids must be integers, images and signals floats"
        )


__all__ = ["BUILT_IN", "BatchIterator", "DataSpec", "Dataset", "FILE_FORMATS", "KINDS", "check_inputs",
           "check_unchanged", "check_usable", "default_workers", "eval_batches", "list_datasets", "load",
           "load_dataset", "prepare", "preprocess", "select_classes", "with_validation"]
