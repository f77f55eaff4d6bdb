"""Transfer on the public Python API: train on digits 0-4, fine-tune on digits 5-9 from that run
(a fresh head, `init_from.skip`), and compare with training 5-9 from scratch under the same budget
and seeds: does the first task's feature layer help?

    python scripts/finetune.py --config configs/digits/cnn.yaml --steps 300 --seeds 0,1,2 --workdir runs/finetune

Prints mean test accuracy on digits 5-9 of both arms over the seeds; every run is an ordinary run
directory under the workdir.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the zoo of this checkout
import zoo  # noqa: E402
from zoo.config import apply_overrides, from_dict, load_inherited  # noqa: E402

FIRST, SECOND = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]


def head_module(config_path: str) -> str:
    """The name of the model's last Dense layer (its classifier head), read from an initialised model."""
    config = from_dict(load_inherited(config_path))
    spec = zoo.load_dataset(config.data.name).spec
    model = zoo.build(config.model.name, len(FIRST), spec.vocab_size, **config.model.hparams)
    import jax
    import numpy as np

    params = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, *spec.input_shape), spec.dtype))["params"]
    return [name for name in params if name.startswith("Dense")][-1]


def run(config_path: str, steps: int, seeds: list[int], workdir: Path) -> dict:
    head = head_module(config_path)

    def config(seed: int, classes: list[int], extra: list[str] = ()):
        overrides = [f"seed={seed}", f"train.steps={steps}", f"data.classes={json.dumps(classes)}", *extra]
        return from_dict(apply_overrides(load_inherited(config_path), overrides))

    scores = {"from scratch": [], "fine-tuned": []}
    for seed in seeds:
        source = zoo.fit(config(seed, FIRST), workdir / f"first/seed{seed}")
        tuned = zoo.fit(config(seed, SECOND, [f"init_from.run={source['run_dir']}",
                                              f"init_from.skip={json.dumps([head])}"]),
                        workdir / f"fine_tuned/seed{seed}")
        scratch = zoo.fit(config(seed, SECOND), workdir / f"scratch/seed{seed}")
        scores["fine-tuned"].append(tuned["final"]["test_accuracy"])
        scores["from scratch"].append(scratch["final"]["test_accuracy"])
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/digits/cnn.yaml")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workdir", default="runs/finetune")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    scores = run(args.config, args.steps, [int(s) for s in args.seeds.split(",")], Path(args.workdir))
    if args.json:
        print(json.dumps(scores))
        return 0
    for arm, values in scores.items():
        print(f"{arm:>13}: test accuracy on digits 5-9 {statistics.mean(values):.4f} over seeds "
              f"({', '.join(f'{v:.4f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
