"""`predict(target, inputs)`: one row per example (name, predicted class, probability, top-k) from a
run directory's checkpoint or from a `.zoo` export (which needs only jax: no zoo models, data or
training modules are imported for it)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from zoo.inference import inputs as inputs_lib
from zoo.errors import CheckpointError, DataError, ZooError

COLUMNS = ("input", "class", "probability", "top_k")


def predict(target: str | Path, paths: list[str | Path], step: int | str = "latest", top_k: int = 3,
            note=None) -> list[dict]:
    """Predictions on every example of `paths` (files or folders) by one checkpoint of the run
    directory `target`, or by the export file `target` (then `step` does not apply). A run's label
    column in a CSV given (its training file) is dropped, and `note` (a function of one line) told."""
    if top_k < 1:
        raise DataError(f"--top-k {top_k} must be at least 1")
    if not Path(target).exists():
        raise CheckpointError(f"run directory or export file '{target}' does not exist: give a run directory "
                              "(e.g. runs/NAME) or a .zoo file `zoo export` wrote")
    label = None  # an export file records no label column
    if Path(target).is_dir():
        from zoo.inference.loaded import load_run

        run = load_run(target, step)
        # images decode to uint8 pixels wherever the run has an input range (`conform` converts them)
        shape, raw_uint8, class_names = tuple(run.spec.input_shape), run.takes is not None, run.class_names
        probabilities_of, label = run.predict, run.config.data.label
    else:
        from zoo.interop import artifact

        header, call = artifact.load(target)
        shape, raw_uint8, class_names = tuple(header["input_shape"]), artifact.takes(header) is not None, \
            header["class_names"]

        def probabilities_of(x):
            return np.asarray(call(artifact.check_inputs(header, x, "the input")))
    rows = []
    for path in paths:
        names, x = inputs_lib.read(path, shape, raw_uint8, label, note)
        try:
            probabilities = np.asarray(probabilities_of(x), np.float64)
        except ZooError as error:
            raise type(error)(f"'{path}': {error}") from None
        for name, p in zip(names, probabilities):
            order = np.argsort(-p, kind="stable")[:min(top_k, len(p))]
            rows.append({"input": name, "class": class_names[order[0]], "probability": float(p[order[0]]),
                         "top_k": " ".join(f"{class_names[i]}:{p[i]:.4f}" for i in order),
                         "probabilities": p.tolist()})
    return rows


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "probability": f"{row['probability']:.4f}"})
    return out.getvalue()
