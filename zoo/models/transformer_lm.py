"""Transformer family, language model: a GPT-style causal decoder (pre-LayerNorm) with learned or
rotary positions and optionally tied input/output embeddings.

`apply(x)` maps token ids (B, T) to next-token logits (B, T, num_classes) at every position. With
`decode=True` the keys and values of every layer are written to the 'cache' collection at the
position its `index` holds, and the new tokens attend to everything cached before them: a prompt of
any length up to `max_len` goes in at once (prefill), then one token per call (what `zoo sample`
does). Flax's `MultiHeadDotProductAttention(decode=True)` takes one token per call and has no place
for a rotary embedding between its projections and its cache, so the cache is kept here; the
attention itself is flax's `nn.dot_product_attention`. Training and evaluation (`fast_layers`, the
default) compute the same attention with the Transformer's fast layers (transformer.fused_heads).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.errors import ModelError
from zoo.models import layers
from zoo.models.common import (ACTIVATIONS, Entry, Precision, TestSettings, check_choice, check_token_ids,
                               compute_dtype, token_embedding)
from zoo.models.transformer import apply_keep, dropout_keep, fused_heads, merged_heads

FAMILY = "transformer"  # the family name every entry of this file carries
ROTARY_BASE = 10_000.0
# The fast causal attention splits the queries into this many blocks, each against the keys up to its
# last position only: the masked corner is never computed (a quarter of the products with two blocks).
# Causal attention alone (B 32, 4 heads, L 128, d 32), forward + backward: 16.0 ms in one block, 9.6
# ms in two, 12.9 ms in four (benchmarks/NOTES.md, round five).
CAUSAL_QUERY_BLOCKS = 2


def rotate(x, positions, base: float = ROTARY_BASE, heads_first: bool = False):
    """The rotary position embedding (Su et al. 2021, RoFormer) of queries or keys x (B, L, H, D) at
    `positions` (L,): the pair (x_i, x_{i + D/2}) is turned by the angle position * base^(-2i / D), so
    the product of a query and a key depends on their positions only through their difference.
    heads_first: x is (B, H, L, D)."""
    half = x.shape[-1] // 2
    frequencies = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions.astype(jnp.float32)[:, None] * frequencies
    cos, sin = jnp.cos(angles), jnp.sin(angles)  # (L, D/2): the same for every head
    if not heads_first:
        cos, sin = cos[:, None, :], sin[:, None, :]
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees itself and the positions before it.

    `fast_layers` (training and evaluation; decoding keeps the stock path and its cache): the same
    variables and maths computed as transformer.SelfAttention computes them, one (width, 3 width)
    product for the queries, keys and values and the heads' products on (B, heads, L, depth) arrays.
    """

    num_heads: int
    max_len: int
    rotary: bool
    dropout: float = 0.0
    dtype: Any = jnp.float32
    fast_layers: bool = True

    @nn.compact
    def __call__(self, x, positions, train: bool, decode: bool):
        if self.fast_layers and not decode:
            return self._fast(x, positions, train)
        width = x.shape[-1]
        project = functools.partial(nn.DenseGeneral, (self.num_heads, width // self.num_heads), dtype=self.dtype)
        query, key, value = (project(name=name)(x) for name in ("query", "key", "value"))
        if self.rotary:
            query, key = rotate(query, positions), rotate(key, positions)
        key_positions = positions
        if decode:
            key, value = self._cached(key, positions[0], "cached_key"), self._cached(value, positions[0], "cached_value")
            key_positions = jnp.arange(self.max_len)  # slots after the newest token are masked out
        mask = key_positions[None, :] <= positions[:, None]
        rng = self.make_rng("dropout") if train and self.dropout > 0 else None
        y = nn.dot_product_attention(query, key, value, mask=mask[None, None], dropout_rng=rng,
                                     dropout_rate=self.dropout, deterministic=not train, dtype=self.dtype,
                                     force_fp32_for_softmax=True)
        return nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype, name="out")(y)

    def _fast(self, x, positions, train: bool):
        y = fused_heads(x, self.num_heads, self.dtype)  # (3, B, heads, L, depth)
        query, key, value = y[0], y[1], y[2]
        if self.rotary:
            query, key = rotate(query, positions, heads_first=True), rotate(key, positions, heads_first=True)
        query = query / jnp.sqrt(query.shape[-1]).astype(query.dtype)
        length = query.shape[2]
        keep = dropout_keep(self, length, self.dropout, not train)
        blocks = CAUSAL_QUERY_BLOCKS if length % CAUSAL_QUERY_BLOCKS == 0 else 1
        size, outputs = length // blocks, []
        for block in range(blocks):  # queries [start, end) see keys [0, end)
            start, end = block * size, (block + 1) * size
            logits = query[:, :, start:end] @ key[:, :, :end].swapaxes(-1, -2)  # in dtype, as flax has it
            mask = positions[None, :end] <= positions[start:end, None]
            logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
            weights = jax.nn.softmax(logits.astype(jnp.float32))  # stays float32, as flax's force_fp32_for_softmax has it
            weights = apply_keep(weights, None if keep is None else keep[..., start:end, :end], self.dropout)
            outputs.append(weights @ value[:, :, :end])
        return merged_heads(jnp.concatenate(outputs, axis=2) if blocks > 1 else outputs[0], self.dtype)

    def _cached(self, new, start, name: str):
        """The cache of `name` (B, max_len, H, D) with `new` (B, L, H, D) written at `start`."""
        cache = self.variable("cache", name, jnp.zeros, (new.shape[0], self.max_len, *new.shape[2:]), new.dtype)
        cache.value = jax.lax.dynamic_update_slice(cache.value, new, (0, start, 0, 0))
        return cache.value


class DecoderBlock(nn.Module):
    """x + attention(LN(x)), then x + MLP(LN(x)); layers compute in `dtype`, the softmax in float32."""

    num_heads: int
    mlp_dim: int
    max_len: int
    rotary: bool
    dropout: float = 0.0
    activation: str = "gelu"
    dtype: Any = jnp.float32
    fast_layers: bool = True

    @nn.compact
    def __call__(self, x, positions, train: bool, decode: bool):
        drop = nn.Dropout(self.dropout, deterministic=not train)
        attention = CausalSelfAttention(self.num_heads, self.max_len, self.rotary, self.dropout, self.dtype,
                                        self.fast_layers)
        x = x + drop(attention(nn.LayerNorm(dtype=self.dtype)(x), positions, train, decode))
        dense = layers.Dense if self.fast_layers else nn.Dense
        y = dense(self.mlp_dim, dtype=self.dtype)(nn.LayerNorm(dtype=self.dtype)(x))
        y = dense(x.shape[-1], dtype=self.dtype)(drop(ACTIVATIONS[self.activation](y)))
        return x + drop(y)


class TransformerLM(nn.Module):
    """Token ids (B, T), T <= max_len -> next-token logits (B, T, num_classes), num_classes = vocab_size.

    positions: "learned" (a (max_len, width) table added to the embeddings) or "rotary" (queries and
    keys rotated in every layer; no parameters). tie_embeddings: the output layer is the transposed
    token embedding (`nn.Embed.attend`), as in GPT-2. `fast_layers` (default true): the blocks' attention
    and dense layers and the output layer computed faster on CPU with the same variables (the
    Transformer's fast layers); false, the stock Flax ones.
    """

    num_classes: int
    vocab_size: int | None = None
    model_name: str = "transformer_lm"
    width: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_dim: int | None = None
    dropout: float = 0.0
    max_len: int = 256
    positions: str = "learned"
    tie_embeddings: bool = False
    activation: str = "gelu"
    precision: Precision = "float32"
    fast_layers: bool = True

    def __post_init__(self):
        check_choice("positions", self.positions, ("learned", "rotary"))
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} must be divisible by num_heads {self.num_heads}")
        if self.positions == "rotary" and (self.width // self.num_heads) % 2:
            raise ValueError(f"rotary positions turn pairs of features: width / num_heads = "
                             f"{self.width // self.num_heads} must be even")
        if self.tie_embeddings and self.vocab_size is not None and self.vocab_size != self.num_classes:
            raise ValueError(f"tie_embeddings needs as many outputs as tokens: num_classes {self.num_classes} "
                             f"!= vocab_size {self.vocab_size}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False, decode: bool = False):
        dtype = compute_dtype(self.precision)
        check_token_ids(x, self.model_name)
        if x.shape[1] > self.max_len:
            raise ModelError(f"model '{self.model_name}' takes at most max_len {self.max_len} positions, got "
                             f"{x.shape[1]}: raise model.max_len or lower data.seq_len")
        positions = jnp.arange(x.shape[1])
        if decode:
            index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
            positions = positions + index.value
            index.value = index.value + x.shape[1]
        embed = token_embedding(x, self.vocab_size, self.width, self.model_name, dtype)
        h = embed(x)
        if self.positions == "learned":
            table = self.param("pos_embedding", nn.initializers.normal(0.02), (self.max_len, self.width))
            h = h + jnp.take(table, positions, axis=0).astype(dtype)
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        for _ in range(self.depth):
            h = DecoderBlock(self.num_heads, self.mlp_dim or 4 * self.width, self.max_len,
                             self.positions == "rotary", self.dropout, self.activation, dtype,
                             self.fast_layers)(h, positions, train, decode)
        h = nn.LayerNorm(dtype=dtype)(h)
        if self.tie_embeddings:
            return embed.attend(h)
        dense = layers.Dense if self.fast_layers else nn.Dense
        return dense(self.num_classes, dtype=dtype, name="head")(h)


ENTRIES = [
    Entry("transformer_lm", FAMILY, "GPT-style causal decoder LM (pre-LN; learned|rotary positions; tied embeddings)",
          TransformerLM, {}, input_kinds=("tokens",), tasks=("lm",),
          test=TestSettings({"width": 8, "depth": 1, "num_heads": 2, "mlp_dim": 16, "max_len": 8,
                             "positions": "rotary", "dropout": 0.1}, {"tokens": (8,)})),
]
