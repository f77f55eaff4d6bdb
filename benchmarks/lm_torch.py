"""PyTorch language models at the zoo's shapes, for the benchmarks only (bench.py's lm_lstm and
lm_transformer workloads, decode_bench.py): an LSTM LM and a GPT-style pre-LN causal decoder with
learned positions and a KV cache. The zoo never imports PyTorch; only these benchmarks do.

Each model's `forward(x, cache=None)` takes token ids (B, L) and returns (logits (B, L, V), cache):
with a cache (`empty_cache`), the tokens continue the sequence it holds (prefill, then one token per
call), as the zoo's `decode=True` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LSTMLM(nn.Module):
    """Embedding -> LSTM -> linear, the state carried between calls (torch keeps two biases per gate,
    flax one: 4H more parameters per layer; the same work)."""

    def __init__(self, vocab: int, embed: int, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def empty_cache(self, batch: int):
        return None  # nn.LSTM starts from zeros

    def forward(self, x, cache=None):
        h, state = self.lstm(self.embed(x), cache)
        return self.head(h), state


class Block(nn.Module):
    """x + attention(LN(x)), x + MLP(LN(x)); the tanh GELU, as flax's nn.gelu (the zoo's "gelu")."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x, cache=None):
        """`cache`: (keys, values, length) of the positions before x, or None (x is the whole sequence)."""
        batch, length, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, length, 3, self.heads, width // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, L, D)
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            keys, values, start = cache
            keys[:, :, start:start + length], values[:, :, start:start + length] = k, v
            seen = torch.arange(start + length)
            mask = seen[None, :] <= (start + torch.arange(length))[:, None]
            y = F.scaled_dot_product_attention(q, keys[:, :, :start + length], values[:, :, :start + length],
                                               attn_mask=mask)
            cache = (keys, values, start + length)
        x = x + self.out(y.transpose(1, 2).reshape(batch, length, width))
        return x + self.down(F.gelu(self.up(self.norm2(x)), approximate="tanh")), cache


class GPTLM(nn.Module):
    """Token + learned position embeddings, pre-LN blocks, final LN, linear head: the zoo's
    transformer_lm with positions: learned, untied."""

    def __init__(self, vocab: int, width: int, depth: int, heads: int, max_len: int):
        super().__init__()
        self.max_len, self.heads = max_len, heads
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.randn(max_len, width) * 0.02)
        self.blocks = nn.ModuleList([Block(width, heads) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, vocab)

    def empty_cache(self, batch: int):
        width = self.embed.embedding_dim
        shape = (batch, self.heads, self.max_len, width // self.heads)
        return [(torch.zeros(shape), torch.zeros(shape), 0) for _ in self.blocks]

    def forward(self, x, cache=None):
        start = 0 if cache is None else cache[0][2]
        h = self.embed(x) + self.pos[start:start + x.shape[1]]
        new_cache = []
        for i, block in enumerate(self.blocks):
            h, layer_cache = block(h, None if cache is None else cache[i])
            new_cache.append(layer_cache)
        return self.head(self.norm(h)), (new_cache if cache is not None else None)


def lm_model(name: str):
    """The PyTorch model of bench.py's LM workload `name` (the shapes of its Workload entry)."""
    if name == "lm_lstm":
        return LSTMLM(256, 64, 256)
    if name == "lm_transformer":
        return GPTLM(256, 128, 4, 4, 128)
    raise KeyError(name)
