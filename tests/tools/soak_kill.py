"""Kill `zoo train` with SIGKILL at pseudo-random moments, rerun it, and check that nothing is lost.

    python tests/tools/soak_kill.py --trials 30 [--seed 0] [--chain 5] [--workdir DIR] [--processes 2]

Each trial kills a tiny training run at a moment drawn from the seed (see tests/tools/soak.py). Prints one
summary line. With `--processes 2` every run is two processes of one cluster on 127.0.0.1 (gloo on
CPU), all killed at once, and the uninterrupted reference is a 2-process run too.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the zoo of this checkout, whatever is installed
sys.path.insert(0, str(Path(__file__).resolve().parent))  # soak.py beside this file
from soak import CONFIG, chain, draw_moment, final_state, judge, max_abs_difference, train_until, write_config  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30, help="kills in all")
    parser.add_argument("--chain", type=int, default=5, help="kills per run before it is finished")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="where the runs go (default: a temporary directory)")
    parser.add_argument("--processes", type=int, default=1, help="processes per run (jax.distributed, 127.0.0.1)")
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    logging.getLogger("absl").setLevel(logging.ERROR)  # Orbax's notes on read-only managers
    root = Path(args.workdir or tempfile.mkdtemp(prefix="soak_kill_")).absolute()
    root.mkdir(parents=True, exist_ok=True)
    config_path = write_config(root / "soak.yaml")
    rng = random.Random(args.seed)
    reference = train_until(config_path, root / "reference", None, processes=args.processes)
    if reference["returncode"] != 0:
        print(reference["stderr"], file=sys.stderr)
        return 1
    expected = final_state(root / "reference")
    totals = {"kills": 0, "resumed": 0, "corrupted": 0, "lost_beyond": 0, "left_tmp": 0, "left_trash": 0,
              "redone": []}
    equal = chains = 0
    while totals["kills"] < args.trials:
        moments = [draw_moment(rng) for _ in range(min(args.chain, args.trials - totals["kills"]))]
        run_dir = root / f"chain{chains}"
        verdict = judge(chain(config_path, run_dir, moments, processes=args.processes))
        for key in totals:
            totals[key] += verdict[key]
        difference = max_abs_difference(final_state(run_dir), expected)
        equal += difference == 0.0
        chains += 1
        print(f"chain {chains}: {verdict['kills']} kills at {[m[0] for m in moments]}, resumed "
              f"{verdict['resumed']}, max |difference| from uninterrupted {difference}", file=sys.stderr)
    redone = totals["redone"] or [0]
    print(f"soak_kill ({args.processes} process{'es' if args.processes > 1 else ''}): trials {totals['kills']}, resumed {totals['resumed']}, "
          f"corrupted {totals['corrupted']}, "
          f"lost steps beyond the last checkpoint {totals['lost_beyond']} (steps redone after a kill: "
          f"mean {sum(redone) / len(redone):.1f}, max {max(redone)}; checkpoint every "
          f"{CONFIG['checkpoint']['every']}; {totals['left_tmp']} kills left a half-written step, "
          f"{totals['left_trash']} an old step in trash/); final state bit-identical in {equal}/{chains} runs")
    ok = totals["resumed"] == totals["kills"] and not totals["corrupted"] and not totals["lost_beyond"]
    return 0 if ok and equal == chains else 1


if __name__ == "__main__":
    sys.exit(main())
