"""How much a data file may make zoo hold: bytes read, inflated or allocated, and pixels per image.

A file can declare (in its header) or inflate to far more than it holds on disk: a 7 MB gzip of
zeros inflates to 8 GB, an .npy header of 200 bytes declares a terabyte, a 140 KB PNG decodes to
144 million pixels. Every reader computes the declared size in Python integers (no overflow) and
checks it here before reading or allocating anything.

The limits are machine settings, not part of a run's config (raising one must not stop a run from
resuming): the environment variables below override the defaults, read at each check.
"""

from __future__ import annotations

import os

from zoo.errors import DataError

MAX_BYTES_ENV = "ZOO_MAX_DATA_BYTES"
MAX_PIXELS_ENV = "ZOO_MAX_IMAGE_PIXELS"
DEFAULT_MAX_BYTES = 4 << 30  # one array (or one file's values) held in memory
DEFAULT_MAX_PIXELS = 1 << 26  # one image: 8192 x 8192 (Pillow warns above ~89 M and refuses above ~179 M)


def _setting(name: str, default: int, unit: str) -> int:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = int(text.strip().replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise DataError(f"{name}={text!r} must be a whole number of {unit} (at least 1), e.g. {name}={default * 2}")
    return value


def max_bytes() -> int:
    return _setting(MAX_BYTES_ENV, DEFAULT_MAX_BYTES, "bytes")


def max_pixels() -> int:
    return _setting(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS, "pixels")


def check_bytes(count: int, what: str) -> None:
    """Refuses `what` when it would take more than the byte limit in memory."""
    limit = max_bytes()
    if count > limit:
        raise DataError(f"{what} takes {count:,} bytes in memory, over zoo's limit of {limit:,} (a damaged or "
                        f"hostile file declares sizes it does not hold): if the data really is that large, "
                        f"raise the limit with the environment variable {MAX_BYTES_ENV}={count}")


def check_pixels(height: int, width: int, what: str) -> None:
    """Refuses an image (or a resize target) of more pixels than the limit."""
    limit = max_pixels()
    if height * width > limit:
        raise DataError(f"{what} is {height}x{width} = {height * width:,} pixels, over zoo's limit of {limit:,} "
                        f"per image: shrink the image, or raise the limit with the environment variable "
                        f"{MAX_PIXELS_ENV}={height * width}")
