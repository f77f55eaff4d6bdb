"""RNN family: stacked simple/LSTM/GRU layers (optionally bidirectional) classifying from the last state."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from zoo.models import layers
from zoo.models.common import (Entry, Precision, TestSettings, check_choice, check_token_ids, compute_dtype,
                               embed_tokens, input_kind)

FAMILY = "rnn"  # the family name every entry of this file carries

CELLS = {"simple": nn.SimpleCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


def last_hidden(carry):
    """The hidden state in a cell's carry (an LSTM carries (c, h); the others just h)."""
    return carry[1] if isinstance(carry, tuple) else carry


def zeros_carry(dtype):
    """A carry initializer in the compute dtype (Flax's cells start from `param_dtype`, float32); the
    scan needs the carry a cell returns to keep the dtype it started in."""
    return lambda key, shape, _param_dtype: jnp.zeros(shape, dtype)


class RNN(nn.Module):
    """Reads images row by row, signals step by step, tokens through an embedding.

    With `fast_layers`, LSTM layers are zoo's fast LSTM (the same variables as
    `nn.RNN(nn.LSTMCell)`); simple and GRU cells are always flax's.
    """

    num_classes: int
    vocab_size: int | None = None
    model_name: str = "rnn"
    cell: str = "simple"
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    embed_dim: int = 64
    fast_layers: bool = True
    precision: Precision = "float32"

    def __post_init__(self):
        check_choice("cell", self.cell, tuple(CELLS))
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {self.num_layers}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = self._as_sequence(x)
        for layer in range(self.num_layers):
            if layer:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
            carry, x = self._layer(layer)(x)
        if self.bidirectional:
            state = jnp.concatenate([last_hidden(c) for c in carry], axis=-1)
        else:
            state = last_hidden(carry)
        return nn.Dense(self.num_classes, dtype=compute_dtype(self.precision))(state)

    def _as_sequence(self, x):
        kind = input_kind(x, self.model_name)
        if kind == "tokens":
            return embed_tokens(x, self.vocab_size, self.embed_dim, self.model_name, compute_dtype(self.precision))
        if kind == "image":
            return x.reshape(*x.shape[:2], -1)  # (B, H, W, C) -> rows (B, H, W*C)
        return x

    def _layer(self, index: int):
        if self.bidirectional:
            return nn.Bidirectional(self._recurrent(2 * index), self._recurrent(2 * index + 1),
                                    return_carry=True)
        return self._recurrent(index)

    def _recurrent(self, index: int):
        return recurrent(self.cell, self.hidden_size, self.fast_layers, compute_dtype(self.precision), index)


def recurrent(cell: str, hidden_size: int, fast_layers: bool, dtype, index: int):
    """One direction of one layer, returning (carry, outputs); call inside a compact method. Its cell's
    variables are named <Cell>_<index> either way (zoo's fast LSTM or `nn.RNN` of a flax cell)."""
    if cell == "lstm" and fast_layers:
        return layers.LSTM(hidden_size, dtype=dtype, name=f"LSTMCell_{index}")
    return nn.RNN(CELLS[cell](hidden_size, dtype=dtype, carry_init=zeros_carry(dtype)), return_carry=True)


class RNNLM(nn.Module):
    """A language model: token ids (B, T) -> next-token logits (B, T, num_classes) at every position,
    the state carried through the window by stacked simple/LSTM/GRU layers.

    With `decode=True` the carry of every layer is read from and written to the 'cache' collection
    (zeros when it starts), so a prompt run through it and then one token per call continue one
    sequence: what `zoo sample` does.
    """

    num_classes: int
    vocab_size: int | None = None
    model_name: str = "rnn_lm"
    cell: str = "simple"
    embed_dim: int = 64  # token embedding width
    hidden_size: int = 256  # per layer
    num_layers: int = 1
    dropout: float = 0.0  # between layers and before the output layer
    fast_layers: bool = True  # zoo's fast LSTM (layers.LSTM) for cell lstm
    precision: Precision = "float32"

    def __post_init__(self):
        check_choice("cell", self.cell, tuple(CELLS))
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False, decode: bool = False):
        dtype = compute_dtype(self.precision)
        check_token_ids(x, self.model_name)
        h = embed_tokens(x, self.vocab_size, self.embed_dim, self.model_name, dtype)
        for index in range(self.num_layers):
            if index:
                h = nn.Dropout(self.dropout, deterministic=not train)(h)
            carry = self._carry(index, x.shape[0], dtype) if decode else None
            new_carry, h = recurrent(self.cell, self.hidden_size, self.fast_layers, dtype, index)(
                h, initial_carry=None if carry is None else carry.value)
            if decode:
                carry.value = new_carry
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return nn.Dense(self.num_classes, dtype=dtype, name="head")(h)

    def _carry(self, index: int, batch: int, dtype):
        """Layer `index`'s carry in the 'cache' collection: (c, h) for an LSTM, h otherwise; zeros at first."""
        def zeros():
            state = jnp.zeros((batch, self.hidden_size), dtype)
            return (state, state) if self.cell == "lstm" else state

        return self.variable("cache", f"carry_{index}", zeros)


ENTRIES = [
    Entry("rnn", FAMILY, "recurrent classifier (simple|lstm|gru cells) over rows, steps or tokens", RNN, {},
          test=TestSettings({"hidden_size": 6, "num_layers": 2, "bidirectional": True, "dropout": 0.1})),
    # Signals first: its family's fast checks run the fast LSTM over a sequence of steps.
    Entry("lstm", FAMILY, "LSTM classifier from the last hidden state", RNN, {"cell": "lstm"},
          test=TestSettings({"hidden_size": 6}, {"signal": (16, 1), "image": (8, 8, 1), "tokens": (16,)},
                            representative=True)),
    Entry("gru", FAMILY, "GRU classifier from the last hidden state", RNN, {"cell": "gru"},
          test=TestSettings({"hidden_size": 6})),
    # Language models (task lm): next-token logits at every position of a token window.
    Entry("rnn_lm", FAMILY, "recurrent language model (simple|lstm|gru cells): next-token logits", RNNLM,
          {}, input_kinds=("tokens",), tasks=("lm",),
          test=TestSettings({"cell": "simple", "hidden_size": 6, "embed_dim": 4, "num_layers": 2, "dropout": 0.1},
                            {"tokens": (8,)})),
    Entry("lstm_lm", FAMILY, "LSTM language model: next-token logits, state carried through the window", RNNLM,
          {"cell": "lstm"}, input_kinds=("tokens",), tasks=("lm",),
          test=TestSettings({"hidden_size": 6, "embed_dim": 4}, {"tokens": (8,)})),
    Entry("gru_lm", FAMILY, "GRU language model: next-token logits, state carried through the window", RNNLM,
          {"cell": "gru"}, input_kinds=("tokens",), tasks=("lm",),
          test=TestSettings({"hidden_size": 6, "embed_dim": 4}, {"tokens": (8,)})),
]
