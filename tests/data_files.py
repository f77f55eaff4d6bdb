"""Writers of small data files in each exact on-disk format (IDX via struct, CIFAR records as bytes,
PNGs via Pillow, CSV, npz), holding a learnable signal: class c lights band c of the image."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def banded_images(n: int, classes: int, size=(8, 8), channels: int = 1, seed: int = 0):
    """(images uint8 (n, H, W, C), labels): noise, plus a bright band of rows whose place is the class."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    images = rng.integers(0, 80, size=(n, *size, channels)).astype(np.uint8)
    band = max(1, size[0] // classes)
    for i, label in enumerate(labels):
        start = (label * band) % size[0]
        images[i, start:start + band] += 150
    return images, labels.astype(np.uint8)


def write_idx_file(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path = Path(f"{path}.gz") if gz else Path(path)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_idx(root: Path, n_train=300, n_test=100, gz=False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    x, y = banded_images(n_train + n_test, 4)
    x = x[..., 0]  # IDX images are (N, H, W)
    write_idx_file(root / "train-images-idx3-ubyte", x[:n_train], gz)
    write_idx_file(root / "train-labels-idx1-ubyte", y[:n_train], gz)
    write_idx_file(root / "t10k-images-idx3-ubyte", x[n_train:], gz)
    write_idx_file(root / "t10k-labels-idx1-ubyte", y[n_train:], gz)
    return root


def cifar_records(images: np.ndarray, *label_columns: np.ndarray) -> bytes:
    """CIFAR binary records: label byte(s), then the red, green and blue 32x32 planes."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    labels = np.stack(label_columns, axis=1).astype(np.uint8)
    return np.concatenate([labels, planes], axis=1).astype(np.uint8).tobytes()


def write_cifar10(root: Path, n_train=200, n_test=80) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    x, y = banded_images(n_train + n_test, 10, size=(32, 32), channels=3)
    half = n_train // 2
    (root / "data_batch_1.bin").write_bytes(cifar_records(x[:half], y[:half]))
    (root / "data_batch_2.bin").write_bytes(cifar_records(x[half:n_train], y[half:n_train]))
    (root / "test_batch.bin").write_bytes(cifar_records(x[n_train:], y[n_train:]))
    (root / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    return root


def write_cifar100(root: Path, n_train=200, n_test=80) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    x, coarse = banded_images(n_train + n_test, 4, size=(32, 32), channels=3)
    fine = coarse.astype(np.int64) * 25 + np.arange(len(coarse)) % 25  # fine ids inside each coarse class
    (root / "train.bin").write_bytes(cifar_records(x[:n_train], coarse[:n_train], fine[:n_train]))
    (root / "test.bin").write_bytes(cifar_records(x[n_train:], coarse[n_train:], fine[n_train:]))
    return root


def write_png_folder(root: Path, n_train=150, n_test=60, classes=3, size=(8, 8), layout="split") -> Path:
    from PIL import Image

    x, y = banded_images(n_train + n_test, classes, size=size)
    for i, (image, label) in enumerate(zip(x, y)):
        split = ("train" if i < n_train else "test") if layout == "split" else ""
        folder = root / split / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[..., 0]).save(folder / f"{i:05d}.png")
    return root


def write_csv(path: Path, n=300, text_labels=True) -> Path:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    features = rng.normal(size=(n, 4)) + 2.0 * np.eye(3, 4)[labels]
    names = np.array(["cat", "dog", "emu"])
    lines = ["f0,f1,species,f2,f3"]
    for row, label in zip(features, labels):
        cell = names[label] if text_labels else str(label)
        lines.append(f"{row[0]:.4f},{row[1]:.4f},{cell},{row[2]:.4f},{row[3]:.4f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def npz_arrays(n_train=300, n_test=100, rank=4):
    x, y = banded_images(n_train + n_test, 4)
    x = x.astype(np.float32)
    if rank == 2:
        x = x.reshape(len(x), -1)
    elif rank == 3:
        x = x.reshape(len(x), 8, 8)
    return {"x_train": x[:n_train], "y_train": y[:n_train].astype(np.int64),
            "x_test": x[n_train:], "y_test": y[n_train:].astype(np.int64)}


def write_npz(path: Path, rank=4, compressed=False, **replace) -> Path:
    arrays = {**npz_arrays(rank=rank), **replace}
    arrays = {k: v for k, v in arrays.items() if v is not None}
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path
