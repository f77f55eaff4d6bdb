"""Where a run's compile time goes, per workload of bench.py: the train state's init compiled at XLA's
default LLVM level and at the zoo's (zoo.training.step.INIT_CPU_OPTIONS), alternating, with whether
the two states are bit for bit equal; then the train step's trace, lower and compile, and how many
fused kernels its compiled module has, in all and distinct (XLA's CPU backend compiles identical
fusions once: a step's compile grows with its distinct kernels, about 13 ms each on the 2-core dev
machine; benchmarks/NOTES.md, round eight).

    python benchmarks/compile_time.py [--workloads resnet20,lm_transformer] [--rounds 2]

Each compile follows `jax.clear_caches()` (no in-memory cache; the persistent cache is off unless
configured). Prints numbers, asserts nothing: a measurement, not a test.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (puts this checkout's zoo first on the path; tunes the host allocator)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from zoo.training import state as state_lib, step as step_lib  # noqa: E402


def _computations(hlo_text: str) -> dict[str, list[str]]:
    """name -> instruction lines of every computation in a compiled module's text."""
    out, name = {}, None
    for line in hlo_text.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header:
            name, out[header.group(1)] = header.group(1), []
        elif line.startswith("}"):
            name = None
        elif name is not None:
            out[name].append(line)
    return out


def _canonical(lines: list[str]) -> str:
    """A fused computation without its names, metadata and backend config: equal for two fusions
    that compute the same thing on the same shapes and layouts."""
    names: dict[str, str] = {}

    def rename(match):
        return names.setdefault(match.group(0), f"%v{len(names)}")

    text = "\n".join(re.sub(r", (metadata|backend_config)=.*$", "", line) for line in lines)
    return re.sub(r"%[\w.\-]+", rename, text)


def fused_kernels(hlo_text: str) -> tuple[int, int]:
    """(fusions, distinct fused computations) of a compiled module's text."""
    computations = _computations(hlo_text)
    called = re.findall(r"= [^\n]*? fusion\([^\n]*?calls=%([\w.\-]+)", hlo_text)
    return len(called), len({_canonical(computations.get(name, [name])) for name in called})


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def measure(name: str, rounds: int) -> dict:
    workload = bench.WORKLOADS[name]
    x, y = bench.batch(workload)
    model, task, tx = bench.zoo_parts(workload)
    mesh = step_lib.make_mesh()
    init = jax.jit(lambda x: state_lib.create(model, tx, 0, x), out_shardings=step_lib.replicated(mesh)).lower(x[:1])
    variants = {"default": {}, "zoo": dict(step_lib.INIT_CPU_OPTIONS)}
    seconds = {v: [] for v in variants}
    states = {}
    for i in range(rounds):
        for variant in (list(variants) if i % 2 == 0 else list(variants)[::-1]):
            jax.clear_caches()
            compiled, took = _timed(lambda: init.compile(compiler_options=variants[variant]))
            seconds[variant].append(took)
            states[variant] = jax.device_get(compiled(x[:1]))
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(states["default"]), jax.tree.leaves(states["zoo"])))
    state = jax.device_put(states["zoo"], step_lib.replicated(mesh))
    xb, yb = step_lib.put_batch(mesh, x), step_lib.put_batch(mesh, y)
    trace, lower, compile_ = [], [], []
    for _ in range(rounds):
        jax.clear_caches()
        jitted = step_lib.jit_train_step(model, tx, task, 0.0, mesh)
        traced, t1 = _timed(lambda: jitted.trace(state, xb, yb))
        lowered, t2 = _timed(traced.lower)
        compiled, t3 = _timed(lowered.compile)
        trace.append(t1), lower.append(t2), compile_.append(t3)
    return {"workload": name, "init_default": seconds["default"], "init_zoo": seconds["zoo"], "same": same,
            "trace": trace, "lower": lower, "compile": compile_, "kernels": fused_kernels(compiled.as_text())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/compile_time.py", description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(bench.WORKLOADS), help="comma-separated names of bench.py's workloads")
    parser.add_argument("--rounds", type=int, default=2, help="compiles of each kind per workload")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in bench.WORKLOADS]
    if unknown or args.rounds < 1:
        problem = f"unknown workload '{unknown[0]}'" if unknown else f"--rounds {args.rounds} must be at least 1"
        print(f"compile_time: error: {problem}: choose from {', '.join(bench.WORKLOADS)}", file=sys.stderr)
        return 2
    print(f"jax {jax.__version__}, {bench.cpu_isa(bench.cpu_info()[1])}, init options {step_lib.INIT_CPU_OPTIONS}; "
          f"seconds, median of {args.rounds} (each value in brackets)")
    print("| workload | init, XLA default | init, zoo | same bits | step trace | step lower | step compile | step total "
          "| step fusions (distinct) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        r = measure(name, args.rounds)

        def cell(values):
            return f"{statistics.median(values):.2f} ({', '.join(f'{v:.2f}' for v in values)})"

        total = [a + b + c for a, b, c in zip(r["trace"], r["lower"], r["compile"])]
        print(f"| {name} | {cell(r['init_default'])} | {cell(r['init_zoo'])} | {'yes' if r['same'] else 'NO'} | "
              f"{cell(r['trace'])} | {cell(r['lower'])} | {cell(r['compile'])} | {cell(total)} | "
              f"{r['kernels'][0]} ({r['kernels'][1]}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
