"""Exports scikit-learn's 8x8 digits as a folder of PNGs, the image_folder layout, with the built-in
dataset's fixed train/test split: OUT/train/<digit>/<n>.png and OUT/test/<digit>/<n>.png.

    python scripts/export_digits_png.py data/digits_png
    zoo train configs/digits/cnn.yaml --set data.name=image_folder --set data.path=data/digits_png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def export(out: Path) -> dict:
    from PIL import Image

    from zoo.data import digits

    dataset = digits.load()
    counts = {}
    for split, images, labels in (("train", dataset.x_train, dataset.y_train), ("test", dataset.x_test, dataset.y_test)):
        for number, (image, label) in enumerate(zip(images, labels)):
            folder = out / split / str(int(label))
            folder.mkdir(parents=True, exist_ok=True)
            # The built-in pixels are 0..16 scaled to [0, 1]; 8-bit grey keeps every level apart.
            pixels = np.rint(image[..., 0] * 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{number:04d}.png")
        counts[split] = len(labels)
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the folder to create (must not exist yet)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        print(f"export_digits_png: error: {out} exists already: choose a new folder", file=sys.stderr)
        return 2
    counts = export(out)
    print(f"wrote {counts['train']} training and {counts['test']} test PNGs to {out}/train and {out}/test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
