"""Times one training step of every family: the zoo vs plain Flax vs PyTorch eager, side by side.

    python scripts/benchmark.py                      # full run (~4 min on 2 cores), writes benchmarks/
    python scripts/benchmark.py --quick --workloads mlp,lstm

The benchmark itself is benchmarks/bench.py (PyTorch baselines in benchmarks/baselines_torch.py).
"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.argv[0] = str(Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py")
    runpy.run_path(sys.argv[0], run_name="__main__")
