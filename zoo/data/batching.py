"""Batch helpers: the iterator position (two integers), padded eval batches.
The training iterator itself is Grain's (zoo.data.pipeline)."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Position:
    """Where the iterator stands: saved in every checkpoint so a resumed run sees the same batches."""

    epoch: int = 0
    index: int = 0  # batches already taken in this epoch


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
            yb = np.concatenate([yb, np.zeros((pad, *yb.shape[1:]), yb.dtype)])  # y may be [N, T] (lm), [N, K]
            mask[real:] = 0.0
        yield xb, yb, mask
