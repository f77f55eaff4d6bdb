"""Population training against sequential runs: wall time of N seeds as one population vs N runs one
after another, the same steps, compile included; compile seconds and memory per member.

    python benchmarks/population.py [--members 8] [--rounds 3] [--workloads mlp,cnn,gru,resnet20,transformer]
                                    [--datasets digits,mnist1d] [--steps 200] [--no-cache] [--out DIR]

Each workload is the committed compare config of its dataset (configs/<dataset>/<model>.yaml) with
`--steps` steps, evaluated and checkpointed once, at the end. A round trains the N seeds both ways in
a fresh directory, the order of the two alternating between rounds (interleaved A/B: the machine
may be shared); the table gives medians over the rounds and the median of the per-round ratios, with
the load average seen around each. Like `zoo train` and `zoo compare`, both sides use JAX's
persistent compilation cache (a fresh, empty one per round: the sequential runs 2..N find the train
step the first compiled; the population compiles once); `--no-cache` compiles everything afresh.

The "training steps alone" ratio is that of the seconds spent in the train steps only (the runs'
`train_seconds`: no compilation, evaluation or checkpoint), the population's against the sum of the
runs'. Memory per member: XLA's memory analysis of the compiled 1-step train program (arguments,
temporaries and outputs not written over donated arguments), the population's divided by N, beside
a run alone's.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the zoo of this checkout

WORKLOADS = {"mlp": "mlp", "cnn": "cnn", "gru": {"digits": "rnn", "mnist1d": "gru"}, "resnet20": "resnet",
             "transformer": "transformer"}


def workload_config(dataset: str, workload: str, steps: int):
    """The compare config of `workload` on `dataset`, `steps` long, evaluated and saved at the end only."""
    from zoo import config as config_lib

    name = WORKLOADS[workload]
    name = name[dataset] if isinstance(name, dict) else name
    overrides = [f"train.steps={steps}", "train.epochs=null", "train.eval_every=0", f"train.log_every={steps}",
                 f"checkpoint.every={steps}"]
    return config_lib.load(REPO / "configs" / dataset / f"{name}.yaml", overrides)


CACHE = Path(tempfile.mkdtemp(prefix="zoo_population_cache_"))  # JAX reads its cache directory once


@contextlib.contextmanager
def compile_cache(enabled: bool):
    """An empty persistent compilation cache for one side of a round (or none): JAX keeps the directory
    it first read for the whole process, so its entries are removed before each side."""
    import jax

    for entry in CACHE.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    if enabled:
        jax.config.update("jax_compilation_cache_dir", str(CACHE))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    yield


def sequential(configs, dataset, root: Path) -> dict:
    from zoo.training import fit

    start = time.perf_counter()
    results = [fit(config, root / f"seed{config.seed}", dataset=dataset) for config in configs]
    return {"seconds": time.perf_counter() - start, "compile": sum(r["compile_seconds"] for r in results),
            "train": sum(r["train_seconds"] for r in results), "loss": [r["final"]["test_loss"] for r in results]}


def population(configs, dataset, root: Path) -> dict:
    from zoo.training.population import fit_population

    start = time.perf_counter()
    results = fit_population(configs, [root / f"seed{config.seed}" for config in configs], dataset=dataset,
                             max_mib=None)
    info = results[0]["population"]
    return {"seconds": time.perf_counter() - start, "compile": info["compile_seconds"], "train": info["train_seconds"],
            "memory_per_member": info["memory_bytes_per_member"], "loss": [r["final"]["test_loss"] for r in results]}


def memory_alone(config, dataset) -> int | None:
    """XLA's memory analysis of a run alone's compiled 1-step train program."""
    import jax
    import numpy as np

    from zoo.training import step as step_lib
    from zoo.training.population_step import _memory_bytes
    from zoo.training.setup import build_setup

    setup = build_setup(config, dataset)
    batch = config.data.batch_size
    x = np.zeros((batch, *setup.dataset.x_train.shape[1:]), setup.dataset.x_train.dtype)
    y = np.zeros((batch, *np.shape(setup.dataset.y_train)[1:]), np.asarray(setup.dataset.y_train[:1]).dtype)
    jitted = jax.jit(setup.train_step(), donate_argnums=0, compiler_options=step_lib.compiler_options(
        config.train.deterministic, family=setup.model.info.family, options=config.train.xla_options) or None)
    return _memory_bytes(jitted.lower(setup.abstract_state(), x, y).compile())


def measure(dataset_name: str, workload: str, args) -> dict:
    """Rounds of (sequential, population) for one workload, alternating which goes first."""
    from zoo import data as data_lib

    base = workload_config(dataset_name, workload, args.steps)
    configs = [dataclasses.replace(base, seed=seed) for seed in range(args.members)]
    dataset = data_lib.load(base.data, base.task)
    rounds = []
    for index in range(args.rounds):
        order = [("sequential", sequential), ("population", population)]
        if index % 2:
            order.reverse()
        row = {"load_before": os.getloadavg()[0]}
        with tempfile.TemporaryDirectory(prefix="zoo_population_bench_") as root:
            for name, run in order:
                with compile_cache(not args.no_cache):
                    row[name] = run(configs, dataset, Path(root) / name)
        row["load_after"] = os.getloadavg()[0]
        row["ratio"] = row["sequential"]["seconds"] / row["population"]["seconds"]
        rounds.append(row)
        print(f"  {dataset_name} {workload} round {index + 1}: sequential {row['sequential']['seconds']:.1f} s, "
              f"population {row['population']['seconds']:.1f} s, x{row['ratio']:.2f} (load "
              f"{row['load_before']:.1f} -> {row['load_after']:.1f})", file=sys.stderr, flush=True)
    median = lambda values: statistics.median(values)  # noqa: E731
    return {"dataset": dataset_name, "workload": workload, "members": args.members, "steps": args.steps,
            "sequential_s": median([r["sequential"]["seconds"] for r in rounds]),
            "population_s": median([r["population"]["seconds"] for r in rounds]),
            "ratio": median([r["ratio"] for r in rounds]),
            "sequential_compile_s": median([r["sequential"]["compile"] for r in rounds]),
            "population_compile_s": median([r["population"]["compile"] for r in rounds]),
            "train_ratio": median([r["sequential"]["train"] / r["population"]["train"] for r in rounds]),
            "memory_per_member": rounds[0]["population"]["memory_per_member"],
            "memory_alone": memory_alone(base, dataset),
            "max_loss_difference": max(abs(a - b) / abs(b) for r in rounds
                                       for a, b in zip(r["population"]["loss"], r["sequential"]["loss"])),
            "load": [round(r["load_before"], 1) for r in rounds] + [round(rounds[-1]["load_after"], 1)],
            "rounds": rounds}


def cpu_name() -> str:
    """The CPU's model name and ISA class (ratios move between AVX2 and AVX-512 machines)."""
    from bench import cpu_info, cpu_isa

    name, flags = cpu_info()
    return f"{name} ({cpu_isa(flags) if flags else 'ISA unknown'})"


def table(rows: list[dict]) -> str:
    mib = lambda b: "-" if b is None else f"{b / 2**20:.1f}"  # noqa: E731
    lines = ["| dataset | workload | sequential s | population s | ratio | compile s (seq / pop) | training steps "
             "alone: ratio | MiB per member (pop / alone) | max rel. test-loss diff | load |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['workload']} | {r['sequential_s']:.1f} | {r['population_s']:.1f} | "
                     f"{r['ratio']:.2f} | {r['sequential_compile_s']:.1f} / {r['population_compile_s']:.1f} | "
                     f"{r['train_ratio']:.2f} | "
                     f"{mib(r['memory_per_member'])} / {mib(r['memory_alone'])} | {r['max_loss_difference']:.1e} | "
                     f"{' '.join(map(str, r['load']))} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--workloads", default="mlp,cnn,gru,resnet20,transformer")
    parser.add_argument("--datasets", default="digits,mnist1d")
    parser.add_argument("--no-cache", action="store_true", help="no persistent compilation cache")
    parser.add_argument("--out", help="where POPULATION.md and population.json go (default runs/bench_population/<time>)")
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)
    import jax

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out or REPO / "runs" / "bench_population" / stamp)
    out.mkdir(parents=True, exist_ok=True)
    header = (f"{args.members} seeds, {args.steps} steps each, {args.rounds} interleaved rounds (medians); "
              f"{cpu_name()}, {os.cpu_count()} cores, jax {jax.__version__}, "
              f"{'no compilation cache' if args.no_cache else 'an empty persistent compilation cache per side'}; "
              f"command: python benchmarks/population.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    rows = []
    for dataset in args.datasets.split(","):
        for workload in args.workloads.split(","):
            rows.append(measure(dataset, workload, args))
            text = f"{header}\n\n{table(rows)}\n"  # rewritten after each workload: a stopped run keeps its rows
            (out / "POPULATION.md").write_text(text)
            (out / "population.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    print(text)
    shutil.rmtree(CACHE, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
