"""Deterministic batches: the order is a function of (seed, epoch), the position is two integers."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Position:
    """Where the iterator stands: saved in every checkpoint so a resumed run sees the same batches."""

    epoch: int = 0
    index: int = 0  # batches already taken in this epoch


def random_shift(batch: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Shifts each example by up to `max_shift` steps along every spatial axis, zero-filling."""
    spatial_axes = range(1, batch.ndim - 1)  # channels last
    padding = [(0, 0)] + [(max_shift, max_shift)] * len(spatial_axes) + [(0, 0)]
    padded = np.pad(batch, padding)
    offsets = rng.integers(0, 2 * max_shift + 1, size=(len(batch), len(spatial_axes)))
    out = np.empty_like(batch)
    for i, offset in enumerate(offsets):
        window = tuple(slice(o, o + size) for o, size in zip(offset, batch.shape[1:-1]))
        out[i] = padded[(i, *window)]
    return out


class BatchIterator:
    """Shuffled, fixed-size training batches (the last partial batch of an epoch is dropped)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int,
                 shift: int = 0, position: Position | None = None):
        if not 0 < batch_size <= len(x):
            raise ValueError(f"batch size {batch_size} must be between 1 and the {len(x)} examples")
        self.x, self.y = x, y
        self.batch_size, self.seed, self.shift = batch_size, seed, shift
        self.position = dataclasses.replace(position) if position else Position()
        self.steps_per_epoch = len(x) // batch_size
        self._order_epoch, self._order = -1, None

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(len(self.x))
            self._order_epoch = epoch
        return self._order

    def __iter__(self):
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        epoch, index = self.position.epoch, self.position.index
        take = self._epoch_order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]
        x, y = self.x[take], self.y[take]
        if self.shift:
            x = random_shift(x, self.shift, np.random.default_rng([self.seed, epoch, index, 1]))
        index += 1
        self.position = Position(epoch + 1, 0) if index == self.steps_per_epoch else Position(epoch, index)
        return x, y

    def take(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """`count` batches stacked on a leading axis (for several steps in one call)."""
        batches = [next(self) for _ in range(count)]
        return np.stack([b[0] for b in batches]), np.stack([b[1] for b in batches])


def eval_batches(x: np.ndarray, y: np.ndarray, batch_size: int):
    """Fixed-size batches over all of (x, y); the last is padded, with a 0/1 mask marking real rows."""
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        real = len(xb)
        mask = np.ones(batch_size, np.float32)
        if real < batch_size:
            pad = batch_size - real
            xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros((pad,), yb.dtype)])
            mask[real:] = 0.0
        yield xb, yb, mask
