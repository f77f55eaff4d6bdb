"""Reads inputs to predict on: image files, folders of images, .npy, .npz (`x` key) and .csv files.

Small readers of our own (Pillow and NumPy). Images are decoded as an image-folder source decodes
them, H x W x C with C from the run's expected channels; arrays are returned as stored, read with np.load(allow_pickle=False)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from zoo.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def read(path: str | Path, input_shape: tuple, raw_uint8: bool = False) -> tuple[list[str], np.ndarray]:
    """(one name per example, the examples) from one input path; images as `read_image` gives them."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"input '{path}' does not exist: give an image, a folder of images, a .npy, .npz or .csv")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"folder '{path}' holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return [str(f) for f in files], np.stack([read_image(f, input_shape, raw_uint8) for f in files])
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return [str(path)], read_image(path, input_shape, raw_uint8)[None]
    if suffix == ".npy":
        x = _load_array(path)
    elif suffix == ".npz":
        x = _load_array(path, key="x")
    elif suffix == ".csv":
        x = read_csv(path)
    else:
        raise DataError(f"input '{path}' is of an unknown kind: give an image ({', '.join(IMAGE_SUFFIXES)}), "
                        "a folder of images, a .npy, a .npz with an 'x' array or a .csv")
    if x.shape == tuple(input_shape):  # one example
        x = x[None]
    return [f"{path}[{i}]" for i in range(len(x))], x


def read_image(path: Path, input_shape: tuple, raw_uint8: bool = False) -> np.ndarray:
    """One image, decoded and resized exactly as an image-folder source decodes it for training:
    (H, W, C) uint8 with `raw_uint8` (a run whose source gave uint8 pixels, which its preprocessing
    scales), else float32 in [0, 1] (the built-in datasets' range)."""
    if len(input_shape) != 3:
        raise DataError(f"image '{path}' given, but this run takes inputs of shape {tuple(input_shape)}, not "
                        "images (H, W, C): give a .npy, .npz or .csv")
    height, width, channels = input_shape
    if channels not in (1, 3):
        raise DataError(f"this run takes images with {channels} channels: only 1 (grayscale) or 3 (RGB) "
                        "can be read from image files; give a .npy instead")
    from zoo.data.image_folder import decode  # here: a .zoo export predicting on arrays loads no zoo.data

    pixels = decode(str(path), (height, width), channels)
    return pixels if raw_uint8 else pixels.astype(np.float32) / 255.0


def _load_array(path: Path, key: str | None = None) -> np.ndarray:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise DataError(f"'{path}' cannot be read as a NumPy file ({error})") from None
    if key is None:
        return loaded
    with loaded:
        if key not in loaded.files:
            raise DataError(f"'{path}' has no '{key}' array (it holds {', '.join(loaded.files) or 'nothing'}): "
                            f"save the inputs as np.savez(path, {key}=...)")
        return loaded[key]


def read_csv(path: Path) -> np.ndarray:
    """Numeric rows; a first row that is not numeric is a header and skipped."""
    with open(path, newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if rows and not _numeric(rows[0]):
        rows = rows[1:]
    values = []
    for number, row in enumerate(rows, start=1):
        try:
            values.append([float(cell) for cell in row])
        except ValueError:
            bad = next(i for i, cell in enumerate(row) if not _numeric([cell]))
            raise DataError(f"'{path}' row {number}, column {bad + 1}: '{row[bad]}' is not a number") from None
    if not values or len({len(v) for v in values}) != 1:
        raise DataError(f"'{path}' must hold rows of the same number of numeric columns, one example a row")
    return np.asarray(values, np.float32)


def _numeric(row) -> bool:
    try:
        [float(cell) for cell in row]
    except ValueError:
        return False
    return True
