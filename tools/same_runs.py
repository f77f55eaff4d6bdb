"""How far two compare reports' runs are apart: per model, over the (model, seed) runs both reports
hold, the largest relative difference of the final test loss and of the final validation loss (or
the task's main metric), and how many runs have the same test metric to the last digit.

    python tools/same_runs.py runs/compare_mnist1d/report/results.json runs/compare_mnist1d_off/report/results.json

Used to show that a compare trained as populations (`population: auto`) equals the same compare
trained one run at a time (`population: off`) within the equivalence tolerance of docs/population.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MAX_BYTES = 64 * 2**20  # a results.json is a few hundred KiB


def load(path: Path) -> dict:
    if not path.is_file() or path.stat().st_size > MAX_BYTES:
        raise SystemExit(f"same_runs: {path} is not a results.json of at most {MAX_BYTES >> 20} MiB")
    return json.loads(path.read_text())


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def rows(report: dict) -> dict:
    """{(dataset, label, seed): run row} of the report's runs."""
    return {(r["dataset"], r.get("label") or r["config"], r["seed"]): r for r in report["runs"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    a, b = rows(load(args.a)), rows(load(args.b))
    main_metric = next((key for key in ("final_accuracy", "final_r2", "final_bpc") if any(key in r for r in a.values())),
                       "final_loss")
    shared = sorted(set(a) & set(b), key=str)
    if not shared:
        print("same_runs: the two reports share no (dataset, model, seed) run", file=sys.stderr)
        return 2
    print(f"{len(shared)} runs in both ({len(a)} and {len(b)} in all); main metric: {main_metric}\n")
    print("| model | seeds | max rel. diff, final test loss | same test metric | max abs. diff, test metric |")
    print("|---|---|---:|---:|---:|")
    worst = 0.0
    for label in dict.fromkeys((key[0], key[1]) for key in shared):
        keys = [key for key in shared if key[:2] == label]
        losses = [relative(a[k]["final_loss"], b[k]["final_loss"]) for k in keys]
        metrics = [abs(a[k][main_metric] - b[k][main_metric]) for k in keys]
        worst = max(worst, *losses)
        print(f"| {label[1]} | {', '.join(str(k[2]) for k in keys)} | {max(losses):.1e} | "
              f"{sum(m == 0 for m in metrics)}/{len(keys)} | {max(metrics):.4f} |")
    print(f"\nlargest relative difference of a final test loss: {worst:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
