"""The closing figures of issue 25 (a script, not a test): a moving average of the weights against the
raw weights, and augmentation on and off, over seeds, at small budgets.

    python benchmarks/recipe_figures.py ema        # digits CNN (600 steps), MNIST-1D CNN (1000 steps), 3 seeds,
                                                   # their cosine schedules and a constant learning rate
    python benchmarks/recipe_figures.py augment    # digits CNN and ResNet-20 (600 steps), 3 seeds

Each run trains one of configs/ with `--set`-style overrides through the public API (`zoo.fit`), in a
temporary directory deleted at the end. A run with `train.ema` evaluates both weights at every
evaluation (raw_* in its metrics), so one run gives both columns of the EMA table. Printed: a
markdown table of the final test accuracy, mean ± std over the seeds, with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's zoo, whichever is installed

SEEDS = (0, 1, 2)
EMA_RUNS = {  # label: (config, overrides)
    "digits CNN, 600 steps": ("configs/digits/cnn.yaml", []),
    "MNIST-1D CNN, 1000 steps": ("configs/mnist1d/cnn.yaml", ["train.steps=1000", "train.eval_every=0",
                                                              "checkpoint.every=1000"]),
    # the same at a constant learning rate: nothing anneals the raw weights, the average is the only smoothing
    "digits CNN, 600 steps, constant lr": ("configs/digits/cnn.yaml", ["optimizer.schedule=constant"]),
    "MNIST-1D CNN, 1000 steps, constant lr": ("configs/mnist1d/cnn.yaml", [
        "train.steps=1000", "train.eval_every=0", "checkpoint.every=1000", "optimizer.schedule=constant"]),
}
EMA_DECAYS = (0.99, 0.999)  # 1 / (1 - decay): 100 and 1000 steps
AUGMENT_MODELS = {"CNN": "configs/digits/cnn.yaml", "ResNet-20": "configs/digits/resnet.yaml"}
AUGMENT_SETTINGS = {  # digits are not mirror-symmetric: no flips
    "none": ["data.augment.crop_pad=0"],
    "crop_pad 1": ["data.augment.crop_pad=1"],
    "crop_pad 1 + mixup 0.2": ["data.augment.crop_pad=1", "data.augment.mixup=0.2"],
    "crop_pad 1 + cutmix 1.0": ["data.augment.crop_pad=1", "data.augment.cutmix=1.0"],
}


def load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def train(config: str, overrides: list[str], seed: int, root: Path) -> dict:
    """The final metrics of one run (quiet), trained in a new directory under `root`."""
    import zoo

    cfg = zoo.load_config(REPO / config, [*overrides, f"seed={seed}"])
    return zoo.fit(cfg, Path(tempfile.mkdtemp(dir=root)))["final"]


def cell(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def ema_table(root: Path) -> str:
    rows = ["| run | decay | accuracy: raw | accuracy: average | average − raw | loss: raw | loss: average |",
            "|---|---|---|---|---|---|---|"]
    for label, (config, overrides) in EMA_RUNS.items():
        for decay in EMA_DECAYS:
            finals = [train(config, [*overrides, f"train.ema.decay={decay}"], seed, root) for seed in SEEDS]
            raw, ema = ([f[f"{prefix}test_accuracy"] for f in finals] for prefix in ("raw_", ""))
            losses = [cell([f[f"{prefix}test_loss"] for f in finals]) for prefix in ("raw_", "")]
            gain = cell([e - r for e, r in zip(ema, raw)])
            rows.append(f"| {label} | {decay} | {cell(raw)} | {cell(ema)} | {gain} | {losses[0]} | {losses[1]} |")
            print(rows[-1], f"(load {load()})", file=sys.stderr)
    return "\n".join(rows)


def augment_table(root: Path) -> str:
    rows = ["| model | " + " | ".join(AUGMENT_SETTINGS) + " |", "|---|" + "---|" * len(AUGMENT_SETTINGS)]
    for label, config in AUGMENT_MODELS.items():
        cells = []
        for overrides in AUGMENT_SETTINGS.values():
            cells.append(cell([train(config, overrides, seed, root)["test_accuracy"] for seed in SEEDS]))
            print(label, cells[-1], f"(load {load()})", file=sys.stderr)
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figure", choices=("ema", "augment"))
    args = parser.parse_args()
    from zoo.util import enable_compile_cache

    enable_compile_cache(lambda line: print(f"warning: {line}", file=sys.stderr))
    before, start = load(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="zoo-recipes-") as root:
        table = (ema_table if args.figure == "ema" else augment_table)(Path(root))
    print(f"`python benchmarks/recipe_figures.py {args.figure}`: test accuracy at the last step, mean ± std over "
          f"seeds {', '.join(map(str, SEEDS))}; {time.perf_counter() - start:.0f} s; load average {before} before, "
          f"{load()} after\n\n{table}")


if __name__ == "__main__":
    main()
