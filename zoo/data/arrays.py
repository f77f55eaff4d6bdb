"""Array-likes for data that is not (all) in memory: memory-mapped arrays, lazily decoded files.

A split (`Dataset.x_train` ...) is either a NumPy array or an array-like with `len`, `shape`,
`dtype`, `ndim` whose indexing by an int, a slice or an index array returns a NumPy batch. The
rest of the code (batching, evaluation, the validation split) takes either.
"""

from __future__ import annotations

import mmap

import numpy as np


class RowView:
    """Rows `rows` of an array-like `base` (all rows when None), read only when indexed; `transform`
    (a function of a NumPy batch) is applied to what is read."""

    def __init__(self, base, rows=None, transform=None):
        self.base, self.transform = base, transform
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.base) if self.rows is None else len(self.rows)

    @property
    def shape(self) -> tuple:
        return (len(self), *self.base.shape[1:])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def decodes(self) -> bool:
        """Whether reading rows decodes files (then worker processes pay off)."""
        return getattr(self.base, "decodes", False)

    @property
    def dtype(self):
        if self.transform is None:
            return self.base.dtype
        return self[:1].dtype if len(self) else np.dtype(np.float32)

    def _base_rows(self, key) -> np.ndarray:
        index = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(key, dtype=np.int64)
        return index if self.rows is None else self.rows[index]

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        rows = self._base_rows(key)
        batch = np.asarray(self.base[np.sort(rows)]) if len(rows) else np.asarray(self.base[:0])
        if isinstance(self.base, np.memmap):
            # The kernel maps pages around each row read (fault-around): let them go, or a run over a
            # split larger than memory grows its resident set to the whole file.
            release(self.base)
        if len(rows) and not np.all(rows[:-1] <= rows[1:]):  # read in file order, give in asked order
            batch = batch[np.argsort(np.argsort(rows, kind="stable"), kind="stable")]
        return self.transform(batch) if self.transform is not None else batch

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out.astype(dtype) if dtype is not None else out


def is_lazy(x) -> bool:
    """True for splits that are read from disk when indexed (memory maps and views)."""
    return isinstance(x, np.memmap) or not isinstance(x, np.ndarray)


def take(x, rows):
    """Rows of a split: a copy for in-memory arrays (as NumPy indexing does), a view otherwise."""
    if not is_lazy(x):
        return x[rows]
    if isinstance(x, RowView) and x.transform is None:
        base_rows = np.arange(len(x.base)) if x.rows is None else x.rows
        return RowView(x.base, base_rows[np.asarray(rows, dtype=np.int64)])
    return RowView(x, rows)


def transformed(x, transform):
    """`x` with `transform` applied to every batch read from it (lazily for array-likes)."""
    if transform is None:
        return x
    if not is_lazy(x):
        return transform(x)
    return RowView(x, None, transform)


def chunks(x, rows: int = 4096):
    """NumPy batches of at most `rows` rows covering all of `x`, read in order. Memory-mapped pages
    already read are let go after each batch, so a pass over a split larger than memory stays small."""
    for start in range(0, len(x), rows):
        yield np.asarray(x[start:start + rows])
        release(x)


def release(x) -> None:
    """Drops the resident pages of the memory map under `x` (they stay in the OS page cache)."""
    while x is not None:
        mapped = getattr(x, "_mmap", None)
        if mapped is not None:
            mapped.madvise(mmap.MADV_DONTNEED)
            return
        x = getattr(x, "base", None)
