"""DNN family: a multilayer perceptron over the flattened input (tokens are embedded first)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from zoo.errors import ModelError
from zoo.models.common import (ACTIVATIONS, Entry, Precision, TestSettings, check_choice, compute_dtype, describe,
                               embed_tokens)

FAMILY = "dnn"  # the family name every entry of this file carries


class MLP(nn.Module):
    """Dense (+norm) + activation (+dropout) per entry of `hidden_sizes`, then a dense head."""

    num_classes: int
    vocab_size: int | None = None
    model_name: str = "mlp"
    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    dropout: float = 0.0
    norm: str = "none"
    embed_dim: int = 32
    precision: Precision = "float32"

    def __post_init__(self):
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_choice("norm", self.norm, ("none", "layer", "batch"))
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        dtype = compute_dtype(self.precision)
        if jnp.issubdtype(x.dtype, jnp.integer) and x.ndim == 2:
            x = embed_tokens(x, self.vocab_size, self.embed_dim, self.model_name, dtype)
        elif not (jnp.issubdtype(x.dtype, jnp.floating) and x.ndim >= 2):
            raise ModelError(
                f"model '{self.model_name}' takes float (B, ...) or int tokens (B, L) inputs, "
                f"got {describe(x)}; cast features to float32"
            )
        x = x.reshape(x.shape[0], -1)
        for size in self.hidden_sizes:
            x = nn.Dense(size, dtype=dtype)(x)
            x = self._normalize(x, train, dtype)
            x = ACTIVATIONS[self.activation](x)
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=dtype)(x)

    def _normalize(self, x, train: bool, dtype):
        if self.norm == "layer":
            return nn.LayerNorm(dtype=dtype)(x)
        if self.norm == "batch":
            return nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype)(x)
        return x


ENTRIES = [
    Entry("mlp", FAMILY, "multilayer perceptron over the flattened input", MLP, {},
          test=TestSettings({"hidden_sizes": (16, 16), "norm": "batch", "dropout": 0.1}, representative=True)),
]
