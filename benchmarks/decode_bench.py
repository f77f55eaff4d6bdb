"""Decode speed of the zoo's language models (issue 24): tokens/s of greedy generation, batch 1.

- transformer_lm with its KV cache (`zoo.inference.sample.generator`: a prefill, then one token per
  step of a `lax.scan`, one jitted call), against the same model recomputing the whole sequence at
  every step (a jitted scan over full forward passes of the prompt + N tokens: static shapes, causal,
  so the tokens not yet generated change nothing), and against PyTorch's own cached loop at the same
  size (eager, `torch.no_grad`, lm_torch.GPTLM: a Python loop of one-token forwards over a KV cache).
- lstm_lm with its carried state, against PyTorch's nn.LSTM stepping its (h, c) in a Python loop.

Randomly initialised weights (speed does not depend on them); the zoo's cached and recomputed
greedy tokens are checked to be the same. Timings are interleaved in rounds (the order rotates),
medians reported with the machine's load: the machine is shared.

    python benchmarks/decode_bench.py                    # prints a markdown table
    python benchmarks/decode_bench.py --rounds 5 --out benchmarks/DECODE.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # lm_torch, bench
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench.torch_available

VOCAB, PROMPT, NEW = 256, 32, 224  # byte vocabulary; prompt + new tokens = the transformer's max_len
TRANSFORMER = {"width": 128, "depth": 4, "num_heads": 4, "max_len": PROMPT + NEW}
LSTM = {"hidden_size": 256, "embed_dim": 64}


def zoo_model(name: str, hparams: dict):
    from zoo import models

    model = models.build(name, VOCAB, VOCAB, **hparams)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    return model, params


def zoo_cached(model, params, prompt):
    """run() -> tokens: the zoo's sampler (KV cache / carried state), greedy, compiled beforehand."""
    from zoo.inference.sample import generator

    fn = generator(model.module, len(prompt), NEW, True, None, False)
    args = (params, jnp.asarray(prompt), jax.random.key(0), jnp.float32(1.0), jnp.float32(1.0))
    compiled = fn.lower(*args).compile()
    return lambda: np.asarray(jax.block_until_ready(compiled(*args)))


def zoo_recomputed(model, params, prompt):
    """run() -> tokens: greedy, every step a full forward over the whole (static-length) sequence."""
    total = len(prompt) + NEW

    def generate(params, prompt):
        buffer = jnp.zeros(total, jnp.int32).at[:len(prompt)].set(prompt)

        def step(buffer, i):
            logits = model.apply({"params": params}, buffer[None])[0][0, len(prompt) + i - 1]
            token = jnp.argmax(logits).astype(jnp.int32)
            return buffer.at[len(prompt) + i].set(token), token

        return jax.lax.scan(step, buffer, jnp.arange(NEW))[1]

    compiled = jax.jit(generate).lower(params, jnp.asarray(prompt)).compile()
    return lambda: np.asarray(jax.block_until_ready(compiled(params, jnp.asarray(prompt))))


def torch_cached(model, prompt):
    """run() -> tokens: PyTorch eager, prefill then one token per call over the model's cache."""
    import torch

    model.eval()
    ids = torch.as_tensor(np.asarray(prompt, np.int64))[None]

    def run():
        with torch.no_grad():
            logits, cache = model(ids, model.empty_cache(1))
            out = []
            for _ in range(NEW):
                token = logits[:, -1].argmax(-1, keepdim=True)
                out.append(int(token))
                logits, cache = model(token, cache)
        return np.asarray(out)

    return run


def torch_recomputed(model, prompt):
    """run() -> tokens: PyTorch eager, every step a forward over the whole prefix so far."""
    import torch

    model.eval()

    def run():
        ids = torch.as_tensor(np.asarray(prompt, np.int64))[None]
        with torch.no_grad():
            for _ in range(NEW):
                token = model(ids)[0][:, -1].argmax(-1, keepdim=True)
                ids = torch.cat([ids, token], dim=1)
        return ids[0, len(prompt):].numpy()

    return run


def methods() -> dict:
    """{label: run()} of every measured way to generate NEW tokens after a PROMPT-token prompt."""
    import torch
    from lm_torch import GPTLM, LSTMLM

    torch.manual_seed(0)
    prompt = np.random.default_rng(0).integers(0, VOCAB, PROMPT).astype(np.int32)
    transformer, transformer_params = zoo_model("transformer_lm", TRANSFORMER)
    lstm, lstm_params = zoo_model("lstm_lm", LSTM)
    width, depth, heads = TRANSFORMER["width"], TRANSFORMER["depth"], TRANSFORMER["num_heads"]
    return {
        "transformer: zoo, KV cache": zoo_cached(transformer, transformer_params, prompt),
        "transformer: zoo, recompute": zoo_recomputed(transformer, transformer_params, prompt),
        "transformer: PyTorch eager, KV cache": torch_cached(GPTLM(VOCAB, width, depth, heads, PROMPT + NEW), prompt),
        "transformer: PyTorch eager, recompute": torch_recomputed(GPTLM(VOCAB, width, depth, heads, PROMPT + NEW),
                                                                  prompt),
        "lstm: zoo, carried state": zoo_cached(lstm, lstm_params, prompt),
        "lstm: PyTorch eager, carried state": torch_cached(LSTMLM(VOCAB, LSTM["embed_dim"], LSTM["hidden_size"]),
                                                           prompt),
    }


def measure(rounds: int) -> tuple[dict, bool]:
    """({label: seconds for NEW tokens, one per round}, whether the zoo's cached and recomputed tokens agree)."""
    runs = methods()
    outputs = {label: run() for label, run in runs.items()}  # warm-up (and the tokens compared)
    agree = bool(np.array_equal(outputs["transformer: zoo, KV cache"], outputs["transformer: zoo, recompute"]))
    labels, samples = list(runs), {label: [] for label in runs}
    for i in range(rounds):
        for label in labels[i % len(labels):] + labels[:i % len(labels)]:
            start = time.perf_counter()
            runs[label]()
            samples[label].append(time.perf_counter() - start)
    return samples, agree


def report(samples: dict, agree: bool, loads: tuple, rounds: int) -> str:
    """Markdown: tokens/s (median over rounds) of each method, and ratios as medians of the per-round
    ratios (both sides of a ratio timed in the same round, so a load that comes and goes cancels)."""
    import torch

    seconds = {label: statistics.median(s) for label, s in samples.items()}
    rate = {label: NEW / s for label, s in seconds.items()}
    ratio = lambda a, b: statistics.median(t_b / t_a for t_a, t_b in zip(samples[a], samples[b]))  # noqa: E731
    from bench import machine

    info = machine()
    lines = [f"Greedy decoding, batch 1, {PROMPT}-token prompt + {NEW} new tokens, vocabulary {VOCAB}; transformer_lm "
             f"{TRANSFORMER}, lstm_lm {LSTM}. Medians of {rounds} interleaved rounds; ratios are medians of "
             "per-round ratios (> 1: the first is faster).", "",
             "| method | tokens/s | ms/token |", "|---|---:|---:|"]
    lines += [f"| {label} | {rate[label]:,.0f} | {1e3 / rate[label]:.2f} |" for label in seconds]
    lines += ["", f"- transformer, zoo KV cache / zoo recompute: {ratio('transformer: zoo, KV cache', 'transformer: zoo, recompute'):.1f}x "
              f"(the same greedy tokens: {'yes' if agree else 'NO'})",
              f"- transformer, zoo KV cache / PyTorch eager KV cache: "
              f"{ratio('transformer: zoo, KV cache', 'transformer: PyTorch eager, KV cache'):.1f}x",
              f"- transformer, PyTorch KV cache / PyTorch recompute: "
              f"{ratio('transformer: PyTorch eager, KV cache', 'transformer: PyTorch eager, recompute'):.1f}x",
              f"- lstm, zoo / PyTorch eager: {ratio('lstm: zoo, carried state', 'lstm: PyTorch eager, carried state'):.1f}x",
              f"- machine: {info.get('cpu')} ({info.get('isa')}), {os.cpu_count()} cores; load average (1 min) "
              f"{loads[0]:.2f} before, {loads[1]:.2f} after; jax {jax.__version__}, torch {torch.__version__} "
              f"({torch.get_num_threads()} threads), Python {platform.python_version()}",
              f"- command: python benchmarks/decode_bench.py --rounds {rounds}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    parser.add_argument("--out", help="also write the markdown here")
    args = parser.parse_args(argv)
    before = os.getloadavg()[0]
    samples, agree = measure(args.rounds)
    text = report(samples, agree, (before, os.getloadavg()[0]), args.rounds)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
