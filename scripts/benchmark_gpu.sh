#!/usr/bin/env bash
# The benchmark's families scaled up to fill one large GPU (sized for an H200), in float32 and bfloat16:
# step time, compile time and achieved TFLOP/s of the zoo's jitted train step on one device, against
# the matmul rate measured in the same run, with XLA's FLOP count cross-checked against the lowered
# module's. Under 8 minutes; writes benchmarks/gpu/RESULTS.md + results.json after every workload.
#
#   pip install -e ".[gpu]"                           # once: jax[cuda12] pinned to the tested jax (0.10.2)
#   scripts/benchmark_gpu.sh                          # python3 on PATH, or PYTHON=/path/to/gpu-venv/bin/python
#   PYTHON=/opt/venv/bin/python scripts/benchmark_gpu.sh --workloads mlp,transformer --dtypes bfloat16
#   scripts/benchmark_gpu.sh --smoke --out /tmp/gpu   # tiny workloads on a CPU: checks the script itself
#
# benchmarks/bench_gpu.py imports the zoo of this checkout; that Python needs its dependencies (a venv
# with jax[cuda12], `make gpu`). The default is not the Makefile's .venv: that one holds the CPU jax.
# Nothing is downloaded here.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# A hard stop a little under 8 minutes; the Python side also stops starting workloads after --budget-s,
# and the rows measured before a hard stop are already on disk.
exec timeout "${ZOO_BENCH_TIMEOUT_S:-470}" "$PYTHON" benchmarks/bench_gpu.py "$@"
