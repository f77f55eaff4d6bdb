#!/usr/bin/env bash
# The benchmark's families scaled up to fill one large GPU (sized for an H200), in float32 and bfloat16:
# step time, compile time and achieved TFLOP/s of the zoo's jitted train step, against the matmul rate
# measured in the same run. One invocation, under 8 minutes; writes benchmarks/gpu/RESULTS.md + results.json.
#
#   scripts/benchmark_gpu.sh                          # needs a Python whose jax sees a CUDA GPU
#   PYTHON=/opt/venv/bin/python scripts/benchmark_gpu.sh --workloads mlp,transformer --dtypes bfloat16
#   scripts/benchmark_gpu.sh --smoke --out /tmp/gpu   # tiny workloads on a CPU: checks the script itself
#
# benchmarks/bench_gpu.py imports the zoo of this checkout; that Python needs its dependencies (a venv with jax[cuda12]); nothing is
# downloaded here.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
# A hard stop a little under 8 minutes; the Python side also stops starting workloads after --budget-s.
exec timeout 470 "$PYTHON" benchmarks/bench_gpu.py "$@"
