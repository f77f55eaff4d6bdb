"""Text from a language-model run: a prompt in, a continuation out (`zoo sample`, `LoadedRun.sample`).

Generation is one jitted call with static shapes: the prompt goes through the model once in decode
mode (prefill: a Transformer writes its keys and values into its KV cache, an RNN carries its state),
then a `lax.scan` takes one token per step, feeding each sampled token back. The prompt's length and
the number of tokens are static (a new length compiles anew); the seed, temperature and top-p are
arguments. Same seed, same text; temperature 0 is greedy.

A Transformer sees at most `max_len` positions (its position table, and the KV cache's size). A
longer prompt keeps its last `max_len` tokens; when the cache is full the context slides: the last
`max_len // 2` tokens are run through a fresh cache again (one prefill every `max_len // 2` tokens)
and generation goes on, so any number of tokens can be asked for. RNNs carry their state with no limit.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from zoo.config import SEED_MAX
from zoo.errors import DataError, ModelError, ZooError

MAX_TOKENS = 100_000  # per call: the output buffer is allocated up front


@dataclasses.dataclass(frozen=True)
class Sample:
    """One generated continuation with its timing."""

    text: str  # the continuation (the prompt not included)
    tokens: np.ndarray  # its token ids
    prompt_tokens: int  # the prompt's length in tokens (after cropping to the model's context)
    seconds: float  # the jitted call (prefill + every step), compilation excluded
    compile_seconds: float
    note: str | None = None  # e.g. that the prompt was cropped

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else float("inf")


def pick(logits, key, temperature, top_k: int | None = None, top_p=None, greedy: bool = False):
    """Token ids [B] drawn from `logits` [B, V]: argmax when `greedy`; else from softmax(logits /
    temperature) restricted to the `top_k` most likely tokens (exactly k: ties are broken by id) and
    then to the nucleus of `top_p`: the most likely tokens whose probabilities, taken in order,
    reach top_p (the first always kept)."""
    logits = logits.astype(jnp.float32)
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_k is None and top_p is None:
        return jax.random.categorical(key, logits).astype(jnp.int32)
    values, ids = jax.lax.top_k(logits, top_k or logits.shape[-1])  # sorted, most likely first
    if top_p is not None:
        probabilities = jax.nn.softmax(values, axis=-1)
        before = jnp.cumsum(probabilities, axis=-1) - probabilities  # mass of the tokens ranked above
        values = jnp.where(before < top_p, values, -jnp.inf)
    choice = jax.random.categorical(key, values)
    return jnp.take_along_axis(ids, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


def _forward(module, params, cache, tokens):
    """(new cache, float32 logits of the last position [1, V]) of `tokens` [L] fed in decode mode."""
    logits, updated = module.apply({"params": params, "cache": cache}, tokens[None], decode=True, mutable=["cache"])
    return updated["cache"], logits[:, -1].astype(jnp.float32)


def generator(module, prompt_len: int, max_tokens: int, greedy: bool, top_k: int | None, nucleus: bool):
    """The jitted fn(params, prompt [prompt_len] int32, key, temperature, top_p) -> tokens [max_tokens]."""
    context = getattr(module, "max_len", None)  # None: no position limit (RNNs)
    keep = max(1, (context or 2) // 2)

    def fresh_cache():
        shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32),
                                                    decode=True)["cache"])
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def generate(params, prompt, key, temperature, top_p):
        cache, last = _forward(module, params, fresh_cache(), prompt)
        buffer = jnp.zeros(prompt_len + max_tokens, jnp.int32).at[:prompt_len].set(prompt)

        def step(carry, i):
            cache, last, buffer, used = carry
            token = pick(last, jax.random.fold_in(key, i), temperature, top_k, top_p if nucleus else None, greedy)
            buffer = buffer.at[prompt_len + i].set(token[0])
            if context is None:
                return (*_forward(module, params, cache, token), buffer, used), token[0]
            window = jax.lax.dynamic_slice(buffer, (prompt_len + i + 1 - keep,), (keep,))
            cache, last, used = jax.lax.cond(
                used >= context,
                lambda: (*_forward(module, params, fresh_cache(), window), jnp.int32(keep)),  # slide
                lambda: (*_forward(module, params, cache, token), used + 1))
            return (cache, last, buffer, used), token[0]

        carry = (cache, last, buffer, jnp.int32(prompt_len))
        _, tokens = jax.lax.scan(step, carry, jnp.arange(max_tokens))
        return tokens

    return jax.jit(generate)


def check_arguments(max_tokens: int, temperature: float, top_k: int | None, top_p: float | None,
                    vocab_size: int, seed: int = 0) -> None:
    """One line for each argument out of range."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) or not 1 <= max_tokens <= MAX_TOKENS:
        raise ZooError(f"--max-tokens {max_tokens} must be an integer from 1 to {MAX_TOKENS:,}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= SEED_MAX:
        raise ZooError(f"--seed {seed} must be an integer from 0 to {SEED_MAX}")
    if not (np.isfinite(temperature) and temperature >= 0):
        raise ZooError(f"--temperature {temperature} must be a finite number >= 0 (0: greedy, always the likeliest token)")
    if top_k is not None and not 1 <= top_k <= vocab_size:
        raise ZooError(f"--top-k {top_k} must be from 1 to the vocabulary's {vocab_size} tokens")
    if top_p is not None and not (np.isfinite(top_p) and 0 < top_p <= 1):
        raise ZooError(f"--top-p {top_p} must be in (0, 1]: the probability mass sampled from")


def generate(run, prompt: str, max_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, seed: int = 0) -> Sample:
    """A continuation of `prompt` by the language model of `run` (a `LoadedRun`)."""
    from zoo.data.text import Vocabulary
    from zoo.models import get_entry

    if "lm" not in get_entry(run.model.info.name).tasks or run.model.module is None:
        raise ModelError(f"model '{run.model.info.name}' of {run.run_dir} is not a language model: sampling needs "
                         "one of the *_lm models (zoo list '*_lm')")
    vocabulary = Vocabulary.from_spec(run.spec.vocabulary)
    check_arguments(max_tokens, temperature, top_k, top_p, vocabulary.size, seed)
    if not isinstance(prompt, str) or not prompt:
        raise DataError("the prompt is empty: give at least one character for the model to continue")
    ids, note = vocabulary.encode(prompt), None
    context = getattr(run.model.module, "max_len", None)
    if context is not None and len(ids) > context:
        note = f"the prompt's {len(ids)} tokens are more than the model's context of {context}: it sees the last {context}"
        ids = ids[-context:]
    key = (run.model.module, len(ids), int(max_tokens), temperature == 0, top_k, top_p is not None)
    arguments = (run.variables["params"], jnp.asarray(ids), jax.random.key(seed), jnp.float32(temperature or 1.0),
                 jnp.float32(top_p if top_p is not None else 1.0))
    started = time.perf_counter()
    if key not in _COMPILED:  # compiled apart from the call, so that tokens/s counts generation alone
        if len(_COMPILED) >= 16:
            _COMPILED.clear()
        _COMPILED[key] = generator(*key).lower(*arguments).compile()
    compiled_at = time.perf_counter()
    tokens = np.asarray(jax.block_until_ready(_COMPILED[key](*arguments)))
    done = time.perf_counter()
    return Sample(vocabulary.decode(tokens), tokens, len(ids), done - compiled_at, compiled_at - started, note)


_COMPILED: dict = {}  # (module, prompt length, max_tokens, greedy, top_k, nucleus) -> compiled generation
