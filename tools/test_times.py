"""Per-test times of two pytest runs side by side: which tests a change slowed, and by how much.

Each run writes a JUnit XML file (pytest's `--junitxml`, which records every test's call time):

    git worktree add --detach /tmp/before <old-commit>
    (cd /tmp/before && python -m pytest -q tests/... --junitxml=/tmp/before.xml)
    python -m pytest -q tests/... --junitxml=/tmp/after.xml
    python tools/test_times.py /tmp/before.xml /tmp/after.xml --min-seconds 1

Prints the tests present in both, slowest first, with after/before, the totals, and the tests over
`--threshold` (default 1.10) whose before time is at least `--min-seconds` (shorter ones are mostly
timer and scheduling noise on a shared machine).
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ElementTree


def times(path: str) -> dict[str, float]:
    """test id ('file::name[params]') -> seconds, for the tests that passed."""
    out = {}
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        if any(child.tag in ("failure", "error", "skipped") for child in case):
            continue
        module = case.get("classname", "").replace(".", "/")
        out[f"{module}.py::{case.get('name')}"] = float(case.get("time", 0.0))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--threshold", type=float, default=1.10)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    before, after = times(args.before), times(args.after)
    common = sorted(set(before) & set(after), key=lambda t: -before[t])
    print(f"{len(common)} tests in both runs ({len(before)} before, {len(after)} after)")
    print(f"total: before {sum(before[t] for t in common):.1f} s, after {sum(after[t] for t in common):.1f} s")
    print(f"\n{'before s':>9} {'after s':>9} {'ratio':>6}  test (the {args.top} slowest before)")
    for test in common[:args.top]:
        print(f"{before[test]:9.2f} {after[test]:9.2f} {after[test] / max(before[test], 1e-9):6.2f}  {test}")
    slower = [t for t in common if before[t] >= args.min_seconds and after[t] > args.threshold * before[t]]
    print(f"\n{len(slower)} of {sum(before[t] >= args.min_seconds for t in common)} tests of at least "
          f"{args.min_seconds} s before are over {args.threshold:.2f}x:")
    for test in sorted(slower, key=lambda t: -after[t] / before[t]):
        print(f"{before[test]:9.2f} {after[test]:9.2f} {after[test] / before[test]:6.2f}  {test}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
