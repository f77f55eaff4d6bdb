"""The validation split: held out of train, stratified by class, fixed by a seed."""

from __future__ import annotations

import dataclasses

import numpy as np

from zoo.data.arrays import take
from zoo.errors import DataError


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
    out (stratified, fixed by `seed`); fraction 0 leaves none (then nothing is 'best')."""
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
    kept, held_out = stratified_indices(np.asarray(dataset.y_train), fraction, seed)
    if len(kept) == 0:
        raise DataError(f"data.validation {fraction} leaves no training examples in '{dataset.spec.name}': "
                        "use a smaller fraction")
    spec = dataclasses.replace(dataset.spec, train_size=len(kept), val_size=len(held_out))
    return dataclasses.replace(dataset, spec=spec, x_train=take(dataset.x_train, kept), y_train=dataset.y_train[kept],
                               x_val=take(dataset.x_train, held_out), y_val=dataset.y_train[held_out])
