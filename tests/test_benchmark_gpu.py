"""scripts/benchmark_gpu.sh --smoke checks the GPU benchmark's code path on a CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_benchmark_smoke_writes_its_rows_on_one_device_with_a_flop_cross_check(tmp_path, cli_env):
    env = {**cli_env(), "PYTHON": sys.executable}
    done = subprocess.run([str(REPO / "scripts" / "benchmark_gpu.sh"), "--smoke", "--workloads", "mlp",
                           "--dtypes", "float32", "--out", str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["complete"] and report["devices_used"] == 1
    (row,) = report["results"]
    assert row["step_ms"] > 0 and row["flops_compiled_over_lowered"] == pytest.approx(1, abs=0.5)
    assert "devices used: 1 of" in (tmp_path / "RESULTS.md").read_text()
