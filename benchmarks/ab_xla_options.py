"""Paired, interleaved A/B timings of the zoo's train step under XLA compiler options / layer choices.

For each workload of bench.py, every variant is compiled in this one process, then timed in rounds
that alternate the variants (order rotating each round); each round gives each variant's time per
step and its ratio to the first variant ("base"); the median of those per-round ratios is reported,
which a noisy, shared machine disturbs far less than the absolute times.

    python benchmarks/ab_xla_options.py --workloads cnn,resnet20 --rounds 9 --variants base,dot,stock+dot
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (puts this checkout's zoo first on the path)

import jax  # noqa: E402

from zoo.training import step as step_lib  # noqa: E402

DOT = "LIBRARY_FUSION_TYPE_DOT"
YNN = "xla_cpu_experimental_ynn_fusion_type"
# name -> (hparams override, compiler options); "+"-joined names combine.
PARTS = {
    "base": ({}, {}),
    "dot": ({}, {YNN: DOT}),
    "idot": ({}, {YNN: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}),
    "noynn": ({}, {YNN: "LIBRARY_FUSION_TYPE_INVALID"}),
    "iconv": ({}, {YNN: "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"}),
    "odot": ({}, {"xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}),
    "oconv": ({}, {"xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"}),
    "ocall": ({}, {"xla_cpu_experimental_onednn_custom_call": True}),
    "onednn": ({}, {"xla_cpu_use_onednn": True}),
    "xdot": ({}, {"xla_cpu_experimental_xnn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}),
    "fastminmax": ({}, {"xla_cpu_enable_fast_min_max": True}),
    "noconc": ({}, {"xla_cpu_enable_concurrency_optimized_scheduler": False}),
    "oldemit": ({}, {"xla_cpu_use_fusion_emitters": False}),
    "all": ({}, {YNN: f"{DOT},LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE"}),
    "stock": ({"fast_layers": False}, {}),
    "noeigen": ({}, {"xla_cpu_multi_thread_eigen": False}),
    "onethread": ({}, {"xla_cpu_parallel_codegen_split_count": 1}),
    "vw512": ({}, {"xla_cpu_prefer_vector_width": 512}),
    "fastmath": ({}, {"xla_cpu_enable_fast_math": True}),
    "o0": ({}, {"xla_backend_optimization_level": 0}),
    "o1": ({}, {"xla_backend_optimization_level": 1}),
    "o2": ({}, {"xla_backend_optimization_level": 2}),
    "nomat": ({}, {}),
    "flaxpool": ({}, {}),
    "stockconv": ({}, {}),
    "relupool": ({}, {}),
    "nomatct": ({}, {}),
    "stockbn": ({}, {}),
    "nomattr": ({}, {}),
    "stockdense": ({}, {}),
    "noshift": ({}, {}),
    "oneblock": ({}, {}),
    "twoprod": ({}, {}),
}


@contextlib.contextmanager
def _patched(module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def _layer_patches(parts):
    """Trace-time swaps of single fast layers: nomat (the fast conv without its materialized input),
    flaxpool (the fast conv with nn.max_pool/avg_pool), stockconv (nn.Conv with the fast pools), relupool
    (the CNN's conv, bias, ReLU, then max_pool, instead of layers.ConvMaxPool), nomatct (the fast conv
    without its materialized output cotangent), stockbn (nn.BatchNorm in the ResNets), nomattr
    (layers.matmul's kernel gradient without its materialized transposed input: layers.Dense, the
    Transformer's SelfAttention). `stock` (fast_layers false) covers every family with the choice."""
    import flax.linen as nn
    from zoo.models import cnn, layers

    stack = contextlib.ExitStack()
    if "nomat" in parts:
        stack.enter_context(_patched(layers, "_materialize", lambda x: x))
    if "flaxpool" in parts:
        stack.enter_context(_patched(cnn, "pick_layers", lambda fast: (
            layers.Conv, functools.partial(cnn._flax_pool, nn.max_pool), functools.partial(cnn._flax_pool, nn.avg_pool))))
    if "relupool" in parts:  # the CNN's conv -> bias -> ReLU -> max_pool, before ConvMaxPool
        class ReluPool(nn.Module):
            features: int
            kernel_size: tuple
            window: int = 2
            dtype: object = None

            @nn.compact
            def __call__(self, x):
                conv = layers.Conv(self.features, self.kernel_size, padding="SAME", dtype=self.dtype)
                nn.share_scope(self, conv)
                return layers.max_pool(nn.relu(conv(x)), self.window)

        stack.enter_context(_patched(layers, "ConvMaxPool", ReluPool))
    if "stockbn" in parts:  # the ResNets' nn.BatchNorm instead of layers.BatchNorm
        stack.enter_context(_patched(layers, "BatchNorm", nn.BatchNorm))
    if "nomattr" in parts:  # layers.matmul's kernel gradient without its materialized transposed input
        stack.enter_context(_patched(layers, "_MATERIALIZE_TRANSPOSED", False))
    if "twoprod" in parts:  # the LSTM step's x_t W_x + h W_h as two products, not one over [x_t, h]
        stack.enter_context(_patched(layers, "_LSTM_ONE_PRODUCT", False))
    if "oneblock" in parts:  # the Transformer LM's causal attention over all keys for every query
        from zoo.models import transformer_lm
        stack.enter_context(_patched(transformer_lm, "CAUSAL_QUERY_BLOCKS", 1))
    if "noshift" in parts:  # XLA's convolution for the first layers too (no layers._shifted_conv)
        stack.enter_context(_patched(layers, "_SHIFTED_CONV", False))
    if "stockdense" in parts:  # nn.Dense where the fast layers have layers.Dense (the attention stays fast)
        stack.enter_context(_patched(layers, "Dense", nn.Dense))
    if "nomatct" in parts:
        stack.enter_context(_patched(layers, "_MATERIALIZE_COTANGENT", False))
    if "stockconv" in parts:
        stack.enter_context(_patched(cnn, "pick_layers", lambda fast: (nn.Conv, layers.max_pool, layers.avg_pool)))
    return stack


# Options measured here that a config may not name (zoo.config.KNOWN_XLA_OPTIONS): allowed in this
# script only, to find out whether one deserves a place in that list.
MEASURED_ONLY = {"xla_cpu_experimental_onednn_fusion_type", "xla_cpu_experimental_onednn_custom_call",
                 "xla_cpu_use_onednn", "xla_cpu_experimental_xnn_fusion_type",
                 "xla_backend_optimization_level", "xla_cpu_enable_fast_math"}


def variant(name: str):
    hparams, options = {}, {}
    for part in name.split("+"):
        h, o = PARTS[part]
        hparams.update(h)
        options.update(o)
    return hparams, options


def runner(workload, name, x, y, k):
    hparams, options = variant(name)
    w = bench.Workload(**{**workload.__dict__, "hparams": {**workload.hparams, **hparams}})
    try:  # the variant's options replace the family's defaults
        patches = _layer_patches(name.split("+"))
        from zoo import config
        patches.enter_context(_patched(config, "KNOWN_XLA_OPTIONS", (*config.KNOWN_XLA_OPTIONS, *MEASURED_ONLY)))
        patches.__enter__()
        from zoo import models, tasks
        from zoo.config import OptimizerConfig
        from zoo.training import optim, state as state_lib

        model = models.build(w.model, w.num_classes, vocab_size=w.num_classes, **w.hparams)
        tx = optim.make_optimizer(OptimizerConfig(name="adam", learning_rate=1e-3, schedule="constant"), 1)
        mesh = step_lib.make_mesh()
        state = jax.jit(lambda x: state_lib.create(model, tx, 0, x), out_shardings=step_lib.replicated(mesh))(x[:1])
        task = tasks.LanguageModel(w.num_classes) if w.task == "lm" else w.num_classes
        jitted = step_lib.jit_train_step(model, tx, task, 0.0, mesh, xla_options=options)
        r = bench._jax_runner(jitted, state, step_lib.put_batch(mesh, x), step_lib.put_batch(mesh, y))
        r.run(1)  # traces and compiles under the patches
    finally:
        patches.__exit__(None, None, None)
    r.run(k)  # warm up
    return r


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workloads", default="mlp,cnn,resnet20,lstm,transformer")
    p.add_argument("--variants", default="base,dot")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--seconds", type=float, default=1.0, help="about this long per variant per round")
    args = p.parse_args()
    names = args.variants.split(",")
    print(f"jax {jax.__version__}, {bench.machine()}", flush=True)
    print(f"load average at start {os.getloadavg()[0]:.2f}, float32 matmul ceiling "
          f"{statistics.median(bench.matmul_gflops()):.0f} GFLOP/s", flush=True)
    for wname in args.workloads.split(","):
        workload = bench.WORKLOADS[wname]
        x, y = bench.batch(workload)
        runners = {}
        for name in names:
            try:
                runners[name] = runner(workload, name, x, y, 1)
            except Exception as error:  # noqa: BLE001 - a variant XLA refuses or crashes on
                print(f"{wname} {name}: FAILED {str(error).splitlines()[0][:200]}", flush=True)
        start = time.perf_counter()
        runners[names[0]].run(1)
        steps = max(1, int(args.seconds / max(time.perf_counter() - start, 1e-4)))
        times = {n: [] for n in runners}
        cpu = {n: [] for n in runners}
        for r in range(args.rounds):
            order = list(runners)[r % len(runners):] + list(runners)[:r % len(runners)]
            for n in order:
                t0, c0 = time.perf_counter(), time.process_time()
                runners[n].run(steps)
                times[n].append((time.perf_counter() - t0) / steps * 1e3)
                cpu[n].append((time.process_time() - c0) / steps * 1e3)
        report(wname, names[0], runners, times, cpu)
    print(f"load average at end {os.getloadavg()[0]:.2f}, float32 matmul ceiling "
          f"{statistics.median(bench.matmul_gflops()):.0f} GFLOP/s", flush=True)


def report(wname, base, runners, times, cpu):
    """One line per variant: median wall ms, the median (min, max) of its per-round ratios to `base`,
    the same for process CPU time (all threads: less disturbed by other processes than wall time)."""
    for n in runners:
        ratios = [t / b for t, b in zip(times[n], times[base])]
        cpu_ratios = [t / b for t, b in zip(cpu[n], cpu[base])]
        print(f"{wname:12s} {n:16s} median {statistics.median(times[n]):8.2f} ms  "
              f"ratio to {base} {statistics.median(ratios):.3f} (min {min(ratios):.3f} max {max(ratios):.3f})  "
              f"cpu ratio {statistics.median(cpu_ratios):.3f} ({min(cpu_ratios):.3f}-{max(cpu_ratios):.3f})  "
              f"compile {runners[n].compile_seconds:.1f}s", flush=True)


if __name__ == "__main__":
    main()
