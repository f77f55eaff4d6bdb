"""The input pipeline, on Grain: one Grain element per block of global batches.

`MapDataset.range` over block numbers, mapped by two Grain transforms: `GatherBatch` (for each
batch number k = epoch * steps_per_epoch + index of the block, the rows in the order
`default_rng([seed, epoch])` fixes, only this JAX process's share of them, read or decoded from the
split). Augmentation happens on the device, in the train step (zoo/training/augment.py). With workers,
Grain's `mp_prefetch` runs it in worker processes, one batch per element (decoding files there); without, the loop indexes the MapDataset
directly, 16 batches per element: Grain's fixed cost per element (~25-60 us here) would otherwise
add 15% to a digits MLP step (benchmarks/DATA.md).

The iterator's state is the next k, saved in every checkpoint as `Position(epoch, index)`: a
resumed run starts at that k and sees the same batches as an uninterrupted one, whatever the block
size or the number of workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal

import grain
import numpy as np

from zoo.data.batching import Position

_HORIZON = 1 << 40  # batches in the (endless) dataset: epochs repeat with fresh orders


@dataclasses.dataclass
class Rows:
    """This process's rows of a global batch of `batch_size`: process `index` of `count` takes the
    `index`-th contiguous block, so the global batch is the same whatever the number of processes."""

    index: int = 0
    count: int = 1

    @classmethod
    def of_jax_processes(cls) -> "Rows":
        import jax

        return cls(jax.process_index(), jax.process_count())

    def share(self, batch_size: int) -> slice:
        local = batch_size // self.count
        return slice(self.index * local, (self.index + 1) * local)


class GatherBatch(grain.transforms.Map):
    """Block number b -> (first k, x, y) of `per_element` batches k = b * per_element ...: this
    process's rows of each global batch, stacked on a leading axis."""

    def __init__(self, x, y, batch_size: int, seed: int, rows: Rows, per_element: int = 1):
        self.x, self.y, self.batch_size, self.seed, self.rows = x, y, batch_size, seed, rows
        self.per_element = per_element
        self.steps_per_epoch = len(x) // batch_size
        self._order_epoch, self._order = -1, None

    def order(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(len(self.x))
            self._order_epoch = epoch
        return self._order

    def rows_of(self, k: int) -> np.ndarray:
        epoch, index = divmod(k, self.steps_per_epoch)
        batch = self.order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]
        return batch[self.rows.share(self.batch_size)]

    def map(self, block: int):
        first = int(block) * self.per_element
        take = np.stack([self.rows_of(k) for k in range(first, first + self.per_element)])
        flat = take.reshape(-1)
        x, y = self.x[flat], self.y[flat]
        return first, x.reshape(*take.shape, *x.shape[1:]), y.reshape(*take.shape, *y.shape[1:])

    def __getstate__(self):  # workers rebuild the order cache themselves
        return {**self.__dict__, "_order_epoch": -1, "_order": None}


def default_workers(x) -> int:
    """Decoding processes for a split: none for arrays in memory or memory-mapped (reading them is
    cheaper than handing batches between processes), up to 4 (one core left) for decoded files."""
    if not getattr(x, "decodes", False):
        return 0
    return max(1, min(4, (os.cpu_count() or 1) - 1))


def batch_dataset(x, y, batch_size: int, seed: int, rows: Rows | None = None,
                  per_element: int = 1) -> grain.MapDataset:
    """The endless MapDataset of blocks of `per_element` global batches (this process's rows of each)."""
    rows = rows or Rows()
    if batch_size % rows.count:
        raise ValueError(f"batch size {batch_size} does not split over {rows.count} processes")
    return grain.MapDataset.range(0, _HORIZON).map(GatherBatch(x, y, batch_size, seed, rows, per_element))


def _absl_flags_defaults() -> None:
    """Grain's worker processes read absl flags; outside an absl app nobody parses them. Take their
    defaults (no command line is read: the CLI's arguments are argparse's alone)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _ignore_interrupts(_index: int, _count: int) -> None:
    """Run first in each Grain worker process. Ctrl-C reaches every process of the terminal's process
    group, and only the main process acts on it (it saves a checkpoint and stops); a worker taking it
    would die printing a KeyboardInterrupt traceback, and the main process would fail on the lost worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _interrupts_held():
    """SIGINT blocked in this thread, and so in the threads Grain starts here and in the worker
    processes they spawn (a signal mask survives fork and exec): a Ctrl-C while a worker still imports
    (seconds, before `_ignore_interrupts` runs) cannot kill it. Nothing is lost for the main process:
    another of its threads takes the signal, or it arrives when the mask is restored. (Python's
    resource tracker is started the same way, and then unblocks SIGINT in the thread that started
    it: it is started first, here, before the mask is set.)"""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _out_of_shared_memory(element):
    """A worker's element copied out of shared memory. Its arrays are views of shared memory blocks,
    unlinked by a thread of Grain's when they are freed; one still held at interpreter exit (the last
    block read) is never unlinked, and Python's resource tracker then warns of "leaked shared_memory
    objects". A copy lets each block go at once (a memcpy per batch, small beside decoding it)."""
    first, xs, ys = element
    return first, np.array(xs), np.array(ys)


class BatchIterator:
    """Shuffled, fixed-size training batches (the last partial batch of an epoch is dropped), read
    through Grain. `position` says where it stands; `workers` > 0 decodes in that many processes."""

    IN_PROCESS_BLOCK = 16  # batches per Grain element without workers

    def __init__(self, x, y, batch_size: int, seed: int, position: Position | None = None,
                 workers: int = 0, rows: Rows | None = None):
        if not 0 < batch_size <= len(x):
            raise ValueError(f"batch size {batch_size} must be between 1 and the {len(x)} examples")
        self.batch_size, self.seed, self.workers = batch_size, seed, workers
        self.steps_per_epoch = len(x) // batch_size
        self.position = dataclasses.replace(position) if position else Position()
        self.per_element = 1 if workers else self.IN_PROCESS_BLOCK
        self.dataset = batch_dataset(x, y, batch_size, seed, rows, self.per_element)
        self._stream = None  # the worker-backed iterator, started at the first batch asked for
        self._block = None  # (first k, xs, ys) of the element last read

    def _next_k(self) -> int:
        return self.position.epoch * self.steps_per_epoch + self.position.index

    def __iter__(self):
        return self

    def _element(self, k: int):
        if self.workers:
            if self._stream is None:
                _absl_flags_defaults()
                options = grain.MultiprocessingOptions(num_workers=self.workers, per_worker_buffer_size=2)
                with _interrupts_held():  # the workers are spawned by the first element asked for
                    self._stream = iter(self.dataset[k:].to_iter_dataset().mp_prefetch(
                        options, worker_init_fn=_ignore_interrupts))
                    return _out_of_shared_memory(next(self._stream))
            return _out_of_shared_memory(next(self._stream))
        return self.dataset[k // self.per_element]

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        k = self._next_k()
        if self._block is None or not 0 <= k - self._block[0] < len(self._block[1]):
            self._block = self._element(k)
        first, xs, ys = self._block
        x, y = xs[k - first], ys[k - first]
        k += 1
        self.position = Position(*divmod(k, self.steps_per_epoch))
        return x, y

    def take(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """`count` batches stacked on a leading axis (for several steps in one call)."""
        batches = [next(self) for _ in range(count)]
        return np.stack([b[0] for b in batches]), np.stack([b[1] for b in batches])

    def close(self) -> None:
        """Stops the worker processes (if any)."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
