"""`predict(target, inputs)`: one row per example from a run directory's checkpoint or from a `.zoo`
export (which needs only jax: no zoo models, data or training modules are imported for it). A
classification's row: name, predicted class, probability, top-k; a regression's: name and one value
per target, in the targets' original units."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from zoo.inference import inputs as inputs_lib
from zoo.errors import CheckpointError, DataError, ZooError

COLUMNS = ("input", "class", "probability", "top_k")


def predict(target: str | Path, paths: list[str | Path], step: int | str = "latest", top_k: int = 3,
            note=None, weights: str | None = None) -> list[dict]:
    """Predictions on every example of `paths` (files or folders) by one checkpoint of the run
    directory `target`, or by the export file `target` (then `step` does not apply). A run's label
    column in a CSV given (its training file) is dropped, and `note` (a function of one line) told.
    `weights`: a run's moving average ('ema', the default where it keeps one) or its 'raw' weights."""
    if top_k < 1:
        raise DataError(f"--top-k {top_k} must be at least 1")
    if not Path(target).exists():
        raise CheckpointError(f"run directory or export file '{target}' does not exist: give a run directory "
                              "(e.g. runs/NAME) or a .zoo file `zoo export` wrote")
    label, target_names = None, None  # an export file records no label column
    if Path(target).is_dir():
        from zoo.inference.loaded import load_run

        run = load_run(target, step, weights=weights)
        run.check_predicts()
        # images decode to uint8 pixels wherever the run has an input range (`conform` converts them)
        shape, raw_uint8, class_names = tuple(run.spec.input_shape), run.takes is not None, run.class_names
        outputs_of, label, target_names = run.predict, run.config.data.label, run.target_names
    else:
        if weights is not None:
            raise DataError(f"--weights chooses among a run's weights; '{target}' is an export, which holds the "
                            "weights it was exported with (`zoo export --weights`)")
        from zoo.interop import artifact

        header, call = artifact.load(target)
        shape, raw_uint8 = tuple(header["input_shape"]), artifact.takes(header) is not None
        class_names = header.get("class_names")
        if header.get("outputs") == "values":
            target_names = (header.get("targets") or {}).get("names")

        def outputs_of(x):
            return np.asarray(call(artifact.check_inputs(header, x, "the input")))
    rows = []
    for path in paths:
        names, x = inputs_lib.read(path, shape, raw_uint8, label, note)
        try:
            outputs = np.asarray(outputs_of(x), np.float64)
        except ZooError as error:
            raise type(error)(f"'{path}': {error}") from None
        rows += (_value_rows(names, outputs, target_names) if target_names is not None
                 else _class_rows(names, outputs, class_names, top_k))
    return rows


def _class_rows(names: list[str], probabilities: np.ndarray, class_names: list[str], top_k: int) -> list[dict]:
    rows = []
    for name, p in zip(names, probabilities):
        order = np.argsort(-p, kind="stable")[:min(top_k, len(p))]
        rows.append({"input": name, "class": class_names[order[0]], "probability": float(p[order[0]]),
                     "top_k": " ".join(f"{class_names[i]}:{p[i]:.4f}" for i in order),
                     "probabilities": p.tolist()})
    return rows


def _value_rows(names: list[str], values: np.ndarray, target_names: list[str]) -> list[dict]:
    """A regression's rows: the input's name, then each target's predicted value (original units)."""
    return [{"input": name, **{target: float(v) for target, v in zip(target_names, row)}}
            for name, row in zip(names, values)]


def to_csv(rows: list[dict]) -> str:
    """CSV of `predict`'s rows: input, class, probability, top_k; or a regression's input and targets."""
    out = io.StringIO()
    regression = bool(rows) and "class" not in rows[0]
    columns = list(rows[0]) if regression else COLUMNS
    writer = csv.DictWriter(out, columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row if regression else {**row, "probability": f"{row['probability']:.4f}"})
    return out.getvalue()
