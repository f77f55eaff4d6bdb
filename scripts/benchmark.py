"""Times one training step of every family: the zoo vs plain Flax vs PyTorch eager, side by side.

    python scripts/benchmark.py                      # full run (~4 min on 2 cores), writes benchmarks/
    python scripts/benchmark.py --quick --workloads mlp,lstm
"""

import sys

from zoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
