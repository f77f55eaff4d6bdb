#!/usr/bin/env python
"""Compare models on one dataset: `python scripts/compare.py CONFIG [--workdir DIR] [--set KEY=VALUE]`.

    python scripts/compare.py configs/compare/digits.yaml --workdir runs/compare_digits

Same as `zoo compare`: every (model, seed) is trained (finished runs are reused), then
DIR/report/ gets report.md, results.csv, results.json, curves.png and tradeoff.png.
"""

import sys

from zoo.cli import run

if __name__ == "__main__":
    sys.argv[1:1] = ["compare"]
    run()
