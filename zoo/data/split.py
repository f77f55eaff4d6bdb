"""The validation split: held out of train, stratified by class, fixed by a seed."""

from __future__ import annotations

import dataclasses

import numpy as np

from zoo.data.arrays import take
from zoo.data.targets import random_indices
from zoo.errors import DataError, did_you_mean, listing


def stratified_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held_out) index arrays, both sorted: `fraction` of each class, at least one example of
    every class with two or more, chosen by `seed` alone."""
    rng = np.random.default_rng([seed, 0x5A11])
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = int(round(fraction * len(members)))
        if fraction > 0 and len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        held.append(rng.permutation(members)[:take])
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), held_out)
    return kept, held_out


def with_validation(dataset, fraction: float, seed: int = 0):
    """`dataset` with a validation split: its own if the source has one, else `fraction` of train held
    out (stratified by class, fixed by `seed`; at random for regression targets [N, K]); fraction 0
    leaves none (then nothing is 'best')."""
    if not 0 <= fraction < 1:
        raise DataError(f"data.validation {fraction!r} must be in [0, 1): the fraction of the training split "
                        "held out for model selection (0: none)")
    if dataset.x_val is not None:
        spec = dataclasses.replace(dataset.spec, val_size=len(dataset.x_val))
        return dataclasses.replace(dataset, spec=spec)
    if fraction == 0:
        empty_x = dataset.x_train[:0]
        spec = dataclasses.replace(dataset.spec, val_size=0)
        return dataclasses.replace(dataset, spec=spec, x_val=empty_x, y_val=dataset.y_train[:0])
    labels = np.asarray(dataset.y_train)
    kept, held_out = (stratified_indices(labels, fraction, seed) if labels.ndim == 1
                      else random_indices(len(labels), fraction, seed))
    if len(kept) == 0:
        raise DataError(f"data.validation {fraction} leaves no training examples in '{dataset.spec.name}': "
                        "use a smaller fraction")
    spec = dataclasses.replace(dataset.spec, train_size=len(kept), val_size=len(held_out))
    return dataclasses.replace(dataset, spec=spec, x_train=take(dataset.x_train, kept), y_train=dataset.y_train[kept],
                               x_val=take(dataset.x_train, held_out), y_val=dataset.y_train[held_out])



def class_indices(spec, classes) -> list[int]:
    """The class ids of `classes`: ids of the dataset, or names resolved against its class names (the ids
    as strings where the source has none)."""
    names = [str(n) for n in spec.class_names] if spec.class_names else [str(c) for c in range(spec.num_classes)]
    out = []
    for choice in classes:
        if isinstance(choice, str) and choice not in names:
            raise DataError(f"data.classes names class '{choice}', which '{spec.name}' lacks: "
                            f"{did_you_mean(choice, names)}its classes are {listing(names)}")
        if not isinstance(choice, str) and not 0 <= choice < spec.num_classes:
            raise DataError(f"data.classes names class {choice}, but '{spec.name}' has classes "
                            f"0..{spec.num_classes - 1}: give class indices of the dataset")
        index = names.index(choice) if isinstance(choice, str) else choice
        if index in out:
            raise DataError(f"data.classes names class {index} ('{names[index]}') twice: give each class once")
        out.append(index)
    return out


def select_classes(dataset, classes):
    """`dataset` with only the examples of `classes` (label ids or class names), relabelled 0..k-1 in the
    order given; class names are kept (the original ids become the names where the source has none)."""
    if classes is None:
        return dataset
    spec = dataset.spec
    classes = class_indices(spec, classes)
    lookup = np.full(spec.num_classes, -1, np.int64)
    lookup[list(classes)] = np.arange(len(classes))

    def keep(x, y):
        if x is None:
            return None, None
        y = np.asarray(y)
        rows = np.flatnonzero(lookup[y] >= 0)
        return take(x, rows), lookup[y[rows]].astype(y.dtype)

    x_train, y_train = keep(dataset.x_train, dataset.y_train)
    x_test, y_test = keep(dataset.x_test, dataset.y_test)
    x_val, y_val = keep(dataset.x_val, dataset.y_val)
    names = spec.class_names or tuple(str(c) for c in range(spec.num_classes))
    spec = dataclasses.replace(spec, num_classes=len(classes), class_names=tuple(names[c] for c in classes),
                               train_size=len(y_train), test_size=len(y_test),
                               val_size=0 if y_val is None else len(y_val))
    return dataclasses.replace(dataset, spec=spec, x_train=x_train, y_train=y_train, x_test=x_test,
                               y_test=y_test, x_val=x_val, y_val=y_val)
