"""GPU benchmark: the benchmark's families scaled up to fill one large accelerator (sized for an H200),
float32 and bfloat16, achieved TFLOP/s against the matmul rate of the same run.

    scripts/benchmark_gpu.sh [--smoke] [--workloads mlp,transformer] [--dtypes bfloat16] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import Workload, _fmt, _lstm_flops, _timed, batch, machine, matmul_rates, zoo_runner  # noqa: E402

from zoo.util import atomic_write, utc_timestamp  # noqa: E402




def gpu_workloads(smoke: bool = False) -> dict:
    """Scaled-up workloads; `smoke` shrinks them to check the code path on a CPU."""
    s = (lambda big, small: small) if smoke else (lambda big, small: big)  # noqa: E731
    lstm = dict(batch=s(512, 4), steps=s(128, 6), inputs=s(256, 8), hidden=s(1024, 16))
    return {w.name: w for w in [
        Workload("mlp", "MLP 4096-8192-8192-10", "mlp", {"hidden_sizes": (s(8192, 32),) * 2},
                 s(8192, 8), (s(4096, 16),)),
        Workload("cnn", "CNN conv3x3 (128, 256) + 2x2 max-pool + dense 1024, 64x64x3", "cnn",
                 {"features": (s(128, 4), s(256, 8)), "hidden": s(1024, 8)}, s(512, 4), (s(64, 8), s(64, 8), 3)),
        Workload("resnet50", "ResNet-50 (ImageNet layout), 224x224x3", "resnet50", {"width": s(64, 4)},
                 s(256, 2), (s(224, 32), s(224, 32), 3), num_classes=1000),
        Workload("lstm", "LSTM hidden 1024, seq 128, input 256, last state", "lstm",
                 {"hidden_size": lstm["hidden"]}, lstm["batch"], (lstm["steps"], lstm["inputs"]),
                 analytic_flops=lambda: _lstm_flops(classes=10, **lstm)),
        Workload("transformer", "Transformer encoder 12x1024, 16 heads, MLP 4096, seq 512 (inputs of dim 1024)",
                 "transformer", {"width": s(1024, 32), "depth": s(12, 2), "num_heads": s(16, 4),
                                 "mlp_dim": s(4096, 64), "patch_size": 1, "pool": "mean"},
                 s(64, 2), (s(512, 8), s(1024, 32))),
    ]}


def matmul_tflops(dtype, size: int, repeats: int = 10) -> float:
    """Median TFLOP/s of a size x size jnp.dot in `dtype` (float32 at JAX's default precision)."""
    return statistics.median(matmul_rates(size, repeats, dtype)) / 1e12


def run_gpu_benchmark(names, dtypes, budget_seconds: float, smoke: bool = False, log=print,
                      on_row=lambda report: None) -> dict:
    """Times each workload on one device on purpose (the step's speed, not a scaling study) and
    hands the report so far to `on_row` after every row, so a hard stop keeps what was measured."""
    from jax.sharding import AxisType, Mesh

    start = time.perf_counter()
    workloads = gpu_workloads(smoke)
    device = jax.devices()[0]
    mesh = Mesh(np.array([device]), ("data",), axis_types=(AxisType.Auto,))
    report = {
        "date": utc_timestamp(),
        "device": f"{device.platform} {getattr(device, 'device_kind', '')}".strip(),
        "devices_used": mesh.size, "devices_visible": jax.device_count(), "machine": machine(),
        "smoke": smoke, "complete": False, "matmul_tflops": {}, "results": [], "wall_seconds": 0.0,
    }
    with jax.default_device(device):
        report["matmul_tflops"] = rates = {d: matmul_tflops(d, 256 if smoke else 8192) for d in dtypes}
    log("matmul: " + ", ".join(f"{d} {r:.1f} TFLOP/s" for d, r in rates.items()))
    for name in names:
        for dtype in dtypes:
            if time.perf_counter() - start > budget_seconds:
                log(f"  {name} {dtype}: skipped (time budget of {budget_seconds:.0f} s spent)")
                row = {"workload": name, "dtype": dtype, "skipped": True}
            else:
                row = _gpu_row(workloads[name], dtype, rates[dtype], mesh, log)
            report["results"].append(row)
            report["wall_seconds"] = time.perf_counter() - start
            on_row(report)
    report["complete"] = True
    report["wall_seconds"] = time.perf_counter() - start
    return report


def _gpu_row(workload: Workload, dtype: str, matmul_rate: float, mesh, log) -> dict:
    x, y = batch(workload)
    runner = zoo_runner(workload, x, y, precision=dtype, mesh=mesh)
    runner.run(2)
    count = max(1, round(0.5 / _timed(runner.run, 1)[0]))
    seconds = statistics.median(_timed(runner.run, count)[0] for _ in range(5))
    flops = workload.analytic_flops() if workload.analytic_flops else runner.flops
    tflops = flops / seconds / 1e12 if flops else None
    # XLA's count after optimisation against the lowered module's: fusion and rewrites may move it a
    # little; a large gap means the figure above counts something other than the model's work.
    agreement = runner.flops / runner.lowered_flops if runner.flops and runner.lowered_flops else None
    log(f"  {workload.name} {dtype}: {seconds * 1e3:.2f} ms/step, {_fmt(tflops, '.1f')} TFLOP/s "
        f"({_fmt(tflops and tflops / matmul_rate, '.0%')} of matmul); compiled/lowered FLOPs "
        f"{_fmt(agreement, '.3f')}")
    return {
        "workload": workload.name, "dtype": dtype, "description": workload.description,
        "batch": workload.batch, "step_ms": seconds * 1e3, "compile_s": runner.compile_seconds,
        "flops_per_step": flops, "xla_flops_compiled": runner.flops, "xla_flops_lowered": runner.lowered_flops,
        "flops_compiled_over_lowered": agreement, "tflops_per_s": tflops,
        "fraction_of_matmul": tflops / matmul_rate if tflops else None,
    }


def gpu_markdown(report: dict, command: str) -> str:
    header = ["workload", "dtype", "batch", "step ms", "TFLOP/step", "TFLOP/s", "of matmul",
              "XLA FLOPs compiled/lowered", "compile s"]
    rows = [[r["workload"], r["dtype"], "-", "skipped", "-", "-", "-", "-", "-"] if r.get("skipped") else
            [r["workload"], r["dtype"], r["batch"], f"{r['step_ms']:.2f}",
             _fmt(r["flops_per_step"] and r["flops_per_step"] / 1e12, ".3f"), _fmt(r["tflops_per_s"], ".1f"),
             _fmt(r["fraction_of_matmul"], ".0%"), _fmt(r.get("flops_compiled_over_lowered"), ".3f"),
             f"{r['compile_s']:.1f}"] for r in report["results"]]
    rates = ", ".join(f"{d} {r:.1f} TFLOP/s" for d, r in report["matmul_tflops"].items())
    lines = [
        "# GPU training-step benchmark (the zoo's jitted step, scaled-up workloads)", "",
        f"Written by `{command}` on {report['date']} in {report['wall_seconds']:.0f} s"
        + ("." if report["complete"] else " (PARTIAL: the run stopped before every workload was measured)."),
        "",
        f"- Device: {report['device']}; devices used: {report['devices_used']} of {report['devices_visible']} "
        f"visible (one on purpose: per-device step speed, not scaling); JAX {report['machine']['versions']['jax']}",
        f"- Matmul rate measured in the same run (8192x8192 jnp.dot; float32 at JAX's default precision, "
        f"which allows TF32 on this hardware): {rates}",
        "- bfloat16: model.precision=bfloat16: float32 variables and Adam; layers compute in bfloat16 "
        "(Flax's dtype), BatchNorm statistics, softmax and loss in float32.",
        "- FLOPs: XLA's cost analysis of the compiled step; the LSTM's (a scan) analytic, 3x forward matmuls. "
        "Compiled/lowered: that count over the same analysis of the lowered module, a cross-check.",
        "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
        *("| " + " | ".join(map(str, row)) + " |" for row in rows), "",
        "Workloads:", "",
        *(f"- `{name}`: {w.description}, batch {w.batch}" for name, w in gpu_workloads(report["smoke"]).items()),
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    """Entry point of scripts/benchmark_gpu.sh."""

    parser = argparse.ArgumentParser(prog="scripts/benchmark_gpu.sh", description=main.__doc__)
    parser.add_argument("--workloads", default=",".join(gpu_workloads()), help="comma-separated subset")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--budget-s", type=float, default=400.0, help="stop starting new workloads after this")
    parser.add_argument("--out", default="benchmarks/gpu", help="where RESULTS.md and results.json go")
    parser.add_argument("--smoke", action="store_true", help="tiny workloads: check the script on a CPU")
    args = parser.parse_args(argv)
    if jax.default_backend() != "gpu" and not args.smoke:
        print(f"no GPU visible to JAX (backend: {jax.default_backend()}); install the tested CUDA jax "
              "(pip install -e '.[gpu]', which pins jax[cuda12]==0.10.2) or pass --smoke to check the "
              "script on a CPU", file=sys.stderr)
        return 2
    names = [n for n in args.workloads.split(",") if n]
    unknown = [n for n in names if n not in gpu_workloads()]
    if unknown:
        print(f"unknown workload {unknown[0]}: choose from {', '.join(gpu_workloads())}", file=sys.stderr)
        return 2
    dtypes = [jnp.dtype(d).name for d in args.dtypes.split(",") if d]
    command = shlex.join(["scripts/benchmark_gpu.sh", *(argv if argv is not None else sys.argv[1:])])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def write(report: dict) -> None:  # after every row: a hard timeout keeps what was measured
        for name, text in (("RESULTS.md", gpu_markdown(report, command)),
                           ("results.json", json.dumps({**report, "command": command}, indent=2) + "\n")):
            atomic_write(out / name, text)

    report = run_gpu_benchmark(names, dtypes, args.budget_s, smoke=args.smoke,
                               log=lambda line: print(line, file=sys.stderr, flush=True), on_row=write)
    write(report)
    print(gpu_markdown(report, command))
    print(f"wrote {out / 'RESULTS.md'} and {out / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
