"""Restore and evaluate every run directory under a folder, from the run directories alone: the
checkpoint chosen on validation ("best") and the latest, each re-evaluated on the test split and
checked against the accuracy (a regression's R², a language model's bpc: the task's main metric)
recorded when it was saved.

    python scripts/evaluate_runs.py runs/compare_digits/runs

Runs trained on in-memory arrays cannot be re-evaluated from their directory (they are listed as
skipped); a run whose data files changed since training is refused by `zoo.evaluate`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the zoo of this checkout
import zoo  # noqa: E402
from zoo.rundir import find_runs  # noqa: E402
from zoo.tasks import describe  # noqa: E402


def evaluate_all(root: Path) -> list[dict]:
    """One row per run directory under `root`: test accuracy of its best and latest checkpoints, and
    the largest difference from what was recorded at save time."""
    rows = []
    for run_dir in find_runs(root):
        row = {"run": str(run_dir.relative_to(root)) if run_dir != root else run_dir.name}
        try:
            latest = zoo.evaluate(run_dir)
            best = zoo.evaluate(run_dir, best=True) if latest.get("val") else None
        except zoo.ZooError as error:
            rows.append({**row, "skipped": str(error)})
            continue
        metric = describe(latest.get("task")).main().name  # accuracy for classify
        recorded = [(r["test"][metric], (r.get("recorded") or {}).get(f"test_{metric}"))
                    for r in (latest, best) if r]
        row.update({"model": latest["model"], "metric": metric, "latest_step": latest["step"],
                    "latest_test": latest["test"][metric],
                    "best_step": best["step"] if best else None,
                    "best_test": best["test"][metric] if best else None,
                    "max_diff_from_recorded": max(abs(now - then) for now, then in recorded if then is not None)})
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="a folder holding run directories")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = evaluate_all(Path(args.root))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| run | model | latest step | test | best-val step | test | max diff vs recorded |\n|---|---|---|---|---|---|---|")
    for row in rows:
        if "skipped" in row:
            print(f"| {row['run']} | skipped: {row['skipped']} ||||||")
            continue
        best = "-" if row["best_step"] is None else f"{row['best_step']} | {row['best_test']:.4f}"
        print(f"| {row['run']} | {row['model']} | {row['latest_step']} | {row['latest_test']:.4f} | "
              f"{best if row['best_step'] is not None else '- | -'} | {row['max_diff_from_recorded']:.2g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
