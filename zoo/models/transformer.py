"""Transformer family: a pre-LayerNorm encoder classifier over tokens, signal patches or image patches."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from zoo.errors import ModelError
from zoo.models.common import (ACTIVATIONS, Entry, Precision, TestSettings, check_choice, compute_dtype, describe,
                               embed_tokens, input_kind)

FAMILY = "transformer"  # the family name every entry of this file carries


class EncoderBlock(nn.Module):
    """x + attention(LN(x)), then x + MLP(LN(x)); layers compute in `dtype`, the softmax in float32."""

    num_heads: int
    mlp_dim: int
    dropout: float = 0.0
    activation: str = "gelu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        drop = nn.Dropout(self.dropout, deterministic=not train)
        y = nn.LayerNorm(dtype=self.dtype)(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, dropout_rate=self.dropout, deterministic=not train, dtype=self.dtype,
            force_fp32_for_softmax=True,
        )(y, y)
        x = x + drop(y)
        y = ACTIVATIONS[self.activation](nn.Dense(self.mlp_dim, dtype=self.dtype)(nn.LayerNorm(dtype=self.dtype)(x)))
        y = nn.Dense(x.shape[-1], dtype=self.dtype)(drop(y))
        return x + drop(y)


class Transformer(nn.Module):
    """Embeds the input into `width`-wide tokens, adds learned positions, encodes, pools, classifies.

    patch_size applies to images and signals; token ids are embedded one per position. The MLP's
    activation "gelu" is the tanh approximation (flax's default); timm and torch use "gelu_exact".
    """

    num_classes: int
    vocab_size: int | None = None
    model_name: str = "transformer"
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_dim: int | None = None
    dropout: float = 0.0
    patch_size: int = 1
    pool: str = "mean"
    activation: str = "gelu"
    precision: Precision = "float32"

    def __post_init__(self):
        check_choice("pool", self.pool, ("cls", "mean"))
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} must be divisible by num_heads {self.num_heads}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        dtype = compute_dtype(self.precision)
        x = self._tokens(x, dtype)
        if self.pool == "cls":
            cls = self.param("cls", nn.initializers.zeros, (1, 1, self.width)).astype(dtype)
            x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.width)), x], axis=1)
        # Learned positions fix the sequence length at init, as in ViT.
        positions = self.param("pos_embedding", nn.initializers.normal(0.02), (1, *x.shape[1:]))
        x = nn.Dropout(self.dropout, deterministic=not train)(x + positions.astype(dtype))
        mlp_dim = self.mlp_dim or 4 * self.width
        for _ in range(self.depth):
            x = EncoderBlock(self.num_heads, mlp_dim, self.dropout, self.activation, dtype)(x, train)
        x = nn.LayerNorm(dtype=dtype)(x)
        x = x[:, 0] if self.pool == "cls" else x.mean(axis=1)
        return nn.Dense(self.num_classes, dtype=dtype)(x)

    def _tokens(self, x, dtype):
        """(B, N, width): token embeddings, or non-overlapping patches through a strided conv."""
        if input_kind(x, self.model_name) == "tokens":
            return embed_tokens(x, self.vocab_size, self.width, self.model_name, dtype)
        spatial = x.shape[1:-1]
        if min(spatial) < self.patch_size:
            raise ModelError(
                f"model '{self.model_name}' with patch_size {self.patch_size} cannot split input "
                f"{describe(x)} into patches; use a patch_size of at most {min(spatial)}"
            )
        patch = (self.patch_size,) * len(spatial)
        x = nn.Conv(self.width, patch, strides=patch, padding="VALID", dtype=dtype, name="patch_embed")(x)
        return x.reshape(x.shape[0], -1, self.width)


ENTRIES = [
    # Tokens first: its family's fast checks run the embedding; the class token and dropout reach more code.
    Entry("transformer", FAMILY, "pre-LN encoder over tokens, signal or image patches (ViT)",
          Transformer, {},
          test=TestSettings({"width": 16, "depth": 1, "num_heads": 2, "mlp_dim": 32, "patch_size": 2, "pool": "cls",
                             "dropout": 0.1},
                            {"tokens": (16,), "image": (8, 8, 1), "signal": (16, 1)}, representative=True)),
    # The transformer's blocks, wider and deeper; its 16x16 patches need 32x32 images (2x2 patches).
    Entry(
        "vit_tiny", FAMILY, "ViT-Ti/16 (Dosovitskiy et al. 2021) for 224x224 images", Transformer,
        {"width": 192, "depth": 12, "num_heads": 3, "mlp_dim": 768, "patch_size": 16, "pool": "cls"},
        test=TestSettings(shapes={"image": (32, 32, 1), "signal": (64, 1), "tokens": (4,)}, traced_only=True),
    ),
    Entry(
        "vit_digits", FAMILY, "small ViT for 8x8 digits: 2x2 patches, width 64, depth 2", Transformer,
        {"width": 64, "depth": 2, "num_heads": 4, "mlp_dim": 128, "patch_size": 2},
        test=TestSettings({"pool": "cls"}),
    ),
]
