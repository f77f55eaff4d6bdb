"""A folder of image files, the timm/torchvision layout: path/train/<class>/*.png|jpg|...,
path/test/<class>/... (and optionally path/val/<class>/...), or only path/<class>/... with
`test: 0.2`. Every file is checked when the dataset is opened (header, size, a full read for
PNGs), then decoded with Pillow only when a batch asks for it: in Grain's worker processes while
training."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.data import limits, source
from zoo.data.arrays import take
from zoo.data.split import stratified_indices
from zoo.errors import DataError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


class LazyImages:
    """Image files as an array (N, H, W, C) of uint8, decoded when indexed."""

    decodes = True  # tells the pipeline to decode in worker processes
    dtype = np.dtype(np.uint8)

    def __init__(self, files: list[str], size: tuple[int, int], channels: int):
        self.files, self.size, self.channels = list(files), tuple(size), channels

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple:
        return (len(self.files), *self.size, self.channels)

    @property
    def ndim(self) -> int:
        return 4

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return decode(self.files[key], self.size, self.channels)
        index = np.arange(len(self.files))[key] if isinstance(key, slice) else np.asarray(key, dtype=np.int64)
        out = np.empty((len(index), *self.size, self.channels), np.uint8)
        for row, i in enumerate(index):
            out[row] = decode(self.files[i], self.size, self.channels)
        return out


def _inspect(path: Path) -> tuple[tuple[int, int], str]:
    """((H, W), mode) of an image file, after checking its size in pixels (from the header, before any
    decoding) and that it reads through (PNG: every chunk's CRC)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():  # Pillow warns above half its own cap; ours is checked next
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            size, mode = (image.size[1], image.size[0]), image.mode
            limits.check_pixels(*size, f"image {path}")
            image.verify()
        return size, mode
    except Image.DecompressionBombError as error:  # Pillow's own cap (~179 M pixels), checked as it opens
        raise DataError(f"image {path} is over zoo's limit of {limits.max_pixels():,} pixels per image and over "
                        f"Pillow's ({error}): shrink the image") from None
    except (OSError, ValueError, SyntaxError) as error:
        reason = str(error) or type(error).__name__
        raise DataError(f"image {path} is truncated or not an image ({reason}): remove or replace the file") from None


def _class_files(folder: Path) -> dict[str, list[Path]]:
    """{class name: its image files} of one split folder; refuses empty class folders."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{folder} holds no class folders: put each class's images in {folder}/<class>/")
    out = {}
    for directory in classes:
        files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS
                       and not p.name.startswith("."))
        if not files:
            raise DataError(f"class folder {directory} holds no images ({', '.join(sorted(EXTENSIONS))}): "
                            "add images or remove the folder")
        out[directory.name] = files
    return out


def _labelled(per_class: dict[str, list[Path]], names: list[str], folder: Path) -> tuple[list[Path], np.ndarray]:
    unknown = sorted(set(per_class) - set(names))
    if unknown:
        raise DataError(f"{folder} has class folder '{unknown[0]}', which train/ lacks: every class needs "
                        "training images")
    files, labels = [], []
    for name, paths in per_class.items():
        files += paths
        labels += [names.index(name)] * len(paths)
    return files, np.array(labels, np.int64)


def load(config, name: str = "image_folder"):
    from zoo.data import Dataset

    root = source.resolve(config.path, name)
    if not root.is_dir():
        raise DataError(f"data.path {root} must be a folder of class folders (or of train/ and test/)")
    if config.image_size:
        limits.check_pixels(*config.image_size, "data.image_size")
    split_layout = (root / "train").is_dir()
    if split_layout:
        train = _class_files(root / "train")
        names = sorted(train)
        if not (root / "test").is_dir() and not config.test:
            raise DataError(f"{root} has train/ but no test/: add test/<class>/ folders or set data.test "
                            "(e.g. 0.2) to carve a test split out of train/")
        splits = {"train": _labelled(train, names, root / "train")}
        for split in ("test", "val"):
            if (root / split).is_dir():
                splits[split] = _labelled(_class_files(root / split), names, root / split)
    else:
        if not config.test:
            raise DataError(f"{root} has no train/ and test/ folders: set data.test (e.g. 0.2) to carve a test "
                            "split out of its class folders, or use the train/<class>, test/<class> layout")
        per_class = _class_files(root)
        names = sorted(per_class)
        splits = {"train": _labelled(per_class, names, root)}
    every_file = [f for files, _ in splits.values() for f in files]
    shapes = {}
    for path in every_file:
        shapes.setdefault(_inspect(path), path)
    sizes = {}
    for (size, _), path in shapes.items():
        sizes.setdefault(size, path)
    if config.image_size:
        size = tuple(config.image_size)
    elif len(sizes) > 1:
        (a, first), (b, second) = list(sizes.items())[:2]
        raise DataError(f"images differ in size ({first} is {a[0]}x{a[1]}, {second} is {b[0]}x{b[1]}): set "
                        "data.image_size: [H, W] to resize them all")
    else:
        size = next(iter(sizes))
    channels = config.channels or (1 if all(mode in _GREY_MODES for (_, mode) in shapes) else 3)
    images = {split: (LazyImages([str(f) for f in files], size, channels), labels)
              for split, (files, labels) in splits.items()}
    x_train, y_train = images["train"]
    if "test" in images:
        x_test, y_test = images["test"]
    else:
        kept, held = stratified_indices(y_train, config.test, config.seed + 1)
        x_test, y_test = take(x_train, held), y_train[held]
        x_train, y_train = take(x_train, kept), y_train[kept]
    x_val, y_val = images.get("val", (None, None))
    return Dataset.from_arrays(x_train, y_train, x_test, y_test, class_names=tuple(names), name=root.name,
                               x_val=x_val, y_val=y_val, where=str(root),
                               source=source.record("image_folder", root, sorted(every_file)))


def decode(path: str, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image file -> (H, W, C) uint8, converted to grey or RGB and resized to `size` (H, W): the
    one decoder of image-folder training data and of inputs to predict on."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(image, np.uint8).reshape(size[0], size[1], channels)
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(f"image {path} cannot be read as an image ({error}): remove or replace the file") from None
