"""The PyTorch baselines of the benchmark, eager and under `torch.compile`: the same workloads as the
zoo's (shapes, float32, Adam, cross-entropy). PyTorch is an optional extra (`pip install -e '.[bench]'`);
only the benchmark imports this module, and only when PyTorch is installed (`bench.torch_available()`).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn as tnn


def torch_model(name: str):
    """The PyTorch module of the benchmark workload `name` (the same layers, shapes and initial scale)."""
    if name == "mlp":
        return tnn.Sequential(tnn.Linear(784, 512), tnn.ReLU(), tnn.Linear(512, 512), tnn.ReLU(),
                              tnn.Linear(512, 10))
    if name == "cnn":
        return tnn.Sequential(
            tnn.Conv2d(1, 32, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
            tnn.Conv2d(32, 64, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
            tnn.Flatten(), tnn.Linear(64 * 7 * 7, 128), tnn.ReLU(), tnn.Linear(128, 10))
    if name == "resnet20":
        class Block(tnn.Module):
            def __init__(self, cin, cout, stride):
                super().__init__()
                self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
                self.bn1 = tnn.BatchNorm2d(cout)
                self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
                self.bn2 = tnn.BatchNorm2d(cout)
                self.shortcut = tnn.Identity()
                if stride != 1 or cin != cout:
                    self.shortcut = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False),
                                                   tnn.BatchNorm2d(cout))

            def forward(self, x):
                y = F.relu(self.bn1(self.conv1(x)))
                return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))

        layers, cin = [tnn.Conv2d(3, 16, 3, 1, 1, bias=False), tnn.BatchNorm2d(16), tnn.ReLU()], 16
        for i, width in enumerate((16, 32, 64)):
            for j in range(3):
                layers.append(Block(cin, width, 2 if i and not j else 1))
                cin = width
        return tnn.Sequential(*layers, tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(64, 10))
    if name == "lstm":
        class LSTM(tnn.Module):
            def __init__(self):
                super().__init__()
                self.lstm = tnn.LSTM(32, 256, batch_first=True)
                self.head = tnn.Linear(256, 10)

            def forward(self, x):
                _, (h, _) = self.lstm(x)
                return self.head(h[-1])

        return LSTM()
    if name == "transformer":
        class Transformer(tnn.Module):
            def __init__(self):
                super().__init__()
                self.embed = tnn.Linear(256, 256)
                self.pos = tnn.Parameter(torch.randn(1, 128, 256) * 0.02)
                # Flax's nn.gelu is the tanh approximation: the same here.
                layer = lambda: tnn.TransformerEncoderLayer(  # noqa: E731
                    256, 4, 1024, dropout=0.0, activation=lambda t: F.gelu(t, approximate="tanh"),
                    batch_first=True, norm_first=True)
                self.layers = tnn.ModuleList([layer() for _ in range(4)])
                self.norm = tnn.LayerNorm(256)
                self.head = tnn.Linear(256, 10)

            def forward(self, x):
                x = self.embed(x) + self.pos
                for layer in self.layers:
                    x = layer(x)
                return self.head(self.norm(x).mean(dim=1))

        return Transformer()
    from lm_torch import lm_model  # the language-model workloads (issue 24)

    return lm_model(name)


def torch_input(x: np.ndarray):
    if x.ndim == 4:  # NHWC -> NCHW, PyTorch's native layout
        x = x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x))


def _cold_inductor_cache() -> None:
    """Points inductor's on-disk caches at a new, empty folder (removed at exit) and empties dynamo's
    and inductor's in-memory caches, so that each compile is a first compile of its model, not a
    reuse of an earlier run's or workload's kernels. (With the new folder alone, a second run in the
    same process found every kernel in memory: its MLP "compiled" in 0.01 s against 12.1 s; with the
    caches emptied too, 2.6 s. The rest of the first figure is inductor's start-up in a process,
    which only the first compiled workload of a process pays.)"""
    from torch._inductor.utils import clear_caches

    folder = tempfile.mkdtemp(prefix="zoo-bench-inductor-")
    atexit.register(shutil.rmtree, folder, True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    torch.compiler.reset()
    clear_caches()


def torch_runner(name: str, x, y, learning_rate: float, compiled: bool = False):
    """(`run(n)`: n PyTorch Adam steps of workload `name` on the fixed batch (x, y), compile seconds).

    `compiled`: the model under `torch.compile` (inductor, its defaults: what a user writes first);
    the loss, backward and Adam step stay eager, as in PyTorch's own tutorials. Its compile seconds
    are the first step's wall time less a later step's (dynamo, AOTAutograd and inductor compile the
    forward and backward graphs during the first step); None for eager."""
    if compiled:
        _cold_inductor_cache()
    torch.manual_seed(0)
    model = torch_model(name)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    forward = torch.compile(model) if compiled else model
    tx, ty = torch_input(x), torch.from_numpy(y.astype(np.int64))

    def run(n: int):
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            out = forward(tx)
            out = out[0] if isinstance(out, tuple) else out  # the LMs return (logits, cache)
            loss = F.cross_entropy(out.flatten(0, -2), ty.flatten())  # per example, or per position (LM)
            loss.backward()
            optimizer.step()
        loss.item()

    if not compiled:
        return run, None
    first = _seconds(run)
    return run, max(0.0, first - _seconds(run))


def _seconds(run) -> float:
    start = time.perf_counter()
    run(1)
    return time.perf_counter() - start
