"""CNN family: a configurable conv/pool stack and LeNet-5, 1-D or 2-D from the input's rank."""

from __future__ import annotations

import functools

import flax.linen as nn

from zoo.models import layers
from zoo.models.common import ACTIVATIONS, Entry, Precision, TestSettings, as_features, check_choice, compute_dtype

FAMILY = "cnn"  # the family name every entry of this file carries


def _flax_pool(pool, x, window: int = 2):
    """Stock `nn.max_pool`/`nn.avg_pool` with the fast pools' windows (1 on axes of size 1)."""
    windows = tuple(window if size > 1 else 1 for size in x.shape[1:-1])
    return pool(x, windows, windows, padding="SAME")


def pick_layers(fast: bool):
    """(conv, max_pool, avg_pool): zoo's fast layers, or stock flax ones with the same maths."""
    if fast:
        return layers.Conv, layers.max_pool, layers.avg_pool
    return nn.Conv, functools.partial(_flax_pool, nn.max_pool), functools.partial(_flax_pool, nn.avg_pool)


class CNN(nn.Module):
    """Conv (+BatchNorm) + ReLU + 2x max-pool per entry of `features`, then a dense head."""

    num_classes: int
    vocab_size: int | None = None
    model_name: str = "cnn"
    features: tuple[int, ...] = (32, 64)
    kernel_size: int = 3
    pool: bool = True
    hidden: int = 128
    dropout: float = 0.0
    norm: str = "none"
    embed_dim: int = 64
    fast_layers: bool = True
    precision: Precision = "float32"

    def __post_init__(self):
        check_choice("norm", self.norm, ("none", "batch"))
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv, max_pool, _ = pick_layers(self.fast_layers)
        dtype = compute_dtype(self.precision)
        x = as_features(x, self.vocab_size, self.embed_dim, self.model_name, dtype)
        kernel = (self.kernel_size,) * (x.ndim - 2)
        for i, channels in enumerate(self.features):
            if self.fast_layers and self.pool and self.norm == "none":
                # conv -> bias -> ReLU -> pool, computed as conv -> pool -> bias -> ReLU (the same values)
                x = nn.relu(layers.ConvMaxPool(channels, kernel, dtype=dtype, name=f"Conv_{i}")(x))
                continue
            x = conv(channels, kernel, padding="SAME", use_bias=self.norm == "none", dtype=dtype)(x)
            if self.norm == "batch":
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype)(x)
            x = nn.relu(x)
            if self.pool:
                x = max_pool(x)
        x = x.reshape(x.shape[0], -1)
        if self.hidden:
            x = nn.relu(nn.Dense(self.hidden, dtype=dtype)(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=dtype)(x)


class LeNet5(nn.Module):
    """LeNet-5: conv 6@5x5, pool, conv 16@5x5, pool, dense 120-84; 'SAME' padding so 8x8 works."""

    num_classes: int
    vocab_size: int | None = None
    model_name: str = "lenet5"
    activation: str = "tanh"
    pooling: str = "avg"
    embed_dim: int = 32
    fast_layers: bool = True
    precision: Precision = "float32"

    def __post_init__(self):
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_choice("pooling", self.pooling, ("avg", "max"))
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv, max_pool, avg_pool = pick_layers(self.fast_layers)
        act = ACTIVATIONS[self.activation]
        pool = avg_pool if self.pooling == "avg" else max_pool
        dtype = compute_dtype(self.precision)
        x = as_features(x, self.vocab_size, self.embed_dim, self.model_name, dtype)
        kernel = (5,) * (x.ndim - 2)
        x = pool(act(conv(6, kernel, padding="SAME", dtype=dtype)(x)))
        x = pool(act(conv(16, kernel, padding="SAME", dtype=dtype)(x)))
        x = x.reshape(x.shape[0], -1)
        x = act(nn.Dense(120, dtype=dtype)(x))
        x = act(nn.Dense(84, dtype=dtype)(x))
        return nn.Dense(self.num_classes, dtype=dtype)(x)


ENTRIES = [
    # BatchNorm puts the fast conv after a normalization, as in the ResNets.
    Entry("cnn", FAMILY, "conv/pool stack with a dense head; 1-D or 2-D by input", CNN, {},
          test=TestSettings({"features": (4, 8), "hidden": 8, "norm": "batch", "dropout": 0.1}, representative=True)),
    Entry("lenet5", FAMILY, "LeNet-5 (LeCun et al. 1998) with 'SAME' padding; 1-D or 2-D", LeNet5, {}),
]
