"""The one module that talks to Orbax: save and restore any pytree plus a JSON document.

It knows nothing of models or train states. What Orbax 0.12 does not guarantee we add here:
a CRC32 per array verified on restore, steps offered only when complete, atomic deletion of old
steps (renamed aside, then removed), stale temporary directories cleaned, errors that name the
step and the damage instead of TensorStore dumps.
"""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from zoo.errors import CheckpointError

FORMAT_VERSION = 1
_TRASH = "trash"  # old steps are renamed here (atomic), then removed
_STATE, _META = "state", "meta"


def _key_name(path) -> str:
    return jax.tree_util.keystr(path)


def checksums(tree) -> dict[str, int]:
    """CRC32 of every array's bytes, keyed by its path in the tree."""
    host = jax.device_get(tree)
    return {_key_name(path): zlib.crc32(np.ascontiguousarray(leaf).tobytes())
            for path, leaf in jax.tree_util.tree_leaves_with_path(host)}


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
        if not read_only:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._clean_stale()
        # Without best_fn Orbax's best_step() silently means "latest" and writes no metrics.
        best_fn = lambda metrics: float(metrics[metric])  # noqa: E731
        preserve = [policies.LatestN(n=keep)]
        if keep_best:
            preserve.append(policies.BestN(get_metric_fn=best_fn, reverse=(mode == "min"), n=keep_best))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(preserve),
            best_fn=best_fn,
            best_mode=mode,
            todelete_subdir=_TRASH,
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
            if path.name == _TRASH or ".orbax-checkpoint-tmp" in path.name:
                shutil.rmtree(path, ignore_errors=True)

    # Steps -----------------------------------------------------------------------------------

    def steps(self) -> list[int]:
        """Steps that are complete on disk (committed, not half-deleted), oldest first."""
        return [step for step in sorted(self._manager.all_steps()) if self._is_complete(step)]

    def _step_dir(self, step: int) -> Path:
        return self.directory / str(step)

    def _is_complete(self, step: int) -> bool:
        step_dir = self._step_dir(step)
        return (step_dir / _META / "metadata").is_file() and (step_dir / _STATE).is_dir()

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        scored = []
        for step in self.steps():
            try:
                scored.append((float(self.read_meta(step)["metrics"][self.metric]), step))
            except (CheckpointError, KeyError, TypeError, ValueError):
                continue
        if not scored:
            return None
        return (max if self.mode == "max" else min)(scored, key=lambda item: (item[0], item[1]))[1]

    # Save ------------------------------------------------------------------------------------

    def save(self, step: int, tree: Any, meta: dict, metrics: dict) -> None:
        """Saves `tree` and `meta` (JSON) as `step`; `metrics` rank it for best-K retention."""
        document = {**meta, "format": FORMAT_VERSION, "step": int(step), "metrics": metrics,
                    "checksums": checksums(tree)}
        self.check_errors()
        self._manager.save(int(step), metrics=metrics, force=True, args=ocp.args.Composite(**{
            _STATE: ocp.args.StandardSave(tree), _META: ocp.args.JsonSave(document)}))
        shutil.rmtree(self.directory / _TRASH, ignore_errors=True)

    def check_errors(self) -> None:
        """Raises CheckpointError if an earlier asynchronous save failed (never swallowed)."""
        try:
            self._manager.check_for_errors()
        except Exception as error:  # noqa: BLE001
            raise CheckpointError(f"saving a checkpoint in '{self.directory}' failed: {_short(error)}") from None

    def wait(self) -> None:
        try:
            self._manager.wait_until_finished()
        except Exception as error:  # noqa: BLE001
            raise CheckpointError(f"saving a checkpoint in '{self.directory}' failed: {_short(error)}") from None
        shutil.rmtree(self.directory / _TRASH, ignore_errors=True)

    def close(self) -> None:
        self.wait()
        self._manager.close()

    # Restore ---------------------------------------------------------------------------------

    def _require(self, step: int) -> None:
        if step not in self._manager.all_steps():
            have = ", ".join(map(str, self.steps())) or "none"
            raise CheckpointError(f"no checkpoint for step {step} in '{self.directory}' (steps: {have})")
        if not self._is_complete(step):
            raise CheckpointError(f"checkpoint step {step} in '{self.directory}' is incomplete "
                                  "(an interrupted write or deletion): use another step")

    def read_meta(self, step: int) -> dict:
        """The JSON document saved with `step`, checked for a readable, supported format."""
        self._require(step)
        path = self._step_dir(step) / _META / "metadata"
        try:
            document = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"checkpoint step {step}: '{path}' is not valid JSON ({error}); "
                                  "the checkpoint is damaged, use another step") from None
        if not isinstance(document, dict) or not isinstance(document.get("format"), int):
            raise CheckpointError(f"checkpoint step {step}: '{path}' lacks a format version; "
                                  "it was not written by zoo")
        if document["format"] > FORMAT_VERSION:
            raise CheckpointError(f"checkpoint step {step} has format {document['format']}, newer than "
                                  f"this zoo reads ({FORMAT_VERSION}): upgrade zoo")
        return document

    def restore(self, step: int, abstract_tree: Any) -> tuple[Any, dict]:
        """Restores `step` into the structure, dtypes and shardings of `abstract_tree`, verified."""
        meta = self.read_meta(step)
        try:
            restored = self._manager.restore(int(step), args=ocp.args.Composite(**{
                _STATE: ocp.args.StandardRestore(abstract_tree)}))[_STATE]
        except Exception as error:  # noqa: BLE001 - TensorStore/Orbax dumps become one line
            raise CheckpointError(f"checkpoint step {step} in '{self.directory}' cannot be restored: "
                                  f"{_short(error)}") from None
        self.verify(step, restored, meta)
        return restored, meta

    def verify(self, step: int, tree: Any, meta: dict) -> None:
        expected = meta.get("checksums", {})
        actual = checksums(tree)
        if set(expected) != set(actual):
            raise CheckpointError(f"checkpoint step {step} holds different arrays than expected: "
                                  "it belongs to another model or config")
        bad = [name for name, crc in actual.items() if expected[name] != crc]
        if bad:
            raise CheckpointError(f"checkpoint step {step} is corrupted: checksum mismatch in "
                                  f"{len(bad)} array(s), first {bad[0]}; use another step")


def _short(error: Exception, limit: int = 200) -> str:
    """The first line of an exception, cut to `limit` characters (TensorStore messages run long)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."
