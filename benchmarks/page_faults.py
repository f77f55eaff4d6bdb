"""Time per step and minor page faults per step of bench.py's workloads, one process, each step alone.

bench.py sets the host allocator up at import (zoo/host.py); ZOO_HOST_ALLOCATOR=default leaves
glibc's default, so the two are compared by running this twice:

    python benchmarks/page_faults.py --workloads transformer,lstm
    ZOO_HOST_ALLOCATOR=default python benchmarks/page_faults.py --workloads transformer,lstm
    python benchmarks/page_faults.py --torch          # PyTorch eager's steps instead of the zoo's

Each workload: 3 warm-up steps, then 7 rounds of about a second each; the median time per step and
the minor faults (getrusage's ru_minflt) per step over the timed rounds.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (tunes the host allocator unless ZOO_HOST_ALLOCATOR=default)
from zoo import host  # noqa: E402


def measure(run, rounds: int = 7) -> tuple[float, float]:
    run(3)
    start = time.perf_counter()
    run(1)
    steps = max(1, int(1.0 / (time.perf_counter() - start)))
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run(steps)
        times.append((time.perf_counter() - start) / steps * 1e3)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (rounds * steps)
    return statistics.median(times), faults


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(bench.WORKLOADS))
    parser.add_argument("--torch", action="store_true", help="PyTorch eager's step (the bench extra)")
    args = parser.parse_args()
    print(f"host allocator: {host.describe()}; {bench.machine()['cpu']}, {bench.machine()['isa']}")
    for name in args.workloads.split(","):
        workload = bench.WORKLOADS[name]
        x, y = bench.batch(workload)
        if args.torch:  # as bench.py runs it: OMP_WAIT_POLICY=PASSIVE, one thread per core
            if not bench.torch_available():
                print("page_faults: error: --torch needs PyTorch (the bench extra)", file=sys.stderr)
                return 2
            import baselines_torch
            import torch

            torch.set_num_threads(os.cpu_count() or 1)
            run, _ = baselines_torch.torch_runner(name, x, y, bench.LEARNING_RATE)
        else:
            run = bench.zoo_runner(workload, x, y).run
        ms, faults = measure(run)
        print(f"{'torch' if args.torch else 'zoo'} {name:15s} {ms:9.2f} ms/step  {faults:9.0f} minor faults/step",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
