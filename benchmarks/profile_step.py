"""Where a zoo train step spends its time on this CPU: the top XLA ops of one `zoo bench` workload.

Runs the workload's compiled train step (the zoo path of benchmarks/bench.py, with its per-family
XLA options) under `jax.profiler.trace`, reads the Perfetto trace JSON it writes, and sums the
duration of each executed HLO instruction (a thunk: a fusion, a convolution, a library call) over
the traced steps. Each op is named with what the compiled module says of it: its kind (fusion kind
or opcode) and the `op_name` metadata of its root, i.e. the jax function it came from.

    python benchmarks/profile_step.py --workloads cnn,resnet20 --steps 20 --top 3

Ops are grouped by where they sit (forward = jvp, backward = transpose, update = the optimizer) and
the jax op they come from; the largest single instructions follow. Shares are of the summed op
time: ops on different threads may overlap (the sum can exceed the step's wall time, printed
beside it), and time outside any op (thread hand-offs, waits) is not in the sum.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402 - the benchmark's own workloads and zoo runner


def op_descriptions(hlo_text: str) -> dict[str, str]:
    """instruction name -> 'kind: op_name' for every instruction of the compiled module's text."""
    out = {}
    for line in hlo_text.splitlines():
        match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = \S+ (\S+?)\(", line)
        if not match:
            continue
        name, opcode = match.groups()
        kind = re.search(r"kind=(\w+)", line)
        op_name = re.search(r'op_name="([^"]*)"', line)
        label = opcode if not kind else f"fusion/{kind.group(1)}"
        out[name] = f"{label}: {op_name.group(1) if op_name else ''}"
    return out


def fusion_roots(hlo_text: str) -> dict[str, str]:
    """fused computation name -> its ROOT's opcode and op_name (the fusion line often has none)."""
    roots, current = {}, None
    for line in hlo_text.splitlines():
        header = re.match(r"%?([\w.\-]+) .*\{\s*$", line)
        if header and "=" not in line.split("{")[0]:
            current = header.group(1)
        elif current and line.strip().startswith("ROOT"):
            opcode = re.match(r"\s*ROOT %?[\w.\-]+ = \S+ (\S+?)\(", line)
            op_name = re.search(r'op_name="([^"]*)"', line)
            roots[current] = " ".join(filter(None, [f"root {opcode.group(1)}" if opcode else None,
                                                    op_name.group(1) if op_name else None]))
    return roots


def category(description: str) -> str:
    """'backward conv_general_dilated', 'forward relu/max', 'update mul', ...: where in the step an op
    sits (jvp = forward, transpose = backward, else the optimizer update) and what jax op it is."""
    label, _, rest = description.partition(": ")
    own, _, root = rest.partition(" (root ")
    root = root.rstrip(")")
    root_opcode, _, root_name = root.partition(" ")
    op_name = own or root_name
    if not op_name:
        return f"{root_opcode or label} (unnamed)"
    parts = [part for part in op_name.split("/") if part]
    leaf = parts[-1]
    if len(parts) > 1 and parts[-2].startswith("jit("):
        leaf = f"{parts[-2][4:-1]}/{leaf}"
    where = "backward" if "transpose(" in op_name else "forward" if "jvp(" in op_name else "update"
    return f"{where} {leaf}"


def profile(name: str, steps: int) -> tuple[float, list[tuple[str, float, str]]]:
    import jax

    workload = bench.WORKLOADS[name]
    x, y = bench.batch(workload)
    runner = bench.zoo_runner(workload, x, y)
    runner.run(3)
    start = time.perf_counter()
    runner.run(steps)
    wall_ms = 1e3 * (time.perf_counter() - start) / steps
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            runner.run(steps)
        trace_file = sorted(glob.glob(f"{tmp}/**/perfetto_trace.json.gz", recursive=True))[-1]
        with gzip.open(trace_file) as handle:
            trace = json.load(handle)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    text = runner.hlo_text or ""
    described, roots = op_descriptions(text), fusion_roots(text)
    totals = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and event.get("name") in described:
            totals[event["name"]] += event.get("dur", 0) / 1e3 / steps
    rows = []
    for op, ms in totals.most_common():
        description = described[op]
        called = re.search(r"calls=%?([\w.\-]+)", next((l for l in text.splitlines()
                                                          if re.match(rf"\s*(ROOT )?%?{re.escape(op)} = ", l)), ""))
        if called and called.group(1) in roots:
            description += f" ({roots[called.group(1)]})"
        rows.append((op, ms, description))
    return wall_ms, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="cnn,resnet20")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--top", type=int, default=3)
    args = parser.parse_args()
    info = bench.machine()
    print(f"# {info['cpu']}, {info['cores']} cores, ISA {info['isa']}; jax {info['versions']['jax']}; "
          f"`python benchmarks/profile_step.py --workloads {args.workloads} --steps {args.steps} --top {args.top}`")
    for name in args.workloads.split(","):
        wall_ms, rows = profile(name, args.steps)
        total = sum(ms for _, ms, _ in rows)
        print(f"\n{name} (XLA options {bench.workload_xla_options(bench.WORKLOADS[name])}): {wall_ms:.1f} ms per step "
              f"(wall), {total:.1f} ms of op time per step; top {args.top} by kind (forward/backward/update, jax op):")
        groups = collections.Counter()
        for _, ms, description in rows:
            groups[category(description)] += ms
        for group, ms in groups.most_common(args.top):
            print(f"  {ms:7.2f} ms  {100 * ms / total:5.1f}%  {group}")
        print(f"  largest single ops:")
        for op, ms, description in rows[:args.top]:
            print(f"    {ms:7.2f} ms  {100 * ms / total:5.1f}%  {op:28s} {description[:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
