"""Transformer family: a pre-LayerNorm encoder classifier over tokens, signal patches or image patches."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.errors import ModelError
from zoo.models import layers
from zoo.models.common import (ACTIVATIONS, Entry, Precision, TestSettings, check_choice, compute_dtype, describe,
                               embed_tokens, input_kind)

FAMILY = "transformer"  # the family name every entry of this file carries


class _Projection(nn.Module):
    """The variables of an nn.DenseGeneral whose kernel has `shape` (its first `in_dims` axes contracted):
    a kernel initialized as nn.DenseGeneral does (flattened to 2-D for the initializer) and a zero bias."""

    shape: tuple[int, ...]
    in_dims: int
    kernel_init: Any = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self):
        flat = (math.prod(self.shape[:self.in_dims]), math.prod(self.shape[self.in_dims:]))
        kernel = self.param("kernel", lambda key, shape: self.kernel_init(key, flat).reshape(shape), self.shape)
        return kernel, self.param("bias", nn.initializers.zeros_init(), self.shape[self.in_dims:])


def fused_heads(x, num_heads: int, dtype):
    """Queries, keys and values (3, B, heads, L, depth) of x (B, L, width) from the variables of three
    nn.DenseGeneral(features=(heads, depth)) named query, key and value: one (width, 3 width) product
    (their kernels side by side, the kernel gradient through layers.matmul), each bias added in the
    head-major layout, as nn.DenseGeneral adds it to its own product (added to the fused product
    instead, the key bias's gradient, zero in exact arithmetic, came out with more rounding noise:
    Hessian-vector products differed from flax's by 1e-5). Call it inside a compact method: the
    projections' variables go to the calling module."""
    batch, length, width = x.shape
    heads, depth = num_heads, width // num_heads
    qkv = [_Projection((width, heads, depth), 1, name=name)() for name in ("query", "key", "value")]
    kernel = jnp.concatenate([k.reshape(width, width) for k, _ in qkv], axis=1)
    bias = jnp.stack([b for _, b in qkv])[:, None, :, None, :]  # (3, 1, heads, 1, depth)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=dtype)
    return layers.matmul(x, kernel).reshape(batch, length, 3, heads, depth).transpose(2, 0, 3, 1, 4) + bias


def merged_heads(y, dtype):
    """The output projection of nn.MultiHeadDotProductAttention (the variables of an nn.DenseGeneral
    named out) applied to head-major y (B, heads, L, depth): (B, L, heads * depth)."""
    batch, heads, length, depth = y.shape
    width = heads * depth
    out_kernel, out_bias = _Projection((heads, depth, width), 2, name="out")()
    y = y.transpose(0, 2, 1, 3).reshape(batch, length, width)
    y, out_kernel, out_bias = nn.dtypes.promote_dtype(y, out_kernel, out_bias, dtype=dtype)
    return layers.matmul(y, out_kernel.reshape(width, width)) + out_bias


def dropout_keep(module: nn.Module, length: int, rate: float, deterministic: bool):
    """Flax's broadcast dropout mask of attention weights: one (1, 1, L, L) draw from the module's
    'dropout' key (the same draws as nn.dot_product_attention's), or None without dropout."""
    if rate <= 0.0 or deterministic:
        return None
    return jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, (1, 1, length, length))


def apply_keep(weights, keep, rate: float):
    """weights * keep / (1 - rate), as flax's attention dropout has it; weights unchanged for keep None."""
    if keep is None:
        return weights
    return weights * (keep.astype(weights.dtype) / jnp.asarray(1.0 - rate, dtype=weights.dtype))


class SelfAttention(nn.Module):
    """`nn.MultiHeadDotProductAttention(num_heads, force_fp32_for_softmax=True)(x, x)`: its variables
    (query, key, value, out; the same shapes and initial values), its maths and its dropout draws,
    computed faster on CPU: one (width, 3 width) product for the queries, keys and values
    (`fused_heads`), the heads' products on (B, heads, L, head width) arrays. Name it as the module it
    replaces (MultiHeadDotProductAttention_0).
    """

    num_heads: int
    dropout_rate: float = 0.0
    deterministic: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        y = fused_heads(x, self.num_heads, self.dtype)
        query, key, value = y[0] / jnp.sqrt(y.shape[-1]).astype(y.dtype), y[1], y[2]
        weights = jax.nn.softmax((query @ key.swapaxes(-1, -2)).astype(jnp.float32))  # (B, heads, L, L)
        keep = dropout_keep(self, weights.shape[-1], self.dropout_rate, self.deterministic)
        weights = apply_keep(weights, keep, self.dropout_rate)
        return merged_heads(weights @ value, self.dtype)


class EncoderBlock(nn.Module):
    """x + attention(LN(x)), then x + MLP(LN(x)); layers compute in `dtype`, the softmax in float32.
    `fast_layers`: SelfAttention and layers.Dense (the same variables and maths as the stock
    nn.MultiHeadDotProductAttention and nn.Dense, faster on CPU)."""

    num_heads: int
    mlp_dim: int
    dropout: float = 0.0
    activation: str = "gelu"
    dtype: Any = jnp.float32
    fast_layers: bool = True

    @nn.compact
    def __call__(self, x, train: bool):
        drop = nn.Dropout(self.dropout, deterministic=not train)
        y = nn.LayerNorm(dtype=self.dtype)(x)
        if self.fast_layers:
            y = SelfAttention(self.num_heads, self.dropout, not train, self.dtype,
                              name="MultiHeadDotProductAttention_0")(y)
        else:
            y = nn.MultiHeadDotProductAttention(
                num_heads=self.num_heads, dropout_rate=self.dropout, deterministic=not train, dtype=self.dtype,
                force_fp32_for_softmax=True,
            )(y, y)
        x = x + drop(y)
        dense = layers.Dense if self.fast_layers else nn.Dense
        y = ACTIVATIONS[self.activation](dense(self.mlp_dim, dtype=self.dtype)(nn.LayerNorm(dtype=self.dtype)(x)))
        y = dense(x.shape[-1], dtype=self.dtype)(drop(y))
        return x + drop(y)


class Transformer(nn.Module):
    """Embeds the input into `width`-wide tokens, adds learned positions, encodes, pools, classifies.

    patch_size applies to images and signals; token ids are embedded one per position. The MLP's
    activation "gelu" is the tanh approximation (flax's default); timm and torch use "gelu_exact".
    `fast_layers` (default true) computes the blocks with EncoderBlock's fast layers; false, with the
    stock Flax ones (the same variables).
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
    fast_layers: bool = True

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
            x = EncoderBlock(self.num_heads, mlp_dim, self.dropout, self.activation, dtype, self.fast_layers)(x, train)
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
