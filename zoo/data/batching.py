"""Batch helpers: the iterator position (two integers), shift augmentation, padded eval batches.
The training iterator itself is Grain's (zoo.data.pipeline)."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Position:
    """Where the iterator stands: saved in every checkpoint so a resumed run sees the same batches."""

    epoch: int = 0
    index: int = 0  # batches already taken in this epoch


def shift_batch(batch: np.ndarray, offsets: np.ndarray, max_shift: int) -> np.ndarray:
    """Shifts example i by offsets[i] - max_shift along each spatial axis (channels last), zero-filling."""
    spatial_axes = range(1, batch.ndim - 1)
    padding = [(0, 0)] + [(max_shift, max_shift)] * len(spatial_axes) + [(0, 0)]
    padded = np.pad(batch, padding)
    out = np.empty_like(batch)
    for i, offset in enumerate(offsets):
        window = tuple(slice(o, o + size) for o, size in zip(offset, batch.shape[1:-1]))
        out[i] = padded[(i, *window)]
    return out


def eval_batches(x: np.ndarray, y: np.ndarray, batch_size: int, process: int = 0, processes: int = 1):
    """Fixed-size batches over all of (x, y); the last is padded, with a 0/1 mask marking real rows.
    With several processes each reads only its block of rows of every batch (`batch_size // processes`)."""
    local = batch_size // processes
    for start in range(0, len(x), batch_size):
        first = min(start + process * local, len(x))
        last = min(first + local, start + batch_size, len(x))
        xb, yb = x[first:last], y[first:last]
        real = len(xb)
        mask = np.ones(local, np.float32)
        if real < local:
            pad = local - real
            xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros((pad,), yb.dtype)])
            mask[real:] = 0.0
        yield xb, yb, mask
