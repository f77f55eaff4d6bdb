"""Reads inputs to predict on: image files, folders of images, .npy, .npz (`x` key) and .csv files.

Small readers of our own (Pillow and NumPy). Images are decoded as an image-folder source decodes
them, H x W x C with C from the run's expected channels; arrays are returned as stored, read with np.load(allow_pickle=False)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from zoo.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def read(path: str | Path, input_shape: tuple, raw_uint8: bool = False, label: str | None = None,
         note=None) -> tuple[list[str], np.ndarray]:
    """(one name per example, the examples) from one input path; images as `read_image` gives them.
    `label`: the run's label column, dropped from a CSV whose header has it (`note` is told)."""
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
        x = read_csv(path, label, note)
    else:
        raise DataError(f"input '{path}' is of an unknown kind: give an image ({', '.join(IMAGE_SUFFIXES)}), "
                        "a folder of images, a .npy, a .npz with an 'x' array or a .csv")
    if x.shape == tuple(input_shape):  # one example
        x = x[None]
    return [f"{path}[{i}]" for i in range(len(x))], x


def read_image(path: Path, input_shape: tuple, raw_uint8: bool = False) -> np.ndarray:
    """One image, decoded and resized exactly as an image-folder source decodes it for training:
    (H, W, C) uint8 with `raw_uint8` (a run with an input range, which `conform` brings uint8 pixels
    to), else float32 in [0, 1]."""
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


def read_csv(path: Path, label: str | tuple | None = None, note=None) -> np.ndarray:
    """Numeric rows; a first row that is not numeric is a header and skipped. A header naming the
    column `label` (the run's label column, or a regression's target columns: the training CSV given
    as it is) drops those columns, and `note` (a function of one line) is told."""
    with open(path, newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if rows and not _numeric(rows[0]):
        header, rows = [name.strip() for name in rows[0]], rows[1:]
        labels = [label] if isinstance(label, str) else list(label or ())
        dropped = [i for i, name in enumerate(header) if name in labels]
        if dropped:
            rows = [[cell for i, cell in enumerate(row) if i not in dropped] for row in rows]
            if note is not None:
                names = ", ".join(f"'{header[i]}'" for i in dropped)
                note(f"dropped the label column{'s' if len(dropped) > 1 else ''} {names} from '{path}'")
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


# The value range of array inputs (issue 22.1). One contract for `LoadedRun.predict`, `zoo predict` and
# `.zoo` exports: the dtype decides. Integers (uint8) are pixel values 0-255. Floats are in the range
# the run records for its float inputs: [0, 1] for a run whose source gave uint8 pixels (pixels / 255,
# the scaling its preprocessing applies) and for one trained on floats in [0, 1] (digits); the training range
# for a run on other float images (e.g. pixel values 0-255 as floats).
UNIT = [0.0, 1.0]
BUILT_IN_RANGES = {"digits": UNIT}  # built-in image datasets record no statistics: their documented range
_SLACK = 1e-3  # rounding in pixels / 255 and back


def contract(kind: str, normalization: dict | None, source_kind: str | None) -> dict | None:
    """What array inputs a run takes: {"dtype": its source's "uint8" or "float32", "float_range": [low,
    high] of float inputs}, or None where values are taken as given (signals, vectors, tokens, and
    image runs that recorded no range)."""
    normalization = normalization or {}
    if normalization.get("scale", 1.0) != 1.0:  # the source gave uint8, which preprocessing scales by 1/255
        return {"dtype": "uint8", "float_range": list(UNIT)}
    recorded = normalization.get("range") or BUILT_IN_RANGES.get(source_kind)
    if kind != "image" or not recorded:
        return None
    return {"dtype": "float32", "float_range": [float(recorded[0]), float(recorded[1])]}


def conform(x, takes: dict | None, where: str) -> np.ndarray:
    """`x` as the run's preprocessing takes it (raw, as the training source gave it), by the contract
    `takes` (see `contract`): uint8 pixels to a [0, 1] float run are divided by 255, floats in [0, 1]
    to a uint8 run multiplied by 255. Refuses in one line values that cannot be in the range the run
    takes: floats outside [0, 1] for a [0, 1] run, floats all within [0, 1] for a run trained on
    floats up to 10 or more (pixel values), integers outside 0-255."""
    x = np.asarray(x)
    if not takes or x.size == 0 or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        return x
    low, high = takes["float_range"]
    unit, least, most = low >= 0 and high <= 1, float(x.min()), float(x.max())
    seen = f"[{least:g}, {most:g}]"
    if np.issubdtype(x.dtype, np.integer):
        if least < 0 or most > 255 or (low < 0 and takes["dtype"] != "uint8"):
            raise DataError(f"{where} holds integers in {seen}; integers are taken as pixel values 0-255 (uint8), and "
                            f"this run takes those or floats in [{low:g}, {high:g}]: give uint8 pixels or such floats")
        return x if takes["dtype"] == "uint8" else x.astype(np.float32) / (255 if unit else 1)
    if unit and (least < -_SLACK or most > 1 + _SLACK):
        fix = "divide by 255, or give uint8" if least >= 0 else "give pixels / 255 (not standardized), or uint8"
        raise DataError(f"{where} holds values in {seen}, but this run takes floats in [0, 1] (pixels / 255) or "
                        f"uint8 pixels 0-255: {fix}")
    if not unit and low >= 0 and high >= 10 and least >= 0 and 0 < most <= 1:
        raise DataError(f"{where} holds floats within [0, 1], but this run was trained on floats in [{low:g}, "
                        f"{high:g}] (pixel values): multiply by 255, or give uint8")
    return x.astype(np.float32) * 255 if takes["dtype"] == "uint8" else x
