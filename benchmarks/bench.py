"""Side-by-side speed of one training step: the zoo's jitted step, a plain Flax/optax step, PyTorch eager
and PyTorch under torch.compile (inductor).

Every framework trains the same workload (shapes, float32, Adam, cross-entropy) on one fixed batch.
Timings are interleaved in rounds (the order rotates each round) so that a noisy, shared machine
slows all columns alike; medians and ratios are reported. PyTorch is optional (the `bench` extra);
its models are in baselines_torch.py, the GPU variant in bench_gpu.py. The committed record
(--out benchmarks: RESULTS.md, results.json and the table in docs/speed.md) is written only from a
quiet machine (`quiet_machine_problem`); a loaded one gets its results written to runs/bench/<time>/.

    python benchmarks/bench.py                       # full run (~4 min on 2 cores), writes runs/bench/<time>/
    python benchmarks/bench.py --out benchmarks      # rewrites the committed record, benchmarks/RESULTS.md
    python benchmarks/bench.py --quick --workloads mlp,lstm
    python benchmarks/bench.py --precision bfloat16  # the zoo column in bfloat16 (model.precision)
    (also: zoo bench, make bench)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "benchmarks"):  # the zoo of this checkout and baselines_torch, however it is run
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from zoo import host  # noqa: E402 - before JAX and PyTorch start their threads

host.tune_allocator()  # every column runs with it, as `zoo` commands do (zoo/host.py)

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp
import numpy as np
import optax

from zoo.util import utc_timestamp

LEARNING_RATE = 1e-3
FRAMEWORKS = ("zoo", "flax", "torch", "compile")
LABELS = {"zoo": "zoo", "flax": "plain Flax", "torch": "PyTorch eager", "compile": "torch.compile"}
COMMITTED = ROOT / "benchmarks"  # --out here: the committed record, refused on a loaded machine
SPEED_DOC = ROOT / "docs" / "speed.md"  # its table between TABLE_MARKERS is rewritten with the record
TABLE_MARKERS = ("<!-- bench table: written by benchmarks/bench.py --out benchmarks -->", "<!-- end of bench table -->")
# A quiet machine, for the committed record: a 1-minute load average at start of at most this per core
# (1.5 on 2 cores), other processes using at most this share of the machine's CPU time while the
# columns are timed (from /proc/stat), and a matmul ceiling at the end at least this share of the start's.
QUIET_LOAD_PER_CORE = 0.75
QUIET_OTHER_CPU_SHARE = 0.10
QUIET_CEILING_KEPT = 0.85


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    description: str
    model: str  # the zoo registry name
    hparams: dict
    batch: int
    input_shape: tuple  # one example
    num_classes: int = 10
    analytic_flops: Callable | None = None  # when a scan hides the FLOPs from XLA's cost analysis
    task: str = "classify"  # lm: token windows in, a next-token target at every position (num_classes = vocabulary)


def _lstm_flops(batch=64, steps=64, inputs=32, hidden=256, classes=10) -> float:
    """Matmul FLOPs of forward + backward (3x the forward: the gradients wrt inputs and weights)."""
    forward = steps * 2 * batch * (inputs + hidden) * 4 * hidden + 2 * batch * hidden * classes
    return 3.0 * forward


WORKLOADS = {
    w.name: w for w in [
        Workload("mlp", "MLP 784-512-512-10, batch 256", "mlp", {"hidden_sizes": (512, 512)}, 256, (784,)),
        Workload("cnn", "CNN 2x conv3x3 (32, 64) + 2x2 max-pool + dense 128, 28x28x1, batch 128", "cnn",
                 {"features": (32, 64), "hidden": 128}, 128, (28, 28, 1)),
        Workload("resnet20", "ResNet-20 (CIFAR), 32x32x3, batch 128", "resnet20", {}, 128, (32, 32, 3)),
        Workload("lstm", "LSTM hidden 256, seq 64, input 32, batch 64, last state", "lstm",
                 {"hidden_size": 256}, 64, (64, 32), analytic_flops=_lstm_flops),
        Workload("transformer", "Transformer encoder 4x256, 4 heads, MLP 1024, seq 128 (inputs of dim 256), "
                 "batch 32", "transformer",
                 {"width": 256, "depth": 4, "num_heads": 4, "mlp_dim": 1024, "patch_size": 1, "pool": "mean"},
                 32, (128, 256)),
        # Language models (issue 24): byte vocabulary, seq 128, batch 32, next-token loss at every position.
        Workload("lm_lstm", "LSTM language model: embed 64, hidden 256, vocab 256, seq 128, batch 32", "lstm_lm",
                 {"hidden_size": 256, "embed_dim": 64}, 32, (128,), num_classes=256, task="lm",
                 analytic_flops=lambda: _lstm_flops(32, 128, 64, 256, 0) + 3.0 * 2 * 32 * 128 * 256 * 256),
        Workload("lm_transformer", "Transformer LM 4x128 (GPT-style, pre-LN, causal), 4 heads, MLP 512, vocab 256, "
                 "seq 128, batch 32", "transformer_lm",
                 {"width": 128, "depth": 4, "num_heads": 4, "max_len": 128}, 32, (128,), num_classes=256, task="lm"),
    ]
}


# ---------------------------------------------------------------------------------------------------
# Plain Flax: the straightforward linen formulation of each workload (the "before" column).


class PlainMLP(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = x.reshape(x.shape[0], -1)
        for size in (512, 512):
            x = nn.relu(nn.Dense(size)(x))
        return nn.Dense(10)(x)


class PlainCNN(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        for channels in (32, 64):
            x = nn.relu(nn.Conv(channels, (3, 3), padding="SAME")(x))
            x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Dense(128)(x.reshape(x.shape[0], -1)))
        return nn.Dense(10)(x)


class PlainBlock(nn.Module):
    features: int
    strides: int

    @nn.compact
    def __call__(self, x, train):
        bn = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)  # noqa: E731
        s = (self.strides, self.strides)
        y = nn.relu(bn()(nn.Conv(self.features, (3, 3), s, padding=((1, 1), (1, 1)), use_bias=False)(x)))
        y = bn()(nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)(y))
        if x.shape[-1] != self.features or self.strides != 1:
            x = bn()(nn.Conv(self.features, (1, 1), s, use_bias=False)(x))
        return nn.relu(x + y)


class PlainResNet20(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(16, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
        for i, width in enumerate((16, 32, 64)):
            for j in range(3):
                x = PlainBlock(width, 2 if i and not j else 1)(x, train)
        return nn.Dense(10)(x.mean(axis=(1, 2)))


class PlainLSTM(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        (_, h), _ = nn.RNN(nn.LSTMCell(256), return_carry=True)(x)
        return nn.Dense(10)(h)


class PlainEncoderBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=4)(y, y)
        y = nn.Dense(256)(nn.gelu(nn.Dense(1024)(nn.LayerNorm()(x))))
        return x + y


class PlainTransformer(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(256)(x)
        x = x + self.param("pos_embedding", nn.initializers.normal(0.02), (1, *x.shape[1:]))
        for _ in range(4):
            x = PlainEncoderBlock()(x)
        return nn.Dense(10)(nn.LayerNorm()(x).mean(axis=1))


PLAIN_FLAX = {"mlp": PlainMLP, "cnn": PlainCNN, "resnet20": PlainResNet20, "lstm": PlainLSTM,
              "transformer": PlainTransformer}


# ---------------------------------------------------------------------------------------------------
# Runners: each gives `run(n)` (n steps, synchronized at the end), its compile time and its FLOPs.


@dataclasses.dataclass
class Runner:
    run: Callable[[int], None]
    compile_seconds: float | None = None
    flops: float | None = None  # XLA's cost analysis of the compiled step
    lowered_flops: float | None = None  # the same analysis of the lowered (unoptimised) module
    hlo_text: str | None = None  # the compiled module (benchmarks/profile_step.py names its ops)
    init_compile_seconds: float | None = None  # the zoo's: lower + compile of the train state's init


def _flops_of(compiled) -> float | None:
    """FLOPs from XLA's cost analysis of a `Lowered` or `Compiled` step (None where unavailable)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends offer no analysis of lowered modules
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def _jax_runner(jitted, state, *args) -> Runner:
    start = time.perf_counter()
    lowered = jitted.lower(state, *args)
    compiled = lowered.compile()
    compile_seconds = time.perf_counter() - start
    holder = [state]

    def run(n: int):
        state = holder[0]
        for _ in range(n):
            state, metrics = compiled(state, *args)
        jax.block_until_ready(metrics)
        holder[0] = state

    return Runner(run, compile_seconds, _flops_of(compiled), _flops_of(lowered), compiled.as_text())


def batch(workload: Workload, seed: int = 0):
    rng = np.random.default_rng(seed)
    if workload.task == "lm":  # token windows; targets: the next token at every position
        tokens = rng.integers(0, workload.num_classes, (workload.batch, workload.input_shape[0] + 1)).astype(np.int32)
        return tokens[:, :-1], tokens[:, 1:]
    x = rng.standard_normal((workload.batch, *workload.input_shape), dtype=np.float32)
    y = rng.integers(0, workload.num_classes, workload.batch).astype(np.int32)
    return x, y


def zoo_parts(workload: Workload, precision: str = "float32") -> tuple:
    """(model, task, optimizer) of the zoo's path for `workload`: the registry's model (at `precision`:
    its model.precision), its task, Adam at LEARNING_RATE."""
    from zoo import models, tasks
    from zoo.config import OptimizerConfig
    from zoo.training import optim

    hparams = {**workload.hparams, **({"precision": precision} if precision != "float32" else {})}
    model = models.build(workload.model, workload.num_classes, vocab_size=workload.num_classes, **hparams)
    task = tasks.LanguageModel(workload.num_classes) if workload.task == "lm" else workload.num_classes
    tx = optim.make_optimizer(OptimizerConfig(name="adam", learning_rate=LEARNING_RATE, schedule="constant"), 1)
    return model, task, tx


def zoo_runner(workload: Workload, x, y, steps_per_call: int = 1, precision: str = "float32", mesh=None) -> Runner:
    """The zoo's own path (zoo_parts): the training package's state, optimizer and jitted step (on
    `mesh`, all devices by default)."""
    from zoo.training import state as state_lib, step as step_lib

    model, task, tx = zoo_parts(workload, precision)
    mesh = mesh or step_lib.make_mesh()
    sample = x[0, :1] if steps_per_call > 1 else x[:1]
    start = time.perf_counter()
    init = step_lib.jit_init(lambda x: state_lib.create(model, tx, 0, x), mesh).lower(sample).compile()
    init_seconds = time.perf_counter() - start
    state = init(sample)
    jitted = step_lib.jit_train_step(model, tx, task, 0.0, mesh, steps_per_call)
    leading = 1 if steps_per_call > 1 else 0
    runner = _jax_runner(jitted, state, step_lib.put_batch(mesh, x, leading), step_lib.put_batch(mesh, y, leading))
    return dataclasses.replace(runner, init_compile_seconds=init_seconds)


def plain_flax_runner(workload: Workload, x, y) -> Runner:
    """A straightforward linen model and optax step: what a user writes first."""
    module = PLAIN_FLAX[workload.name]()
    variables = module.init(jax.random.key(0), x[:1])
    params, extra = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    tx = optax.adam(LEARNING_RATE)

    def step(state, x, y):
        params, extra, opt_state = state

        def loss_fn(params):
            if extra:
                logits, new_extra = module.apply({"params": params, **extra}, x, train=True, mutable=list(extra))
            else:
                logits, new_extra = module.apply({"params": params}, x, train=True), extra
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_extra

        (loss, new_extra), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), new_extra, opt_state), loss

    state = (params, extra, tx.init(params))
    return _jax_runner(jax.jit(step, donate_argnums=0), state, jnp.asarray(x), jnp.asarray(y))


def torch_available() -> bool:
    # Before libgomp starts: with its default (spin, then sleep) two OpenMP threads on a 2-core machine
    # shared with other processes wait out whole scheduler slices at every barrier; measured here under
    # load, a PyTorch MLP step took 325 ms instead of 13 ms (PASSIVE). Set it yourself to override.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def torch_runner(workload: Workload, x, y, compiled: bool = False) -> Runner:
    """PyTorch eager, or under torch.compile (baselines_torch.py), imported only here: torch is an
    optional extra. The compile column's compile time is its first step's less a later step's."""
    import baselines_torch

    run, compile_seconds = baselines_torch.torch_runner(workload.name, x, y, LEARNING_RATE, compiled=compiled)
    return Runner(run, compile_seconds)


RUNNERS = {"zoo": zoo_runner, "flax": plain_flax_runner, "torch": torch_runner,
           "compile": functools.partial(torch_runner, compiled=True)}


# ---------------------------------------------------------------------------------------------------
# Measurement.


def matmul_rates(size: int = 2048, repeats: int = 5, dtype=jnp.float32) -> list[float]:
    """Achieved FLOP/s of a size x size jnp.dot in `dtype`, one sample per repeat."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)).astype(dtype)
    dot = jax.jit(jnp.dot).lower(a, a).compile()
    dot(a, a).block_until_ready()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        dot(a, a).block_until_ready()
        samples.append(2 * size**3 / (time.perf_counter() - start))
    return samples


def matmul_gflops(size: int = 2048, repeats: int = 5) -> list[float]:
    """Achieved GFLOP/s of a float32 size x size jnp.dot, one sample per repeat."""
    return [rate / 1e9 for rate in matmul_rates(size, repeats)]


def machine_cpu_seconds() -> float | None:
    """CPU seconds every process on this machine has used since boot (all cores; /proc/stat), None
    where there is no /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Monitor:
    """What a run saw of the machine: matmul-ceiling samples, and the CPU time this process and the
    whole machine used while the columns were timed (other processes' share is the difference)."""
    ceiling_samples: list = dataclasses.field(default_factory=list)
    wall: float = 0.0
    own_cpu: float = 0.0
    machine_cpu: float | None = 0.0

    @contextlib.contextmanager
    def timing(self):
        wall, own, machine_start = time.perf_counter(), time.process_time(), machine_cpu_seconds()
        yield
        self.wall += time.perf_counter() - wall
        self.own_cpu += time.process_time() - own
        machine_end = machine_cpu_seconds()
        if None in (machine_start, machine_end, self.machine_cpu):
            self.machine_cpu = None
        else:
            self.machine_cpu += machine_end - machine_start

    def other_cpu_share(self) -> float | None:
        """The share of the machine's CPU time (all cores) that other processes used while timing."""
        if not self.wall or self.machine_cpu is None:
            return None
        return max(0.0, self.machine_cpu - self.own_cpu) / (self.wall * (os.cpu_count() or 1))


def _timed(run: Callable[[int], None], n: int) -> tuple[float, float]:
    """(wall, process CPU) seconds per step over n steps."""
    start, cpu = time.perf_counter(), time.process_time()
    run(n)
    return (time.perf_counter() - start) / n, (time.process_time() - cpu) / n


def build_runners(workload: Workload, frameworks, x, y, log=print, precision: str = "float32") -> dict:
    """framework -> its Runner, after one real step (allocations, lazy initialization). A column other
    than the zoo's that cannot be built (no PyTorch model of a workload, a compiler failing) is left
    out with one line saying why."""
    runners = {}
    makers = {**RUNNERS, "zoo": functools.partial(zoo_runner, precision=precision)}
    for framework in frameworks:
        try:
            runners[framework] = makers[framework](workload, x, y)
        except Exception as error:  # noqa: BLE001 - any failure of an optional column
            if framework == "zoo":
                raise
            reason = (str(error).splitlines() or [""])[0][:160]
            log(f"  {workload.name}: no {LABELS[framework]} column ({type(error).__name__}: {reason})")
            continue
        runners[framework].run(1)
    return runners


def measure_workload(workload: Workload, frameworks, rounds: int, round_seconds: float,
                     monitor: Monitor, log=print, precision: str = "float32") -> dict:
    """Builds every framework's step, warms it up, then times them interleaved; per-step medians.
    `precision` is the zoo model's; the other columns stay float32."""
    x, y = batch(workload)
    runners = build_runners(workload, frameworks, x, y, log, precision)
    frameworks = list(runners)
    # Steps per timed block, so that one block lasts about round_seconds.
    counts = {f: max(1, round(round_seconds / _timed(r.run, 1)[0])) for f, r in runners.items()}
    samples = {f: [] for f in frameworks}
    cpu_samples = {f: [] for f in frameworks}
    for i in range(rounds):
        order = frameworks[i % len(frameworks):] + frameworks[:i % len(frameworks)]
        with monitor.timing():
            for framework in order:
                wall, cpu = _timed(runners[framework].run, counts[framework])
                samples[framework].append(wall)
                cpu_samples[framework].append(cpu)
            monitor.ceiling_samples.extend(matmul_gflops(repeats=1))
    flops = workload.analytic_flops() if workload.analytic_flops else runners[frameworks[0]].flops
    result = {"workload": workload.name, "description": workload.description,
              "flops_per_step": flops,
              "flops_source": "analytic (matmuls x3)" if workload.analytic_flops else "XLA cost analysis",
              "frameworks": {}}
    for framework, runner in runners.items():
        seconds = statistics.median(samples[framework])
        result["frameworks"][framework] = {
            "median_ms": seconds * 1e3,
            "samples_ms": [s * 1e3 for s in samples[framework]],
            "median_cpu_ms": statistics.median(cpu_samples[framework]) * 1e3,  # all threads
            "steps_per_sample": counts[framework],
            "compile_s": runner.compile_seconds,
            "init_compile_s": runner.init_compile_seconds,
            "xla_flops": runner.flops,
            "gflops_per_s": flops / seconds / 1e9 if flops else None,
        }
    log(f"  {workload.name}: " + ", ".join(
        f"{f} {result['frameworks'][f]['median_ms']:.2f} ms" for f in frameworks))
    return result


def measure_dispatch(rounds: int, steps: tuple = (1, 10, 100), log=print) -> dict:
    """Per-step time of a tiny MLP (dispatch-bound) with K steps per jitted call."""
    tiny = Workload("tiny_mlp", "MLP 64-32-10, batch 32", "mlp", {"hidden_sizes": (32,)}, 32, (64,))
    runners = {}
    for k in steps:
        x, y = batch(tiny)
        if k > 1:
            x, y = np.stack([x] * k), np.stack([y] * k)
        runners[k] = zoo_runner(tiny, x, y, steps_per_call=k)
        runners[k].run(1)
    samples = {k: [] for k in steps}
    for _ in range(rounds):
        for k in steps:
            calls = max(1, 2000 // k)
            samples[k].append(_timed(runners[k].run, calls)[0] / k)
    per_step = {k: statistics.median(v) * 1e6 for k, v in samples.items()}
    log("  tiny MLP per step: " + ", ".join(f"K={k} {us:.1f} us" for k, us in per_step.items()))
    return {"description": tiny.description, "per_step_us": {str(k): v for k, v in per_step.items()}}


def cpu_isa(flags: set) -> str:
    """The widest x86 vector/matrix extensions among /proc/cpuinfo's flags: what XLA's and PyTorch's
    CPU kernels pick their code paths by (ratios differ between an AVX2 and an AVX-512 machine)."""
    isa = [name for name, flag in (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AVX-512 BF16", "avx512_bf16"),
                                   ("AMX", "amx_tile")) if flag in flags]
    return " + ".join(isa) if isa else "no AVX2"


def cpu_info() -> tuple[str, set]:
    """(the first CPU's model name, its /proc/cpuinfo flags); the platform's name and no flags elsewhere."""
    cpu = platform.processor() or platform.machine()
    flags: set = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == (platform.processor() or platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return cpu, flags


def machine() -> dict:
    cpu, flags = cpu_info()
    versions = {"python": platform.python_version(), "jax": jax.__version__}
    for package in ("jaxlib", "flax", "optax", "numpy", "torch"):
        try:
            versions[package] = __import__(package).__version__
        except ImportError:
            versions[package] = None
    return {"cpu": cpu, "isa": cpu_isa(flags) if flags else None, "cores": os.cpu_count(), "platform": platform.platform(),
            "jax_devices": [str(d) for d in jax.devices()], "versions": versions}


def workload_xla_options(workload: Workload) -> dict:
    """The compiler options the zoo's jitted step gets for this workload (its family's defaults)."""
    from zoo import models
    from zoo.training import step as step_lib

    family = models.get_entry(workload.model).family
    return step_lib.compiler_options(family=family)


def run_benchmark(names, rounds: int, round_seconds: float, dispatch: bool = True, log=print,
                  precision: str = "float32", torch_compile: bool = True) -> dict:
    """Measures the named workloads (and the multi-step dispatch table); returns the JSON-able result,
    with the load average and matmul ceiling at start and end and other processes' CPU share."""
    frameworks = ["zoo", "flax"]
    threads = None
    if torch_available():
        import torch

        threads = os.cpu_count()
        torch.set_num_threads(threads)
        frameworks += ["torch", "compile"] if torch_compile else ["torch"]
    else:
        log("PyTorch is not installed: only the zoo and plain Flax columns are measured. "
            "Install the bench extra (pip install -e '.[bench]', i.e. torch==2.13.0) for the PyTorch columns.")
    load_start = os.getloadavg()
    monitor = Monitor(matmul_gflops())
    ceiling_start = statistics.median(monitor.ceiling_samples)
    log(f"start: load average (1 min) {load_start[0]:.2f}, float32 matmul ceiling {ceiling_start:.0f} GFLOP/s")
    results = []
    for name in names:
        log(f"{name}: zoo XLA options {workload_xla_options(WORKLOADS[name])}")
        results.append(measure_workload(WORKLOADS[name], frameworks, rounds, round_seconds, monitor, log, precision))
    end_samples = matmul_gflops()
    monitor.ceiling_samples.extend(end_samples)
    ceiling = statistics.median(monitor.ceiling_samples)
    other = monitor.other_cpu_share()
    log(f"end: load average (1 min) {os.getloadavg()[0]:.2f}, float32 matmul ceiling "
        f"{statistics.median(end_samples):.0f} GFLOP/s; other processes used "
        f"{'an unknown share' if other is None else f'{other:.0%}'} of the CPU while the columns were timed")
    for result in results:
        for entry in result["frameworks"].values():
            entry["fraction_of_matmul"] = entry["gflops_per_s"] / ceiling if entry["gflops_per_s"] else None
    return {
        "date": utc_timestamp(),
        "machine": machine(),
        "xla_options": {name: workload_xla_options(WORKLOADS[name]) for name in names},
        "torch_threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "host_allocator": host.describe(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "other_cpu_share": other,
        "rounds": rounds,
        "precision": precision,
        "matmul_ceiling_gflops": ceiling,
        "matmul_ceiling_gflops_start_end": [ceiling_start, statistics.median(end_samples)],
        "matmul_samples_gflops": monitor.ceiling_samples,
        "workloads": results,
        "dispatch": measure_dispatch(max(3, rounds // 2), log=log) if dispatch else None,
    }


# ---------------------------------------------------------------------------------------------------
# Reporting.


def _ratio(result, a, b):
    frameworks = result["frameworks"]
    if a in frameworks and b in frameworks:
        return frameworks[a]["median_ms"] / frameworks[b]["median_ms"]
    return None


def _fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def table_rows(report: dict) -> tuple[list, list]:
    header = ["workload", "GFLOP/step", "zoo ms", "plain Flax ms", "PyTorch ms", "torch.compile ms",
              "before: Flax/PyTorch", "after: zoo/PyTorch", "zoo/torch.compile", "zoo compile s", "zoo init compile s", "Flax compile s",
              "torch.compile compile s", "zoo GFLOP/s (of matmul)", "PyTorch GFLOP/s (of matmul)"]
    rows = []
    for result in report["workloads"]:
        fw = result["frameworks"]
        ms = lambda f: _fmt(fw.get(f, {}).get("median_ms"), ".2f")  # noqa: E731
        compile_s = lambda f: _fmt(fw.get(f, {}).get("compile_s"), ".2f")  # noqa: E731
        rate = lambda f: "-" if f not in fw or fw[f]["gflops_per_s"] is None else (  # noqa: E731
            f"{fw[f]['gflops_per_s']:.0f} ({fw[f]['fraction_of_matmul']:.0%})")
        rows.append([
            result["workload"], _fmt(result["flops_per_step"] and result["flops_per_step"] / 1e9, ".2f"),
            ms("zoo"), ms("flax"), ms("torch"), ms("compile"),
            _fmt(_ratio(result, "flax", "torch"), ".2f"), _fmt(_ratio(result, "zoo", "torch"), ".2f"),
            _fmt(_ratio(result, "zoo", "compile"), ".2f"),
            compile_s("zoo"), _fmt(fw.get("zoo", {}).get("init_compile_s"), ".2f"), compile_s("flax"),
            compile_s("compile"), rate("zoo"), rate("torch"),
        ])
    return header, rows


def text_table(header, rows) -> str:
    widths = [max(len(str(v)) for v in column) for column in zip(header, *rows)]
    line = lambda row: "  ".join(str(v).rjust(w) if i else str(v).ljust(w)  # noqa: E731
                                 for i, (v, w) in enumerate(zip(row, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def conditions(report: dict) -> str:
    """One line: the load average and matmul ceiling at start and end, and other processes' CPU share."""
    load, cores = report["load_average"], report["machine"]["cores"]
    ceilings = report.get("matmul_ceiling_gflops_start_end") or [report["matmul_ceiling_gflops"]] * 2
    other = report.get("other_cpu_share")
    return (f"load average (1 min) at start / end {load['start'][0]:.1f} / {load['end'][0]:.1f} on {cores} cores "
            f"(the end includes the benchmark's own threads); float32 matmul ceiling at start / end "
            f"{ceilings[0]:.0f} / {ceilings[1]:.0f} GFLOP/s; other processes used "
            + ("an unknown share" if other is None else f"{other:.0%}") + " of the CPU while the columns were timed")


def _setup_lines(report: dict) -> list[str]:
    """The bullet lines on the machine, versions, threads and load of a report."""
    m = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    return [
        f"- Machine: {m['cpu']}, {m['cores']} cores, ISA {m.get('isa') or 'unknown'} ({m['platform']}); "
        f"JAX devices: {', '.join(m['jax_devices'])}",
        "- zoo XLA options (zoo.training.step.compiler_options, per model family): "
        + "; ".join(f"{name} {opts or '{}'}" for name, opts in (report.get("xla_options") or {}).items()),
        f"- Versions: {versions}",
        f"- PyTorch threads: {report['torch_threads']} (torch.set_num_threads = the machine's cores), "
        f"OMP_WAIT_POLICY={report['omp_wait_policy']} (PASSIVE unless set: OpenMP's default spinning "
        "collapses under other load); XLA uses every core by default." if report["torch_threads"]
        else "- PyTorch: not installed.",
        f"- Host memory allocator, for every column (one process): {report.get('host_allocator', 'not recorded')}; "
        "what a step frees is reused by the next without page faults (zoo/host.py).",
        f"- Machine load: {conditions(report)}. Other processes slow every column (PyTorch's OpenMP "
        "threads most); the committed record is written only when the machine was quiet (bench.py's QUIET_*).",
        f"- float32 matmul ceiling (2048x2048 jnp.dot, median of {len(report['matmul_samples_gflops'])} "
        f"samples through the run): {report['matmul_ceiling_gflops']:.0f} GFLOP/s",
    ]


def markdown(report: dict, command: str) -> str:
    header, rows = table_rows(report)
    precision = report.get("precision", "float32")
    lines = [
        "# Training-step benchmark: zoo vs plain Flax vs PyTorch eager and torch.compile"
        + ("" if precision == "float32" else f" (zoo in {precision})"),
        "",
        f"Written by `{command}` on {report['date']}.",
        "",
        *_setup_lines(report),
        f"- One step = forward + backward + Adam (lr {LEARNING_RATE}), float32, one fixed batch; median of "
        f"{report['rounds']} interleaved rounds (the order rotates each round)."
        + ("" if precision == "float32" else
           f" The zoo column computes in {precision} (model.precision: float32 parameters and Adam state, "
           f"{precision} layers, float32 loss; bfloat16 is emulated on CPUs without it); plain Flax and "
           "PyTorch stay float32."),
        "- **before**: a plain Flax Linen model (nn.max_pool, nn.RNN(nn.LSTMCell), "
        "nn.MultiHeadDotProductAttention) with a plain optax step; **after**: the zoo's registry model "
        "and its own jitted train step (zoo.training.step). Ratios below 1 mean faster than PyTorch.",
        "- **torch.compile**: the PyTorch model under `torch.compile` (inductor's defaults, C++ kernels "
        "built with the machine's compiler, a new empty on-disk cache and emptied in-memory caches for "
        "each workload: a first compile of that model); loss, backward and Adam as in the eager column. "
        "Its compile time is its first step's less a later step's; inductor's start-up in the process "
        "lands on run 1's first workload only. Dynamo leaves `nn.LSTM` to eager by default (torch._dynamo.config.allow_rnn is off).",
        "- FLOPs: XLA's cost analysis of the zoo's compiled step; for the LSTM (a scan, which hides "
        "them) 3x the forward matmul FLOPs. zoo and Flax compile: lower + compile of the first call; zoo init "
        "compile: lower + compile of the train state's initialization (zoo.training.step.jit_init).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    lines += ["", "Workloads:", ""]
    lines += [f"- `{r['workload']}`: {r['description']}" for r in report["workloads"]]
    if report.get("dispatch"):
        d = report["dispatch"]
        lines += ["", f"## Many steps per call ({d['description']}, dispatch-bound)", "",
                  "| steps per jitted call (train.steps_per_call) | time per step |", "|---|---|"]
        lines += [f"| {k} | {us:.1f} µs |" for k, us in d["per_step_us"].items()]
    lines.append("")
    return "\n".join(lines)


def repeat_markdown(report: dict, index: int, count: int) -> str:
    """A later run of the same command: its date, load, matmul ceiling and table."""
    header, rows = table_rows(report)
    lines = [f"## Run {index} of {count} (same command, right after run {index - 1})", "",
             f"- Ended {report['date']}; {conditions(report)}; float32 matmul ceiling (median through the run) "
             f"{report['matmul_ceiling_gflops']:.0f} GFLOP/s.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines + [""])


def write_outputs(reports: dict | list[dict], command: str, out_dir: str | Path) -> tuple[Path, Path]:
    """RESULTS.md and results.json (one report, or the runs of --repeat: the first in full, then a
    table per later run); another precision than float32 writes RESULTS_<precision>.md and
    results_<precision>.json beside them (the float32 tables stay)."""
    reports = [reports] if isinstance(reports, dict) else list(reports)
    report = reports[0]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    precision = report.get("precision", "float32")
    suffix = "" if precision == "float32" else f"_{precision}"
    md, js = out_dir / f"RESULTS{suffix}.md", out_dir / f"results{suffix}.json"
    text = markdown(report, command)
    if len(reports) > 1:
        text = text.replace("\n| workload |", f"\n## Run 1 of {len(reports)}\n\n| workload |", 1)
        text += "\n" + "\n".join(repeat_markdown(r, i + 2, len(reports)) for i, r in enumerate(reports[1:]))
    md.write_text(text)
    extra = {"repeats": reports[1:]} if len(reports) > 1 else {}
    js.write_text(json.dumps({**report, "command": command, **extra}, indent=2) + "\n")
    return md, js


def default_out_dir() -> Path:
    """Where results go unless --out says: a new run-style folder, runs/bench/<UTC time>/ (relative to the
    working directory); the committed benchmarks/RESULTS.md is written only when asked (--out benchmarks)."""
    return Path("runs") / "bench" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def is_committed(out) -> bool:
    """Whether `out` is the committed record's folder (benchmarks/ of this checkout)."""
    return bool(out) and Path(out).resolve() == COMMITTED.resolve()


def start_load_problem(load_1min: float, cores: int) -> str | None:
    """Why the machine is too loaded to start the committed record (None: quiet enough)."""
    limit = QUIET_LOAD_PER_CORE * cores
    if load_1min > limit:
        return f"the 1-minute load average is {load_1min:.2f} on {cores} cores (at most {limit:.2f})"
    return None


def quiet_machine_problem(reports: list[dict]) -> str | None:
    """Why a finished run is unfit for the committed record: other processes took more than
    QUIET_OTHER_CPU_SHARE of the CPU while the columns were timed, or the matmul ceiling fell below
    QUIET_CEILING_KEPT of the start's (None: quiet enough)."""
    for report in reports:
        other = report.get("other_cpu_share")
        if other is not None and other > QUIET_OTHER_CPU_SHARE:
            return (f"other processes used {other:.0%} of the CPU while the columns were timed "
                    f"(at most {QUIET_OTHER_CPU_SHARE:.0%})")
        start, end = report["matmul_ceiling_gflops_start_end"]
        if end < QUIET_CEILING_KEPT * start:
            return (f"the float32 matmul ceiling fell from {start:.0f} to {end:.0f} GFLOP/s during the run "
                    f"(at least {QUIET_CEILING_KEPT:.0%} of the start's)")
    return None


def write_speed_doc(report: dict, command: str, doc: Path = SPEED_DOC) -> bool:
    """Replaces the table between TABLE_MARKERS in docs/speed.md with `report`'s (False: no markers)."""
    text = doc.read_text() if doc.is_file() else ""
    start, end = TABLE_MARKERS
    if start not in text or end not in text.split(start, 1)[1]:
        return False
    header, rows = table_rows(report)
    table = [f"`{command}`, {report['date']}, {report['machine']['cpu']}, {report['machine']['cores']} cores, "
             f"ISA {report['machine'].get('isa')}, {report['rounds']} rounds; {conditions(report)}.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
             *("| " + " | ".join(map(str, row)) + " |" for row in rows)]
    before, rest = text.split(start, 1)
    doc.write_text(before + start + "\n" + "\n".join(table) + "\n" + end + rest.split(end, 1)[1])
    return True


def write_results(reports: list[dict], command: str, out) -> int:
    """Writes the results where `out` says; the committed record only from a quiet machine (else to a
    new runs/bench/<time>/ folder, saying so in one line, status 2)."""
    status = 0
    if is_committed(out):
        problem = quiet_machine_problem(reports)
        if problem:
            out, status = default_out_dir(), 2
            print(f"bench: not writing the committed record {COMMITTED}: {problem}; "
                  f"the results go to {out} instead", file=sys.stderr)
        elif not write_speed_doc(reports[0], command):
            print(f"bench: {SPEED_DOC} has no bench table markers: its table was not rewritten", file=sys.stderr)
    if out:
        md, js = write_outputs(reports, command, Path(out))
        print(f"wrote {md} and {js}")
    return status


def main(argv=None) -> int:
    """Times the workloads, prints the table, writes RESULTS.md and results.json."""
    import shlex

    parser = argparse.ArgumentParser(prog="benchmarks/bench.py", description=main.__doc__)
    parser.add_argument("--workloads", help=f"comma-separated subset of {','.join([*WORKLOADS, 'dispatch'])}")
    parser.add_argument("--quick", action="store_true", help="3 short rounds instead of 9")
    parser.add_argument("--rounds", type=int, help="interleaved timing rounds (default 9, or 3 with --quick)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the whole benchmark N times in a row; RESULTS.md gets one table per run")
    parser.add_argument("--out", help="where RESULTS.md and results.json go (default: runs/bench/<UTC time>/, a new "
                        "folder; --out benchmarks rewrites the committed record; '' for none)")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                        help="the zoo model's compute precision (model.precision); other columns stay float32")
    parser.add_argument("--no-torch-compile", action="store_true",
                        help="leave out the torch.compile column (its first compiles take ~2 min in all)")
    parser.add_argument("--command", help=argparse.SUPPRESS)  # how the caller was invoked, for RESULTS.md
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.workloads.split(",") if n.strip()] if args.workloads else list(WORKLOADS)
    dispatch = "dispatch" in names or not args.workloads
    names = [n for n in names if n != "dispatch"]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        print(f"bench: error: unknown workload '{unknown[0]}': choose from {', '.join([*WORKLOADS, 'dispatch'])}",
              file=sys.stderr)
        return 2
    rounds = args.rounds or (3 if args.quick else 9)
    if args.repeat < 1:
        print(f"bench: error: --repeat {args.repeat} must be at least 1", file=sys.stderr)
        return 2
    problem = start_load_problem(os.getloadavg()[0], os.cpu_count() or 1) if is_committed(args.out) else None
    if problem:
        print(f"bench: error: not writing the committed record {COMMITTED} from a loaded machine: {problem}; "
              "run it when the machine is quiet, or give another --out", file=sys.stderr)
        return 2
    reports = []
    for run_index in range(args.repeat):
        if args.repeat > 1:
            print(f"run {run_index + 1} of {args.repeat}", file=sys.stderr, flush=True)
        reports.append(run_benchmark(names, rounds, 0.1 if args.quick else 0.3, dispatch=dispatch,
                                     log=lambda line: print(line, file=sys.stderr, flush=True),
                                     precision=args.precision, torch_compile=not args.no_torch_compile))
        print(text_table(*table_rows(reports[-1])))
    report = reports[0]
    command = args.command or shlex.join(["python", "benchmarks/bench.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"float32 matmul ceiling: {report['matmul_ceiling_gflops']:.0f} GFLOP/s; "
          f"PyTorch threads: {report['torch_threads'] or 'not installed'}")
    return write_results(reports, command, default_out_dir() if args.out is None else args.out)


if __name__ == "__main__":
    sys.exit(main())
