"""Before/after timings of the CPU path touched by the host-stall work (issue 14): ms per training
step (fit, with its prefetch), one evaluation of the digits test split, one checkpoint save (sync).

Each checkout is measured in its own subprocess (it imports that checkout's zoo), alternating
before/after for --rounds rounds on this noisy shared machine; medians and after/before ratios.

    python benchmarks/host_stalls.py --before /work/main --after . --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

MEASURE = r'''
import json, sys, tempfile, time, statistics
import jax, numpy as np
from zoo.config import from_dict
from zoo.training import loop, step as step_lib
from zoo.training import setup as setup_lib
from zoo import checkpoint as ckpt
raw = {"name": "bench", "seed": 0, "data": {"name": "digits", "batch_size": 64, "eval_batch_size": 64},
       "model": {"name": sys.argv[1]}, "optimizer": {"name": "adam"},
       "train": {"steps": 200, "log_every": 100}, "checkpoint": {"every": 1000}}
config = from_dict(raw)
with tempfile.TemporaryDirectory() as tmp:
    result = loop.fit(config, tmp + "/run")
    run = setup_lib.build_setup(config)
    state = run.init_state()
    eval_step = step_lib.jit_eval_step(run.model, run.spec.num_classes, run.mesh)
    x, y = run.dataset.x_test, run.dataset.y_test
    evals = []
    for i in range(6):
        start = time.perf_counter()
        step_lib.evaluate_arrays(eval_step, run.mesh, state.params, state.model_state, x, y, 64)
        evals.append(time.perf_counter() - start)
    checkpoints = ckpt.Checkpoints(tmp + "/ckpt", keep=2, keep_best=0, async_save=False)
    metrics = {k: 0.5 for k in ("accuracy", "loss", "val_accuracy", "val_loss", "test_accuracy", "test_loss")}
    saves = []
    for i in range(6):
        start = time.perf_counter()
        checkpoints.save(i + 1, state, {"position": {"epoch": 0, "index": 0}}, metrics)
        checkpoints.wait()
        saves.append(time.perf_counter() - start)
    checkpoints.close()
print(json.dumps({"ms_per_step": result["ms_per_step"], "eval_ms": 1e3 * statistics.median(evals[1:]),
                  "save_ms": 1e3 * statistics.median(saves[1:]), "first_save_ms": 1e3 * saves[0]}))
'''


def measure(checkout: str, model: str) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    out = subprocess.run([sys.executable, "-c", MEASURE, model], cwd=checkout, env=env, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", default=".")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="mlp,cnn")
    args = parser.parse_args()
    for model in args.models.split(","):
        samples = {"before": [], "after": []}
        for round_index in range(args.rounds):
            order = ("before", "after") if round_index % 2 == 0 else ("after", "before")
            for which in order:
                samples[which].append(measure(getattr(args, which), model))
        print(f"{model} ({args.rounds} interleaved rounds, medians)")
        for key in ("ms_per_step", "eval_ms", "save_ms", "first_save_ms"):
            before = statistics.median(s[key] for s in samples["before"])
            after = statistics.median(s[key] for s in samples["after"])
            print(f"  {key:14s} before {before:9.2f}  after {after:9.2f}  after/before {after / before:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
