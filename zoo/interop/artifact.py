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
    if np.issubdtype(x.dtype, np.integer) != np.issubdtype(dtype, np.integer):
        raise ExportError(f"{where} holds {x.dtype}, the model takes {dtype}")
    return x.astype(dtype)


def read_inputs(paths) -> list[tuple[str, np.ndarray]]:
    """(name, array) for every .npy file and every array of every .npz file (allow_pickle=False)."""
    out = []
    for path in map(Path, paths):
        if path.suffix not in (".npy", ".npz"):
            raise ExportError(f"input '{path}' is not .npy or .npz: save the inputs with numpy.save/savez")
        try:
            if path.suffix == ".npy":
                out.append((str(path), np.load(path, allow_pickle=False)))
            else:
                with np.load(path, allow_pickle=False) as archive:
                    out += [(f"{path}:{key}", archive[key]) for key in archive.files]
        except (OSError, ValueError, EOFError) as error:
            raise ExportError(f"input '{path}' cannot be read ({str(error).splitlines()[0]}): give arrays "
                              "saved by numpy holding plain arrays (no Python objects)") from None
    return out


def predict_file(path: str | Path, input_paths) -> dict:
    """Class probabilities of every input example under the export at `path`."""
    header, call = load(path)
    return _predict(header, call, input_paths)


def _predict(header: dict, call, input_paths) -> dict:
    rows = []
    for name, x in read_inputs(input_paths):
        batch = check_inputs(header, x, f"input {name}")
        probabilities = np.asarray(call(batch), np.float64)
        for i, p in enumerate(probabilities):
            rows.append({"input": name, "index": i, "class": header["class_names"][int(p.argmax())],
                         "probability": float(p.max()), "probabilities": p.tolist()})
    return {"model": header.get("model"), "rows": rows}
