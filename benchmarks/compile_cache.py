"""First vs cached compile of `zoo train`, per family (a script, not a test; issue 25).

    python benchmarks/compile_cache.py                      # 3 rounds, every family, digits
    python benchmarks/compile_cache.py --rounds 5 --families cnn,resnet --out benchmarks/COMPILE_CACHE.md

Each round, for each family in turn (interleaved), gives the family a new, empty $ZOO_CACHE_DIR and
runs the same `zoo train` twice as separate processes: the first compiles and fills the cache, the
second finds its compiles there. Reported: the train step's compile seconds as the run records them
(result.json `compile_seconds`: lowering + compile of the jitted step, or its load from the cache)
and each process's wall seconds (start-up, data, every compile, 20 training steps, evaluation,
checkpoints), medians over the rounds, and the median of the per-round ratios cached / first.
Everything lives in a temporary directory deleted at the end; the machine's load is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MODELS = {  # the default model of each family, as configs/digits/ train them
    "mlp": {"name": "mlp"},
    "cnn": {"name": "cnn"},
    "rnn": {"name": "gru"},
    "resnet": {"name": "resnet20"},
    "transformer": {"name": "transformer"},
}


def machine() -> str:
    flags = open("/proc/cpuinfo").read()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{os.cpu_count()} cores, {isa}"


def load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def train(config: Path, workdir: Path, cache: Path) -> dict:
    """One `zoo train` process with `cache` as $ZOO_CACHE_DIR: compile and wall seconds."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("JAX_COMPILATION_CACHE")}
    env.update({"ZOO_CACHE_DIR": str(cache), "JAX_PLATFORMS": env.get("JAX_PLATFORMS", "cpu")})
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "zoo.cli", "train", str(config), "--workdir", str(workdir)],
                          cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"zoo train failed:\n{done.stderr}")
    result = json.loads((workdir / "result.json").read_text())
    return {"compile": result["compile_seconds"], "wall": wall}


def write_config(root: Path, family: str) -> Path:
    path = root / f"{family}.yaml"
    path.write_text(yaml.safe_dump({
        "name": f"cache_{family}", "data": {"name": "digits", "batch_size": 64}, "model": MODELS[family],
        "train": {"steps": 20, "log_every": 10}, "checkpoint": {"every": 20}}))
    return path


def measure(families: list[str], rounds: int, root: Path) -> dict:
    """{family: [{'first': {...}, 'cached': {...}}, ...]}, the families interleaved in every round."""
    results = {family: [] for family in families}
    configs = {family: write_config(root, family) for family in families}
    for round_ in range(rounds):
        for family in families:
            cache = root / f"cache_{family}_{round_}"
            first = train(configs[family], root / f"run_{family}_{round_}_a", cache)
            cached = train(configs[family], root / f"run_{family}_{round_}_b", cache)
            results[family].append({"first": first, "cached": cached})
            print(f"round {round_ + 1} {family}: compile {first['compile']:.2f} -> {cached['compile']:.2f} s, "
                  f"wall {first['wall']:.1f} -> {cached['wall']:.1f} s (load {load()})", file=sys.stderr)
    return results


def table(results: dict) -> str:
    rows = ["| family (model) | first compile | cached compile | cached / first | first wall | cached wall |",
            "|---|---|---|---|---|---|"]
    for family, runs in results.items():
        median = lambda which, key: statistics.median(r[which][key] for r in runs)  # noqa: E731
        ratio = statistics.median(r["cached"]["compile"] / r["first"]["compile"] for r in runs)
        rows.append(f"| {family} ({MODELS[family]['name']}) | {median('first', 'compile'):.2f} s | "
                    f"{median('cached', 'compile'):.2f} s | {ratio:.2f} | {median('first', 'wall'):.1f} s | "
                    f"{median('cached', 'wall'):.1f} s |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--families", default=",".join(MODELS))
    parser.add_argument("--out", help="also write the table (with machine and load) to this markdown file")
    args = parser.parse_args()
    families = [f for f in args.families.split(",") if f]
    root = Path(tempfile.mkdtemp(prefix="zoo-compile-cache-"))
    try:
        before = load()
        results = measure(families, args.rounds, root)
        text = (f"`python benchmarks/compile_cache.py --rounds {args.rounds} --families {','.join(families)}`, "
                f"{machine()}, load average {before} before, {load()} after; medians of {args.rounds} rounds\n\n"
                f"{table(results)}\n")
        print(text)
        if args.out:
            Path(args.out).write_text(text)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
