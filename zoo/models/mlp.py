"""DNN family: a multilayer perceptron; also the input helpers every family shares."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from zoo.errors import ModelError
from zoo.models import Entry

ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu, "tanh": nn.tanh, "silu": nn.silu}

KIND_HELP = "image (B, H, W, C) float, signal (B, L, C) float or tokens (B, L) int"


def describe(x) -> str:
    """The dtype and shape of an array, for error messages."""
    return f"{x.dtype} of shape {tuple(x.shape)}"


def input_kind(x, model: str) -> str:
    """'tokens', 'signal' or 'image', from the dtype and rank of a batch."""
    if jnp.issubdtype(x.dtype, jnp.integer) and x.ndim == 2:
        return "tokens"
    if jnp.issubdtype(x.dtype, jnp.floating) and x.ndim in (3, 4):
        return "signal" if x.ndim == 3 else "image"
    raise ModelError(
        f"model '{model}' takes {KIND_HELP} inputs, got {describe(x)}; "
        "reshape the data to one of these"
    )


def embed_tokens(x, vocab_size: int | None, features: int, model: str):
    """Token ids (B, L) -> embeddings (B, L, features); call inside a compact method."""
    if vocab_size is None:
        raise ModelError(
            f"model '{model}' got token ids {describe(x)} but no vocab_size; "
            "pass vocab_size to build() (the dataset spec holds it)"
        )
    return nn.Embed(vocab_size, features, name="embed")(x)


def check_choice(field: str, value, choices) -> None:
    """Raises ValueError (build() turns it into ModelError) when value is not a valid choice."""
    if value not in choices:
        raise ValueError(f"{field} must be one of {', '.join(map(str, choices))}, got {value!r}")


class MLP(nn.Module):
    """Dense layers over the flattened input (tokens are embedded first)."""

    num_classes: int
    vocab_size: int | None = None
    hidden_sizes: tuple = (256, 256)
    activation: str = "relu"
    dropout: float = 0.0
    norm: str = "none"
    embed_dim: int = 32

    def __post_init__(self):
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_choice("norm", self.norm, ("none", "layer", "batch"))
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        if jnp.issubdtype(x.dtype, jnp.integer) and x.ndim == 2:
            x = embed_tokens(x, self.vocab_size, self.embed_dim, "mlp")
        elif not (jnp.issubdtype(x.dtype, jnp.floating) and x.ndim >= 2):
            raise ModelError(
                f"model 'mlp' takes float (B, ...) or int tokens (B, L) inputs, got {describe(x)}; "
                "cast features to float32"
            )
        x = x.reshape(x.shape[0], -1)
        for size in self.hidden_sizes:
            x = nn.Dense(size)(x)
            x = self._normalize(x, train)
            x = ACTIVATIONS[self.activation](x)
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)

    def _normalize(self, x, train: bool):
        if self.norm == "layer":
            return nn.LayerNorm()(x)
        if self.norm == "batch":
            return nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return x


ENTRIES = [
    Entry("mlp", "dnn", "multilayer perceptron over the flattened input", MLP, {}),
]
