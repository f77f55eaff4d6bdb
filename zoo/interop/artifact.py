"""The `.zoo` export file: read and run it with jax alone (this module never imports zoo.models).

Layout: the magic line b"ZOOEXPORT1\\n", the JSON header's length (8 bytes, little endian), the JSON
header (input shape and dtype, class names, platforms, zoo and jax versions, ...), then the bytes of
`jax.export.Exported.serialize()` (a StableHLO module with its own versioning; data only).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from zoo.errors import ZooError

MAGIC = b"ZOOEXPORT1\n"


class ExportError(ZooError):
    """An export file is unreadable, or inputs do not fit it."""


def write(path: str | Path, header: dict, payload: bytes) -> None:
    """Writes header + payload atomically (a temporary file renamed into place)."""
    import os

    path = Path(path)
    body = json.dumps(header, sort_keys=True).encode()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(MAGIC + struct.pack("<Q", len(body)) + body + bytes(payload))
    os.replace(tmp, path)


def read(path: str | Path) -> tuple[dict, bytes]:
    """(header, payload) of a .zoo file, or ExportError naming what is wrong with it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ExportError(f"cannot read export file '{path}' ({error.strerror}): give a file `zoo export` "
                          "wrote") from None
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
        raise ExportError(f"'{path}' is not a zoo export (no {MAGIC.strip().decode()} header): give a file "
                          "`zoo export` wrote, or a run directory")
    (length,) = struct.unpack("<Q", data[len(MAGIC):len(MAGIC) + 8])
    start = len(MAGIC) + 8
    try:
        header = json.loads(data[start:start + length])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ExportError(f"export file '{path}' is damaged (its JSON header does not parse): export "
                          "it again") from None
    payload = data[start + length:]
    if not payload or not isinstance(header, dict) or "input_shape" not in header:
        raise ExportError(f"export file '{path}' is truncated or damaged: export it again")
    return header, payload


def load(path: str | Path):
    """(header, a function from a batch to class probabilities) of a .zoo file."""
    import jax

    header, payload = read(path)
    try:
        exported = jax.export.deserialize(bytearray(payload))
    except Exception as error:  # noqa: BLE001 - a damaged payload: one line
        raise ExportError(f"export file '{path}' is damaged ({type(error).__name__}): export it again") from None
    platform = jax.default_backend()
    if platform not in exported.platforms:
        raise ExportError(f"export file '{path}' was exported for {', '.join(exported.platforms)}, this "
                          f"machine runs {platform}: export again with --platforms {platform}")
    return header, exported.call


def check_inputs(header: dict, x: np.ndarray, where: str) -> np.ndarray:
    """`x` as one batch of the export's input: a single example gains a batch axis."""
    shape, dtype = tuple(header["input_shape"]), np.dtype(header["dtype"])
    if tuple(x.shape) == shape:
        x = x[None]
    if tuple(x.shape[1:]) != shape:
        raise ExportError(f"{where} has shape {tuple(x.shape)}; the model takes {shape} or a batch "
                          f"(N, {', '.join(map(str, shape))})")
    if header.get("raw_uint8") and x.dtype == np.uint8:
        x = x.astype(np.float32)  # raw pixel values, which the exported preprocessing scales
    if np.issubdtype(x.dtype, np.integer) != np.issubdtype(dtype, np.integer):
        raise ExportError(f"{where} holds {x.dtype}, the model takes {dtype}")
    return x.astype(dtype)
