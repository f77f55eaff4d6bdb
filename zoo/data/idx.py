"""IDX files (MNIST, Fashion-MNIST, KMNIST, EMNIST): a folder holding train-images-idx3-ubyte,
train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each optionally .gz.

Format (big-endian): two zero bytes, a type code (0x08: unsigned byte), the number of dimensions,
one uint32 per dimension, then the values."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from zoo.data import limits, source
from zoo.errors import DataError

FILES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
         "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _find(root: Path, stem: str) -> Path:
    # Distributions spell the files with '-' or '.' before idx (t10k-images.idx3-ubyte): accept both.
    for name in (stem, stem.replace("-idx", ".idx")):
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DataError(f"{root} lacks {stem} (or {stem}.gz): an IDX folder holds {', '.join(FILES.values())}")


def read(path: Path) -> np.ndarray:
    """The array an IDX file holds; refuses a wrong magic number, a size disagreeing with its header, or
    a header declaring more than zoo's memory limit (checked before anything past the header is read)."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
            shape, dtype = _header(path, handle)
            expected = math.prod(shape) * dtype.itemsize  # Python ints: a hostile header cannot wrap around
            limits.check_bytes(expected, f"{path}: the header's shape {shape}")
            data = handle.read(expected + 1)  # one byte more tells a longer file; a gzip bomb stops here
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path} cannot be read ({error})") from None
    if len(data) != expected:
        got = f"more than {expected}" if len(data) > expected else str(len(data))
        raise DataError(f"{path}: the header says shape {shape} ({expected} bytes of values) but the file holds "
                        f"{got}: the file is truncated or not this dataset's")
    return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _header(path: Path, handle) -> tuple[tuple[int, ...], np.dtype]:
    magic = handle.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _TYPES:
        raise DataError(f"{path} is not an IDX file: wrong magic number {magic.hex() or 'none'} (expected "
                        "00 00, a type code such as 08, and the number of dimensions)")
    ndim = magic[3]
    dims = handle.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(f"{path}: the header is cut short ({4 + len(dims)} bytes for {ndim} dimensions)")
    return struct.unpack(f">{ndim}I", dims), np.dtype(_TYPES[magic[2]])


def load(config, name: str = "idx"):
    from zoo.data import Dataset

    root = source.resolve(config.path, name)
    if not root.is_dir():
        raise DataError(f"data.path {root} must be the folder holding the four IDX files")
    paths = {key: _find(root, stem) for key, stem in FILES.items()}
    arrays = {key: read(path) for key, path in paths.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim == 3:  # (N, H, W) grey images
            arrays[f"x_{split}"] = x[..., None]
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{paths[f'y_{split}']} holds {y.shape} labels for the {len(x)} images of "
                            f"{paths[f'x_{split}']}: one label per image")
    return Dataset.from_arrays(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                               name=root.name, where=str(root),
                               source=source.record("idx", root, sorted(paths.values())))
