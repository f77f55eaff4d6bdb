"""Two committed compare reports of the same dataset and seeds, model by model: the change in mean
final test accuracy and the p-value of a paired t-test by seed (zoo.comparison.report.paired_t_test).

    python scripts/paired_reports.py results/mnist1d results/mnist1d_tuned
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the zoo of this checkout
from zoo.comparison.report import mean_ci, paired_t_test  # noqa: E402


def per_seed(report_dir: str) -> dict[str, dict[int, float]]:
    runs = json.loads((Path(report_dir) / "results.json").read_text())["runs"]
    out: dict[str, dict[int, float]] = {}
    for run in runs:
        out.setdefault(run["label"], {})[run["seed"]] = run["final_accuracy"]
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python scripts/paired_reports.py BEFORE_REPORT_DIR AFTER_REPORT_DIR", file=sys.stderr)
        return 2
    before, after = per_seed(argv[0]), per_seed(argv[1])
    print(f"| model | {argv[0]} | {argv[1]} | change (paired t, by seed) |")
    print("|---|---:|---:|---:|")
    for label in after:
        seeds = sorted(set(before.get(label, {})) & set(after[label]))
        if not seeds:
            continue
        a, b = [before[label][s] for s in seeds], [after[label][s] for s in seeds]
        (ma, sa, _), (mb, sb, _) = mean_ci(a), mean_ci(b)
        print(f"| {label} | {ma:.4f} ± {sa:.4f} | {mb:.4f} ± {sb:.4f} | "
              f"{mb - ma:+.4f}, p = {paired_t_test(b, a):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
