"""Data pipeline benchmarks (a script, not a test): results go to benchmarks/DATA.md by hand.

    python benchmarks/data_pipeline.py pngs     # 20,000 generated 32x32 PNGs: images/s with 0, 1, 2
                                                # workers, and the share of a CNN step spent waiting
    python benchmarks/data_pipeline.py mmap     # a 2 GiB .npy, memory-mapped, trains an MLP: peak RSS
    python benchmarks/data_pipeline.py feed --before DIR     # in-memory digits: us per batch, old vs Grain
    python benchmarks/data_pipeline.py digits --before DIR   # digits CNN ms/step and the make-demo
                                                # compare, this tree vs an older tree DIR, interleaved

Everything generated lives in a temporary directory deleted at the end.
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's zoo, whichever is installed


def machine() -> str:
    flags = open("/proc/cpuinfo").read()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{os.cpu_count()} cores, {isa}, shared and noisy"


def generate_pngs(root: Path, count: int, classes: int = 10) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        label = i % classes
        image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        image[label * 3:label * 3 + 3] = 255
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")


def bench_pngs(args) -> dict:
    import jax

    from zoo import data
    from zoo.training import setup as setup_lib
    from zoo.config import from_dict
    from zoo.data.pipeline import BatchIterator
    from zoo.training import loop, step as step_lib

    tmp = Path(tempfile.mkdtemp(prefix="zoo_bench_pngs_"))
    out = {"machine": machine(), "images": args.count}
    try:
        start = time.perf_counter()
        generate_pngs(tmp / "pngs", args.count)
        out["generate_s"] = time.perf_counter() - start
        config = from_dict({"data": {"name": "image_folder", "path": str(tmp / "pngs"), "test": 0.1,
                                     "batch_size": args.batch, "validation": 0.05},
                            "model": {"name": "cnn", "features": [32, 64], "hidden": 128},
                            "train": {"steps": 100}})
        start = time.perf_counter()
        raw = data.load(config.data)
        out["open_and_check_s"] = time.perf_counter() - start
        start = time.perf_counter()
        run = setup_lib.build_setup(config, raw)
        out["statistics_s"] = time.perf_counter() - start
        x, y = run.dataset.x_train, run.dataset.y_train
        feed = {}
        for workers in (0, 1, 2):
            batches = BatchIterator(x, y, args.batch, seed=0, workers=workers)
            next(batches)  # worker start-up is paid once per run
            start = time.perf_counter()
            for _ in range(args.batches):
                next(batches)
            feed[workers] = args.batches * args.batch / (time.perf_counter() - start)
            batches.close()
        out["images_per_s"] = feed
        train_step = step_lib.jit_train_step(run.model, run.tx, run.spec.num_classes, 0.0, run.mesh)
        waiting = {}
        for workers in (0, 1, 2):
            state = run.init_state()
            batches = BatchIterator(x, y, args.batch, seed=0, workers=workers)
            xb, yb = next(batches)
            state, metrics = train_step(state, xb, yb)  # compile
            jax.block_until_ready(metrics)
            wait = total = 0.0
            for _ in range(args.steps):
                t0 = time.perf_counter()
                xb, yb = next(batches)
                t1 = time.perf_counter()
                state, metrics = train_step(state, step_lib.put_batch(run.mesh, xb), step_lib.put_batch(run.mesh, yb))
                jax.block_until_ready(metrics)
                t2 = time.perf_counter()
                wait, total = wait + t1 - t0, total + t2 - t0
            waiting[workers] = {"wait_fraction": wait / total, "ms_per_step": 1000 * total / args.steps}
            batches.close()
        out["cnn_step"] = waiting
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def generate_npy(folder: Path, gib: int) -> None:
    """x_train.npy of `gib` GiB (rows of 1024 float32, a learnable bump at column 50 * label) and a
    small test split, written through a memory map."""
    rows, width = gib * (1 << 30) // (1024 * 4), 1024
    x = np.lib.format.open_memmap(folder / "x_train.npy", mode="w+", dtype=np.float32, shape=(rows, width))
    labels = np.arange(rows) % 10
    step = 1 << 15
    for start in range(0, rows, step):
        chunk = np.random.default_rng(start).normal(size=(min(step, rows - start), width)).astype(np.float32)
        chunk[np.arange(len(chunk)), labels[start:start + step] * 50] += 3.0
        x[start:start + len(chunk)] = chunk
    x.flush()
    np.save(folder / "y_train.npy", labels)
    test = np.random.default_rng(1).normal(size=(2000, width)).astype(np.float32)
    test_labels = np.arange(2000) % 10
    test[np.arange(2000), test_labels * 50] += 3.0
    np.save(folder / "x_test.npy", test), np.save(folder / "y_test.npy", test_labels)


def bench_mmap(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="zoo_bench_mmap_"))
    out = {"machine": machine()}
    try:
        # Generated in a process of its own: a child forked from a process that wrote 2 GiB through a
        # memory map would count those pages in its own peak RSS.
        subprocess.run([sys.executable, __file__, "generate-npy", str(tmp), "--gib", str(args.gib)], check=True)
        out["npy_bytes"] = (tmp / "x_train.npy").stat().st_size
        config = tmp / "config.yaml"
        config.write_text(json.dumps({
            "name": "mmap", "data": {"name": "npz", "path": str(tmp), "batch_size": 256, "validation": 0.01},
            "model": {"name": "mlp", "hidden_sizes": [256]}, "train": {"steps": args.steps, "log_every": 100},
            "checkpoint": {"every": args.steps}}))
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "zoo.cli", "train", str(config), "--workdir", str(tmp / "run")],
                                 cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        stdout = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
        out["wall_s"] = time.perf_counter() - start
        out["returncode"] = os.waitstatus_to_exitcode(status)
        out["stdout"] = stdout.strip().splitlines()[-1:]
        out["peak_rss_mib"] = usage.ru_maxrss / 1024
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _timed(command: list[str], cwd: Path) -> float:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(cwd)}
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def _cnn_ms_per_step(tree: Path, workdir: Path) -> float:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, "-m", "zoo.cli", "train", "configs/digits/cnn.yaml", "--workdir", str(workdir)],
                   cwd=tree, env=env, check=True, capture_output=True)
    return json.loads((workdir / "result.json").read_text())["ms_per_step"]


def bench_digits(args) -> dict:
    trees = {"before": Path(args.before).resolve(), "after": REPO}
    tmp = Path(tempfile.mkdtemp(prefix="zoo_bench_digits_"))
    cnn, demo = {k: [] for k in trees}, {k: [] for k in trees}
    try:
        for round_ in range(args.rounds):
            for name, tree in (trees.items() if round_ % 2 == 0 else reversed(trees.items())):
                cnn[name].append(_cnn_ms_per_step(tree, tmp / f"cnn_{name}_{round_}"))
                if args.demo:
                    demo[name].append(_timed([sys.executable, "-m", "zoo.cli", "compare", "configs/compare/digits.yaml",
                                              "--workdir", str(tmp / f"demo_{name}_{round_}")], tree))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    median = {k: statistics.median(v) for k, v in cnn.items()}
    out = {"machine": machine(), "cnn_ms_per_step": cnn, "cnn_median": median,
           "cnn_ratio_after_before": median["after"] / median["before"]}
    if args.demo:
        demo_median = {k: statistics.median(v) for k, v in demo.items()}
        out.update({"demo_s": demo, "demo_median": demo_median,
                    "demo_ratio_after_before": demo_median["after"] / demo_median["before"]})
    return out


def bench_feed(args) -> dict:
    """Per-batch cost of feeding the in-memory digits: the old NumPy iterator vs the Grain one."""
    import importlib.util

    from zoo.data import load_dataset
    from zoo.data.pipeline import BatchIterator

    spec = importlib.util.spec_from_file_location("old_batching", Path(args.before) / "zoo/data/batching.py")
    old = importlib.util.module_from_spec(spec)
    sys.modules["old_batching"] = old  # dataclasses look their module up
    spec.loader.exec_module(old)
    digits = load_dataset("digits")
    makers = {"before (NumPy)": lambda: old.BatchIterator(digits.x_train, digits.y_train, 64, 0, shift=args.shift),
              # the shift moved into the train step (issue 25: data.augment.crop_pad): the iterator has none
              "after (Grain)": lambda: BatchIterator(digits.x_train, digits.y_train, 64, 0)}
    times = {name: [] for name in makers}
    for _ in range(args.rounds):
        for name, make in makers.items():
            batches = make()
            start = time.perf_counter()
            for _ in range(2000):
                next(batches)
            times[name].append((time.perf_counter() - start) / 2000 * 1e6)
    return {"machine": machine(), "shift": args.shift, "us_per_batch_median": {k: statistics.median(v) for k, v in times.items()},
            "us_per_batch": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("pngs")
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--steps", type=int, default=20)
    p.set_defaults(func=bench_pngs)
    p = sub.add_parser("mmap")
    p.add_argument("--gib", type=int, default=2)
    p.add_argument("--steps", type=int, default=300)
    p.set_defaults(func=bench_mmap)
    p = sub.add_parser("generate-npy")  # used by mmap
    p.add_argument("folder")
    p.add_argument("--gib", type=int, default=2)
    p.set_defaults(func=lambda a: generate_npy(Path(a.folder), a.gib) or {"wrote": a.folder})
    p = sub.add_parser("feed")
    p.add_argument("--before", required=True, help="a checkout of the code before the change")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--shift", type=int, default=0)
    p.set_defaults(func=bench_feed)
    p = sub.add_parser("digits")
    p.add_argument("--before", required=True, help="a checkout of the code before the change")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--demo", action="store_true", help="also time the make-demo compare (1-2 min a run)")
    p.set_defaults(func=bench_digits)
    args = parser.parse_args()
    print(json.dumps(args.func(args), indent=2))


if __name__ == "__main__":
    main()
