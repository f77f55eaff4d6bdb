"""`predict(run_dir, inputs)`: one row per example (name, predicted class, probability, top-k)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from zoo import inputs as inputs_lib
from zoo.errors import DataError
from zoo.run import load_run

COLUMNS = ("input", "class", "probability", "top_k")


def predict(run_dir: str | Path, paths: list[str | Path], step: int | str = "latest", top_k: int = 3) -> list[dict]:
    """Predictions of one checkpoint of `run_dir` on every example of `paths` (files or folders)."""
    if top_k < 1:
        raise DataError(f"--top-k {top_k} must be at least 1")
    run = load_run(run_dir, step)
    rows = []
    for path in paths:
        names, x = inputs_lib.read(path, tuple(run.spec.input_shape), run.takes_raw_uint8)
        try:
            probabilities = run.predict(x)
        except DataError as error:
            raise DataError(f"'{path}': {error}") from None
        names_of = run.class_names
        for name, p in zip(names, probabilities):
            order = np.argsort(-p, kind="stable")[:min(top_k, len(p))]
            rows.append({"input": name, "class": names_of[order[0]], "probability": float(p[order[0]]),
                         "top_k": " ".join(f"{names_of[i]}:{p[i]:.4f}" for i in order)})
    return rows


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "probability": f"{row['probability']:.4f}"})
    return out.getvalue()
