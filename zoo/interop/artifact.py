"""The `.zoo` export file: read and run it with jax alone (this module never imports zoo.models).

Layout: the magic line b"ZOOEXPORT1\\n", the JSON header's length (8 bytes, little endian), the JSON
header (input shape and dtype, class names, platforms, zoo and jax versions, ...), then the bytes of
`jax.export.Exported.serialize()` (a StableHLO module with its own versioning; data only).
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np

from zoo.errors import ZooError
from zoo.util import atomic_write

MAGIC = b"ZOOEXPORT1\n"
# The custom calls (native code XLA runs by name) a module may hold before zoo calls it, per platform.
# jax.export checks its own allowlist when exporting, not when deserializing or calling: a crafted file
# could name any target (`xla_ffi_python_cpu_callback` with a made-up callback: a segfault). Measured
# with jax 0.10.2 by exporting every registered model (symbolic batch, lowered for each platform below,
# on 1 and 2 devices) and `zoo export` of one model per family (tests/test_hostile_network_and_exports.py):
# `shape_assertion` (the symbolic batch's checks) is all they contain.
ALLOWED_CUSTOM_CALLS = {
    "cpu": ("shape_assertion",),
    "cuda": ("shape_assertion",),
    "rocm": ("shape_assertion",),
    "tpu": ("shape_assertion",),
}
# A custom call as MLIR prints it: `stablehlo.custom_call @target(` (a target name with other
# characters is quoted). Any other mention of a custom_call op (generic form, another dialect's) is
# refused as unrecognised.
_CUSTOM_CALL = re.compile(r'stablehlo\.custom_call @(?:([\w.$-]+)|"((?:[^"\\]|\\.)*)")\(')
_ANY_CUSTOM_CALL = re.compile(r"\w\.custom_call")


class ExportError(ZooError):
    """An export file is unreadable, or inputs do not fit it."""


def write(path: str | Path, header: dict, payload: bytes) -> None:
    """Writes header + payload atomically (a uniquely named temporary file renamed into place)."""
    body = json.dumps(header, sort_keys=True).encode()
    atomic_write(path, MAGIC + struct.pack("<Q", len(body)) + body + bytes(payload))


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
    check_custom_calls(exported, path)
    return header, exported.call


def custom_call_targets(module_text: str) -> list[str]:
    """Every custom call target a StableHLO module's text names, in order; '?' for each mention of
    a custom_call op that is not in the printed form (so it cannot pass an allowlist)."""
    targets = [plain or quoted for plain, quoted in _CUSTOM_CALL.findall(module_text)]
    unrecognised = len(_ANY_CUSTOM_CALL.findall(module_text)) - len(targets)
    return targets + ["?"] * unrecognised


def check_custom_calls(exported, path: str | Path) -> None:
    """Refuses an export whose module calls native code outside ALLOWED_CUSTOM_CALLS of its platforms."""
    allowed = {name for platform in exported.platforms for name in ALLOWED_CUSTOM_CALLS.get(platform, ())}
    try:
        text = exported.mlir_module()
    except Exception as error:  # noqa: BLE001 - a module that does not print: one line
        raise ExportError(f"export file '{path}' is damaged ({type(error).__name__}): export it again") from None
    bad = sorted({target for target in custom_call_targets(text) if target not in allowed})
    if bad:
        named = ", ".join(repr(target[:60]) for target in bad[:3])
        raise ExportError(f"export file '{path}' calls native code that zoo exports never contain (custom call "
                          f"{named}; allowed: {', '.join(sorted(allowed)) or 'none'}): refused; export the "
                          "model again with `zoo export` from a run you trust")


def takes(header: dict) -> dict | None:
    """The value range of the export's array inputs (`zoo.inference.inputs.contract`); an export
    written before the header held "inputs" takes uint8 pixels or floats in [0, 1] when "raw_uint8"."""
    if "inputs" in header:
        return header["inputs"]
    return {"dtype": "uint8", "float_range": [0.0, 1.0]} if header.get("raw_uint8") else None


def check_inputs(header: dict, x: np.ndarray, where: str) -> np.ndarray:
    """`x` as one batch of the export's input: a single example gains a batch axis, one-channel inputs
    without their channel axis gain it (as `LoadedRun.preprocess`); image values are brought to the raw
    range the exported preprocessing takes, or refused (see `takes`)."""
    from zoo.inference.inputs import conform

    shape, dtype = tuple(header["input_shape"]), np.dtype(header["dtype"])
    if tuple(x.shape) == shape:
        x = x[None]
    elif tuple(x.shape[1:]) == shape[:-1] and shape[-1:] == (1,) and not np.issubdtype(dtype, np.integer):
        x = x[..., None]  # one-channel images, signals and CSV vectors given without their channel axis
    if tuple(x.shape[1:]) != shape:
        raise ExportError(f"{where} has shape {tuple(x.shape)}; the model takes {shape} or a batch "
                          f"(N, {', '.join(map(str, shape))})")
    x = conform(x, takes(header), where)
    if takes(header) and np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32)  # raw pixel values, which the exported preprocessing scales
    if np.issubdtype(x.dtype, np.integer) != np.issubdtype(dtype, np.integer):
        raise ExportError(f"{where} holds {x.dtype}, the model takes {dtype}")
    return x.astype(dtype)
