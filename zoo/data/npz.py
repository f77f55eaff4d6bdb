"""NumPy arrays: an `.npz` with x_train, y_train, x_test, y_test (optionally x_val, y_val and
class_names), or a folder of `.npy` files with those names, or a JSON manifest naming them. With
`task: regress` the y are float targets [N] or [N, K] (optionally named by `target_names`).

Uncompressed `.npz` members and `.npy` files are memory-mapped, not loaded: a split larger than
memory trains. Rank gives the kind: 2-D are vectors (token ids when integer and `vocab_size` is
set), 3-D signals (N, L, C), 4-D images (N, H, W, C).
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from zoo.data import limits, source
from zoo.errors import DataError

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("x_val", "y_val", "class_names", "target_names")


def load(config, name: str = "npz", task: str = "classify"):
    root = source.resolve(config.path, name)
    arrays, files = _read(root)
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise DataError(f"{root} lacks {', '.join(missing)}: it has {', '.join(sorted(arrays)) or 'no arrays'}; "
                        f"a dataset needs {', '.join(REQUIRED)} (and optionally x_val, y_val, class_names)")
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise DataError(f"{root} has only one of x_val and y_val: give both or neither")
    class_names, target_names = (_names(arrays.get(key)) for key in ("class_names", "target_names"))
    if target_names is not None and task != "regress":
        raise DataError(f"{root} has target_names, which name regression targets: set task: regress, or drop them")
    from zoo.data import Dataset

    return Dataset.from_arrays(
        arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], class_names=class_names,
        name=config.name if config.name != "npz" else root.stem, x_val=arrays.get("x_val"),
        y_val=arrays.get("y_val"), vocab_size=config.vocab_size, where=str(root),
        source=source.record("npz", root, files), task=task, target_names=target_names)


def _names(array) -> tuple[str, ...] | None:
    return tuple(str(n) for n in np.asarray(array).tolist()) if array is not None else None


def _read(root: Path) -> tuple[dict, list[Path]]:
    if root.is_dir():
        files = {p.stem: p for p in sorted(root.glob("*.npy"))}
        return {k: _npy(p) for k, p in files.items() if k in REQUIRED + OPTIONAL}, list(files.values())
    if root.suffix == ".json":
        try:
            manifest = json.loads(root.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise DataError(f"manifest {root} cannot be read ({error}): it must be a JSON mapping of "
                            "x_train, y_train, ... to .npy paths") from None
        if not isinstance(manifest, dict):
            raise DataError(f"manifest {root} must be a JSON mapping of x_train, y_train, ... to .npy paths")
        paths = {k: (root.parent / str(v)).resolve() for k, v in manifest.items()}
        for key, path in paths.items():
            if not path.is_file():
                raise DataError(f"manifest {root}: '{key}' names {path}, which does not exist")
        return {k: _npy(p) for k, p in paths.items()}, [root, *paths.values()]
    return _npz(root), [root]


def _npy(path: Path):
    """A memory map of an .npy file, after checking its header declares no more than the file holds."""
    try:
        with open(path, "rb") as handle:
            return _mapped(path, handle, path.stat().st_size, str(path))
    except (OSError, ValueError) as error:
        raise DataError(f"{path} is not a readable .npy array ({error})") from None


def _npz(path: Path) -> dict:
    """Members of an .npz: memory-mapped where stored uncompressed, read otherwise (each within the memory
    limit, checked against the sizes its zip and .npy headers declare before it is inflated)."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise DataError(f"{path} is not an .npz archive ({error}): save it with numpy.savez") from None
    out = {}
    with archive, open(path, "rb") as handle:
        for info in archive.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            what = f"{path}: member '{info.filename}'"
            try:
                if info.compress_type == zipfile.ZIP_STORED:
                    out[key] = _mapped_member(path, handle, info, what)
                else:
                    limits.check_bytes(info.file_size, f"{what} (inflated, as its zip header says)")
                    out[key] = _inflated(archive, info, what)
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
                raise DataError(f"{what} cannot be read ({error})") from None
    return out


def _declared(handle) -> tuple[tuple, bool, np.dtype, int]:
    """(shape, fortran order, dtype, bytes of values) from the .npy header at the handle's position."""
    version = np.lib.format.read_magic(handle)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(handle)
    if dtype.hasobject:
        raise ValueError("object arrays are not allowed")
    return shape, fortran, dtype, math.prod(shape) * dtype.itemsize  # Python ints: no overflow


def _inflated(archive: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> np.ndarray:
    with archive.open(info) as member:
        shape, _, dtype, nbytes = _declared(member)
        limits.check_bytes(nbytes, f"{what} (shape {tuple(shape)} of {dtype}, as its .npy header says)")
        member.seek(0)
        return np.lib.format.read_array(member, allow_pickle=False)


def _mapped_member(path: Path, handle, info: zipfile.ZipInfo, what: str):
    handle.seek(info.header_offset)
    local = handle.read(30)
    name_length, extra_length = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
    start = info.header_offset + 30 + name_length + extra_length
    handle.seek(start)
    return _mapped(path, handle, start + info.file_size, what)


def _mapped(path: Path, handle, end: int, what: str):
    """A memory map of the .npy array at the handle's position, whose values must end by byte `end`."""
    shape, fortran, dtype, nbytes = _declared(handle)
    offset = handle.tell()
    if offset + nbytes > end:
        raise DataError(f"{what}: its header declares shape {tuple(shape)} of {dtype} ({nbytes:,} bytes) but "
                        f"only {max(end - offset, 0):,} bytes follow: the file is truncated or its header is wrong")
    if nbytes == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
