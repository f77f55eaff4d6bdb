"""The one module that talks to Orbax: save and restore any pytree plus a JSON document.

It knows nothing of models or train states. What Orbax 0.12 does not guarantee we add here:
the shape, dtype and a checksum of every array, checked on restore; steps offered only when committed;
old steps renamed aside (atomic) before removal; stale temporary directories cleaned; damaged
steps moved aside on request; errors that name the step and the damage instead of TensorStore dumps.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from zoo import distributed
from zoo.errors import CheckpointError, DamagedCheckpointError
from zoo.rundir import COMMITTED

# 3: a checksum of the metadata itself (META_CHECKSUM); 2: per-array checksums computed on the devices;
# 1: CRC32 on the host. Each version is still read.
FORMAT_VERSION = 3
META_CHECKSUM = "meta_checksum"  # the field holding the checksum of the rest of the metadata
TRASH, DAMAGED = "trash", "damaged"  # old steps are renamed into TRASH, then removed
_STATE, _META = "state", "meta"


def describe_arrays(tree, with_checksum: bool = True) -> dict[str, dict]:
    """Shape, dtype and (optionally) the checksum of every array, by its path in the tree.

    The checksums are computed where the arrays live (`checksums`): only one 32-bit number per array
    comes back to the host, not a second full copy of the state before Orbax makes its own."""
    sums = checksums(tree) if with_checksum else None
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {jax.tree_util.keystr(path): {"shape": list(leaf.shape), "dtype": str(np.dtype(leaf.dtype)),
                                         **({"checksum": sums[i]} if with_checksum else {})}
            for i, (path, leaf) in enumerate(leaves)}


# Murmur3's 32-bit finalizer: a bijection on uint32, so a changed word always changes its term.
def _fmix32(h):
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _words(array):
    """The array's bytes as uint32 words (8- and 16-bit types one per element, 64-bit types two)."""
    if jnp.issubdtype(array.dtype, jax.dtypes.prng_key):
        array = jax.random.key_data(array)
    if array.dtype == jnp.bool_:
        return array.astype(jnp.uint32).ravel()
    size = np.dtype(array.dtype).itemsize
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[size]
    return jax.lax.bitcast_convert_type(array, unsigned).astype(jnp.uint32).ravel()


def _checksum(array):
    """Sum over words of fmix32(word ^ index * golden ratio) mod 2**32: position-dependent, exact
    (integer arithmetic) and the same on every platform and device count."""
    words = _words(array)
    index = jnp.arange(words.size, dtype=jnp.uint32)
    return jnp.sum(_fmix32(words ^ (index * jnp.uint32(0x9E3779B9))), dtype=jnp.uint32)


@jax.jit
def _checksums(leaves):
    return [_checksum(leaf) for leaf in leaves]


def checksums(tree) -> list[int]:
    """The checksum of every leaf of `tree`, in `tree_leaves` order, computed on its devices."""
    return [int(value) for value in jax.device_get(_checksums(jax.tree_util.tree_leaves(tree)))]


def meta_checksum(document: dict) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces) of `document` less its META_CHECKSUM field."""
    body = {key: value for key, value in document.items() if key != META_CHECKSUM}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _sealed(document: dict) -> dict:
    """`document` as JSON reads it back (tuples become lists), with its META_CHECKSUM."""
    document = json.loads(json.dumps(document))
    return {**document, META_CHECKSUM: meta_checksum(document)}


def _crc(array) -> int:
    """Format 1 checksums (CRC32 of the bytes on the host): still verified on restore."""
    return zlib.crc32(np.ascontiguousarray(array).tobytes())


class Checkpoints:
    """Keeps the latest `keep` steps and the best `keep_best` by `metric` under `directory`."""

    def __init__(self, directory: str | Path, keep: int = 2, keep_best: int = 1,
                 metric: str = "accuracy", mode: str = "max", async_save: bool = True,
                 read_only: bool = False):
        self.directory = Path(directory).absolute()
        self.metric, self.mode = metric, mode
        if read_only and not self.directory.is_dir():
            raise CheckpointError(f"no checkpoints at '{self.directory}': give a run directory that "
                                  "`zoo train` wrote (it holds checkpoints/)")
        if not read_only and distributed.is_primary():  # process 0 alone cleans; Orbax syncs the others
            self.directory.mkdir(parents=True, exist_ok=True)
            self._clean_stale()
        # Without best_fn Orbax's best_step() silently means "latest" and writes no metrics.
        # A step saved without the metric (no validation split) ranks last, never first.
        missing = -float("inf") if mode == "max" else float("inf")
        best_fn = lambda metrics: float(metrics.get(metric, missing))  # noqa: E731
        preserve = [policies.LatestN(n=keep)]
        if keep_best:
            preserve.append(policies.BestN(get_metric_fn=best_fn, reverse=(mode == "min"), n=keep_best))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(preserve),
            best_fn=best_fn,
            best_mode=mode,
            todelete_subdir=None if read_only else TRASH,
            enable_async_checkpointing=async_save,
            read_only=read_only,
            create=not read_only,
        )
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options,
                                                  item_names=(_STATE, _META))
        except Exception as error:  # noqa: BLE001 - Orbax raises many kinds; users get one line
            raise CheckpointError(f"cannot open checkpoints at '{self.directory}': {_short(error)}") from None

    def _clean_stale(self) -> None:
        """Removes what a killed run left: temporary step directories and renamed-aside old steps."""
        for path in self.directory.iterdir():
            if path.name == TRASH or ".orbax-checkpoint-tmp" in path.name:
                shutil.rmtree(path, ignore_errors=True)

    # Steps -----------------------------------------------------------------------------------

    def steps(self) -> list[int]:
        """Steps that are complete on disk (committed, not half-deleted), oldest first."""
        return [step for step in self.listed_steps() if self.is_complete(step)]

    def listed_steps(self) -> list[int]:
        """Every step directory Orbax lists, complete or not (for recovery), oldest first."""
        return sorted(self._manager.all_steps())

    def _step_dir(self, step: int) -> Path:
        return self.directory / str(step)

    def is_complete(self, step: int) -> bool:
        """Whether `step` is on disk now, committed and not half-deleted."""
        step_dir = self._step_dir(step)
        return all((step_dir / name).is_file() for name in (COMMITTED, f"{_META}/metadata",
                                                             f"{_STATE}/{COMMITTED}"))

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def best_step(self, metric: str | None = None, mode: str | None = None) -> int | None:
        """The complete step with the best `metric` (default: the one retention ranks by), or None
        when no step recorded it. A step whose metadata is damaged or fails its checksum is refused
        (it might be the best); one deleted while this reads (a training run beside) is passed over."""
        metric, mode = metric or self.metric, mode or self.mode
        scored = []
        for step in self.steps():
            try:
                meta = self.read_meta(step)
            except CheckpointError:
                if self.is_complete(step):
                    raise
                continue
            try:
                scored.append((float(meta["metrics"][metric]), step))
            except (KeyError, TypeError, ValueError):
                continue
        if not scored:
            return None
        return (max if mode == "max" else min)(scored)[1]

    def set_aside(self, steps: list[int]) -> Path:
        """Moves damaged or unfinished `steps` into damaged/ (kept for inspection, never offered).
        With several processes, process 0 moves them and every process waits, then rereads."""
        target = self.directory / DAMAGED
        if distributed.is_primary():
            target.mkdir(exist_ok=True)
            for step in steps:
                self._step_dir(step).rename(target / f"{step}-{time.time_ns()}")
        distributed.barrier("checkpoints:set_aside")
        self._manager.reload()
        return target

    # Save ------------------------------------------------------------------------------------

    def save(self, step: int, tree: Any, meta: dict, metrics: dict) -> None:
        """Saves `tree` and `meta` (JSON) as `step`; `metrics` rank it for best-K retention."""
        self.wait()  # one save in flight at a time; an earlier failure is raised here, not lost
        document = _sealed({**meta, "format": FORMAT_VERSION, "step": int(step), "metrics": metrics,
                            "arrays": describe_arrays(tree)})
        try:
            self._manager.save(int(step), metrics=metrics, force=True, args=ocp.args.Composite(**{
                _STATE: ocp.args.StandardSave(tree), _META: ocp.args.JsonSave(document)}))
        except Exception as error:  # noqa: BLE001
            raise CheckpointError(f"saving step {step} in '{self.directory}' failed: "
                                  f"{_short(error)}") from None

    def wait(self) -> None:
        """Waits for the save in flight; raises CheckpointError if it failed (never swallowed)."""
        try:
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as error:  # noqa: BLE001
            raise CheckpointError(f"saving a checkpoint in '{self.directory}' failed: {_short(error)}; "
                                  "the earlier checkpoints are intact") from None
        if distributed.is_primary():  # no deletion is in flight now (Orbax deletes on process 0)
            shutil.rmtree(self.directory / TRASH, ignore_errors=True)

    def close(self) -> None:
        self.wait()
        self._manager.close()

    # Restore ---------------------------------------------------------------------------------

    def _require(self, step: int) -> None:
        if step not in self._manager.all_steps():
            have = ", ".join(map(str, self.steps())) or "none"
            raise CheckpointError(f"no checkpoint for step {step} in '{self.directory}' (steps: {have})")
        if not self.is_complete(step):
            raise DamagedCheckpointError(f"checkpoint step {step} in '{self.directory}' is incomplete "
                                         "(an interrupted write or deletion): use another step")

    def read_meta(self, step: int) -> dict:
        """The JSON document saved with `step`, checked for a readable, supported format."""
        self._require(step)
        path = self._step_dir(step) / _META / "metadata"
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as error:  # ValueError: bad UTF-8 or JSON
            raise DamagedCheckpointError(f"checkpoint step {step} is damaged: '{path}' is not valid JSON "
                                         f"({error}); use another step") from None
        version = document.get("format") if isinstance(document, dict) else None
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise CheckpointError(f"checkpoint step {step} has format {version}, newer than this zoo reads "
                                  f"({FORMAT_VERSION}): upgrade zoo")
        if not isinstance(version, int) or version < 1 or not _is_array_list(document.get("arrays"), version):
            raise DamagedCheckpointError(f"checkpoint step {step} is damaged: '{path}' lacks the format "
                                         "version or the array list zoo writes; use another step")
        if version >= 3 and document.get(META_CHECKSUM) != meta_checksum(document):
            raise DamagedCheckpointError(f"checkpoint step {step} is damaged: its metadata '{path}' does not "
                                         "match its checksum (edited or corrupted since it was saved); use "
                                         "another step")
        return document

    def restore(self, step: int, abstract_tree: Any) -> tuple[Any, dict]:
        """Restores `step` into the structure, dtypes and shardings of `abstract_tree`, verified."""
        meta = self.read_meta(step)
        _check_same_arrays(step, meta["arrays"], describe_arrays(abstract_tree, with_checksum=False))
        try:
            with _quiet_tensorstore():
                restored = self._manager.restore(int(step), args=ocp.args.Composite(**{
                    _STATE: ocp.args.StandardRestore(abstract_tree)}))[_STATE]
        except Exception as error:  # noqa: BLE001 - TensorStore/Orbax dumps become one line
            raise DamagedCheckpointError(f"checkpoint step {step} is damaged: its files in "
                                         f"'{self._step_dir(step)}' cannot be read ({_short(error)}); "
                                         "use another step") from None
        bad = [name for name, actual in _verified_checksums(restored, meta["format"])
               if actual != meta["arrays"][name][_CHECKSUM_FIELD[meta["format"]]]]
        if bad:
            raise DamagedCheckpointError(f"checkpoint step {step} is damaged: checksum mismatch in "
                                         f"{len(bad)} array(s), first {bad[0]}; use another step")
        return restored, meta


@contextlib.contextmanager
def _quiet_tensorstore():
    """File descriptor 2 goes to /dev/null during an Orbax read: on a damaged file TensorStore's
    threads print tracebacks there (besides the error we turn into one line). Restored afterwards,
    so warnings elsewhere still reach the user; ZOO_DEBUG=1 keeps everything."""
    if os.environ.get("ZOO_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_CHECKSUM_FIELD = {1: "crc32", 2: "checksum", 3: "checksum"}


def _verified_checksums(tree, version: int):
    """(path, checksum) of every array of a restored tree, by the method of format `version`."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    if version >= 2:
        values = checksums(tree)
    else:
        values = [_crc(leaf) for leaf in jax.device_get([leaf for _, leaf in leaves])]
    return [(jax.tree_util.keystr(path), value) for (path, _), value in zip(leaves, values)]


def _is_array_list(arrays, version: int) -> bool:
    fields = {"shape", "dtype", _CHECKSUM_FIELD.get(version, "checksum")}
    return isinstance(arrays, dict) and all(isinstance(a, dict) and fields <= set(a) for a in arrays.values())


def _check_same_arrays(step: int, saved: dict, expected: dict) -> None:
    """Raises CheckpointError naming the first array whose path, shape or dtype differs."""
    describe = lambda arrays, name: (f"{arrays[name]['dtype']}{arrays[name]['shape']}"  # noqa: E731
                                     if name in arrays else "missing")
    for name in sorted(set(saved) | set(expected)):
        have, want = describe(saved, name), describe(expected, name)
        if have != want:
            raise CheckpointError(f"checkpoint step {step} holds another model: array {name} is {have} "
                                  f"there but the config builds {want}; evaluate or train it with the "
                                  "config it was trained with, or use another --workdir")


def _short(error: Exception, limit: int = 160) -> str:
    """The first line of an exception without TensorStore's spec dump, cut to `limit` characters."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = re.sub(r"\s*(\[tensorstore_spec|See full TensorStore details).*", "", text)
    if re.match(r"[A-Z_]{4,}: ", text):  # TensorStore nests "CODE: context: ...: cause": keep the cause
        text = ": ".join(text.split(": ")[-3:])
    return text if len(text) <= limit else text[:limit] + "..."
