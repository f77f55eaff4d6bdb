"""A learning-rate scan on the public Python API: one run per rate, the rate chosen on the
validation split alone, and the test accuracy reported for that choice only.

    python scripts/lr_scan.py --config configs/digits/mlp.yaml --rates 3e-4,1e-3,3e-3 --workdir runs/lr_scan

Each rate is an ordinary run directory (`<workdir>/lr=<rate>`): rerunning reuses finished ones,
and `zoo eval` / `zoo.load_run` restore any of them afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the zoo of this checkout
import zoo  # noqa: E402
from zoo.config import apply_overrides, from_dict, load_inherited  # noqa: E402


def scan(config_path: str, rates: list[float], workdir: Path, steps: int | None = None) -> list[dict]:
    """One run per learning rate; rows of (rate, validation accuracy, test accuracy, run_dir)."""
    rows = []
    for rate in rates:
        overrides = [f"optimizer.learning_rate={rate}"] + ([f"train.steps={steps}"] if steps else [])
        config = from_dict(apply_overrides(load_inherited(config_path), overrides))
        result = zoo.fit(config, workdir / f"lr={rate:g}")
        final = result["final"]
        rows.append({"learning_rate": rate, "val_accuracy": final.get("val_accuracy"),
                     "test_accuracy": final["test_accuracy"], "run_dir": result["run_dir"]})
    return rows


def choose(rows: list[dict]) -> dict:
    """The row with the highest validation accuracy (ties: the smaller rate). Test plays no part."""
    if any(row["val_accuracy"] is None for row in rows):
        raise SystemExit("the config has no validation split (data.validation: 0): a scan cannot choose fairly")
    return max(rows, key=lambda row: (row["val_accuracy"], -row["learning_rate"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/digits/mlp.yaml")
    parser.add_argument("--rates", default="3e-4,1e-3,3e-3", help="comma-separated learning rates")
    parser.add_argument("--steps", type=int, help="override train.steps (a quick scan)")
    parser.add_argument("--workdir", default="runs/lr_scan")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rates = [float(rate) for rate in args.rates.split(",") if rate.strip()]
    rows = scan(args.config, rates, Path(args.workdir), args.steps)
    chosen = choose(rows)
    if args.json:
        print(json.dumps({"rows": rows, "chosen": chosen}, indent=2))
        return 0
    print("| learning rate | val accuracy | test accuracy |\n|---|---|---|")
    for row in rows:
        mark = " (chosen on validation)" if row is chosen else ""
        print(f"| {row['learning_rate']:g}{mark} | {row['val_accuracy']:.4f} | {row['test_accuracy']:.4f} |")
    print(f"\nchosen: {chosen['learning_rate']:g}; its test accuracy {chosen['test_accuracy']:.4f} "
          f"({chosen['run_dir']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
