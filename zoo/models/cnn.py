"""CNN family: a configurable conv/pool stack and LeNet-5, 1-D or 2-D from the input's rank."""

from __future__ import annotations

import flax.linen as nn

from zoo.models import Entry
from zoo.models.layers import Conv, avg_pool, max_pool  # noqa: F401  (max_pool: public here too)
from zoo.models.mlp import ACTIVATIONS, check_choice, embed_tokens, input_kind


def as_features(x, vocab_size, embed_dim: int, model: str):
    """Images and signals pass through; token ids become an embedded 1-D sequence."""
    if input_kind(x, model) == "tokens":
        return embed_tokens(x, vocab_size, embed_dim, model)
    return x


class CNN(nn.Module):
    """Conv (+BatchNorm) + ReLU + 2x max-pool per entry of `features`, then a dense head."""

    num_classes: int
    vocab_size: int | None = None
    features: tuple = (32, 64)
    kernel_size: int = 3
    pool: bool = True
    hidden: int = 128
    dropout: float = 0.0
    norm: str = "none"
    embed_dim: int = 64

    def __post_init__(self):
        check_choice("norm", self.norm, ("none", "batch"))
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = as_features(x, self.vocab_size, self.embed_dim, "cnn")
        kernel = (self.kernel_size,) * (x.ndim - 2)
        for channels in self.features:
            x = Conv(channels, kernel, padding="SAME", use_bias=self.norm == "none")(x)
            if self.norm == "batch":
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = nn.relu(x)
            if self.pool:
                x = max_pool(x)
        x = x.reshape(x.shape[0], -1)
        if self.hidden:
            x = nn.relu(nn.Dense(self.hidden)(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


class LeNet5(nn.Module):
    """LeNet-5: conv 6@5x5, pool, conv 16@5x5, pool, dense 120-84; 'SAME' padding so 8x8 works."""

    num_classes: int
    vocab_size: int | None = None
    activation: str = "tanh"
    pooling: str = "avg"
    embed_dim: int = 32

    def __post_init__(self):
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_choice("pooling", self.pooling, ("avg", "max"))
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = ACTIVATIONS[self.activation]
        pool = avg_pool if self.pooling == "avg" else max_pool
        x = as_features(x, self.vocab_size, self.embed_dim, "lenet5")
        kernel = (5,) * (x.ndim - 2)
        x = pool(act(Conv(6, kernel, padding="SAME")(x)))
        x = pool(act(Conv(16, kernel, padding="SAME")(x)))
        x = x.reshape(x.shape[0], -1)
        x = act(nn.Dense(120)(x))
        x = act(nn.Dense(84)(x))
        return nn.Dense(self.num_classes)(x)


ENTRIES = [
    Entry("cnn", "cnn", "conv/pool stack with a dense head; 1-D or 2-D by input", CNN, {}),
    Entry("lenet5", "cnn", "LeNet-5 (LeCun et al. 1998) with 'SAME' padding; 1-D or 2-D", LeNet5, {}),
]
