"""Language models of issue 24: the KV cache and the carried RNN state decode exactly as the full
window does; sampling (greedy, seeds, top-k, top-p, the sliding context); `zoo sample` from a run
directory alone; eval bpc equal to the recorded one. One tiny LSTM LM is trained for the session."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import CHEAP_COMPILE, TINY, merged
from zoo import models
from zoo.data import DataSpec
from zoo.inference import sample as sample_lib
from zoo.inference.loaded import LoadedRun
from zoo.errors import ConfigError
from zoo.util import printable

SENTENCE = "the quick brown fox jumps over the lazy dog; "
VOCAB = 11


def decode_in_pieces(model, variables, x, prefill: int):
    """Logits of `x` fed in decode mode: the first `prefill` tokens at once, then one token per call."""
    module = model.module
    cache = jax.tree.map(jnp.zeros_like, jax.eval_shape(
        lambda: module.init(jax.random.key(0), x[:, :1], decode=True))["cache"])

    @functools.partial(jax.jit, compiler_options=CHEAP_COMPILE)
    def run(cache, tokens):
        logits, updated = module.apply({"params": variables["params"], "cache": cache}, tokens, decode=True,
                                       mutable=["cache"])
        return logits, updated["cache"]

    pieces = []
    for start, end in [(0, prefill), *((t, t + 1) for t in range(prefill, x.shape[1]))]:
        logits, cache = run(cache, x[:, start:end])
        pieces.append(logits)
    return jnp.concatenate(pieces, axis=1)


def full_and_decoded(name: str, prefill: int = 3, **hparams):
    model = models.build(name, VOCAB, vocab_size=VOCAB, **hparams)
    x = jax.random.randint(jax.random.key(1), (2, 8), 0, VOCAB)
    variables = jax.jit(model.init, compiler_options=CHEAP_COMPILE)(jax.random.key(0), x)
    full = jax.jit(lambda v, x: model.apply(v, x)[0], compiler_options=CHEAP_COMPILE)(variables, x)
    return np.asarray(full), np.asarray(decode_in_pieces(model, variables, x, prefill))


@pytest.mark.slow
@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_kv_cache_decoding_gives_the_logits_of_the_whole_prefix_at_every_position(positions):
    """Issue 24 (tests): transformer_lm fed a 3-token prefill and then one token per call through its
    KV cache gives, at every position, the logits of the full causal forward pass, to 1e-5."""
    full, decoded = full_and_decoded("transformer_lm", width=16, depth=1, num_heads=2, max_len=8, positions=positions,
                                     tie_embeddings=positions == "learned")
    np.testing.assert_allclose(decoded, full, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lstm_lm", "gru_lm", "rnn_lm"])
def test_carried_rnn_state_gives_the_logits_of_the_whole_window(name):
    """Issue 24 (tests): an RNN LM's carry, kept in the cache between calls, continues the window
    exactly (two layers; the fast LSTM for lstm_lm)."""
    full, decoded = full_and_decoded(name, hidden_size=8, embed_dim=4, num_layers=2)
    np.testing.assert_allclose(decoded, full, rtol=1e-5, atol=1e-5)


def test_rotary_query_key_products_depend_only_on_the_distance_between_positions():
    """Issue 24 (models): RoPE's defining property: q(m).k(n) == q(m+s).k(n+s)."""
    from zoo.models.transformer_lm import rotate

    q, k = np.random.default_rng(0).standard_normal((2, 1, 5, 2, 8), np.float32)
    scores = jax.jit(lambda q, k, positions: jnp.einsum("blhd,bmhd->hlm", rotate(q, positions), rotate(k, positions)))
    positions = np.arange(5)
    np.testing.assert_allclose(scores(q, k, positions), scores(q, k, positions + 37), rtol=1e-4, atol=1e-4)
    assert not np.allclose(rotate(q, positions), q)  # it does turn them


def test_tied_embeddings_drop_the_output_layer_and_need_num_classes_equal_to_vocab_size():
    """Issue 24 (models): tie_embeddings reuses the token embedding as the output layer."""
    from zoo.errors import ModelError

    untied = models.param_count(models.build("transformer_lm", 256, 256, width=32, depth=1), (16,), "int32")
    tied = models.param_count(models.build("transformer_lm", 256, 256, width=32, depth=1, tie_embeddings=True),
                              (16,), "int32")
    assert untied - tied == 32 * 256 + 256
    with pytest.raises(ModelError, match="tie_embeddings"):
        models.build("transformer_lm", 3, 20, tie_embeddings=True)


V, E, H, W = 256, 64, 256, 128  # byte vocabulary; the default embedding, hidden and transformer widths


@pytest.mark.parametrize("name,hparams,pinned,formula", [
    # embedding V*E, per gate E*H input + H*H recurrent + H bias (flax: one bias per gate), head H*V + V
    ("lstm_lm", {}, 410_880, V * E + 4 * (E * H + H * H + H) + H * V + V),
    ("gru_lm", {}, 328_960, V * E + 3 * (E * H + H * H) + 4 * H + H * V + V),  # GRUCell: biases on ir, iz, in, hn
    ("rnn_lm", {}, 164_352, V * E + E * H + H * H + H + H * V + V),
    # embedding V*W + positions 256*W + 4 blocks of (LN 2W, q/k/v/out 4(W*W+W), LN 2W, MLP 8W*W+5W) + LN 2W + head
    ("transformer_lm", {}, 891_904, V * W + 256 * W + 4 * (12 * W * W + 13 * W) + 2 * W + W * V + V),
    ("transformer_lm", {"positions": "rotary", "tie_embeddings": True}, 826_112,
     V * W + 4 * (12 * W * W + 13 * W) + 2 * W),
])
def test_language_model_parameter_counts_are_pinned(name, hparams, pinned, formula):
    """Issue 24 (models): default sizes at a 256-token (byte) vocabulary, pinned and by formula."""
    assert models.param_count(models.build(name, V, V, **hparams), (128,), "int32") == pinned == formula


# Sampling ------------------------------------------------------------------------------------------

def loaded(name: str, vocabulary: dict, **hparams) -> LoadedRun:
    """A LoadedRun of a freshly initialised (untrained) LM: sampling needs no training to be checked."""
    size = 256 if vocabulary["level"] == "byte" else len(vocabulary["chars"]) + 1
    model = models.build(name, size, size, **hparams)
    variables = jax.jit(model.init, compiler_options=CHEAP_COMPILE)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    spec = DataSpec("text", (8,), "tokens", size, size, vocabulary=vocabulary)
    return LoadedRun(Path("untrained"), 0, model, variables, None, spec, {})


@functools.cache
def untrained_transformer() -> LoadedRun:
    return loaded("transformer_lm", {"level": "byte"}, width=8, depth=1, num_heads=2, max_len=8, positions="learned")


@pytest.mark.slow
def test_the_same_seed_gives_the_same_text_and_another_seed_other_text():
    """Issue 24 (sampling): generation is a function of the seed (and the model, prompt, settings)."""
    run = untrained_transformer()
    first, again, other = (sample_lib.generate(run, "ab", 24, seed=seed).tokens for seed in (5, 5, 6))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.slow
def test_the_context_slides_past_max_len_as_the_full_forward_on_the_kept_tokens():
    """Issue 24 (sampling): past the transformer's max_len the cache restarts from the last max_len // 2
    tokens; greedy tokens equal a plain loop of full forward passes over the same visible context."""
    run = untrained_transformer()
    model, params, context, keep = run.model, run.variables, 8, 4
    tokens = list(b"hello")
    forward = jax.jit(lambda x: model.apply(params, x)[0], compiler_options=CHEAP_COMPILE)
    start, expected = 0, []
    for _ in range(20):
        visible = tokens[start:]
        padded = np.zeros((1, context), np.int32)
        padded[0, :len(visible)] = visible  # causal: the padding after the last token changes nothing
        token = int(np.argmax(forward(padded)[0, len(visible) - 1]))
        tokens.append(token)
        expected.append(token)
        if len(tokens) - start > context:
            start = len(tokens) - keep
    np.testing.assert_array_equal(sample_lib.generate(run, "hello", 20, temperature=0).tokens, expected)


@functools.cache
def jitted_pick(top_k, nucleus: bool):
    return jax.jit(lambda logits, key, top_p: sample_lib.pick(logits, key, 1.0, top_k, top_p if nucleus else None))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-4, 4, width=32), min_size=6, max_size=6), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_top_k_never_emits_a_token_outside_the_k_likeliest(logits, k, seed):
    """Issue 24 (tests, property): whatever the logits and the seed, the token drawn is one of the top k."""
    logits = np.asarray(logits, np.float32)
    token = int(jitted_pick(k, False)(logits[None], jax.random.key(seed), 1.0)[0])
    assert np.sum(logits > logits[token]) < k


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-4, 4, width=32), min_size=6, max_size=6), st.floats(0.05, 1.0), st.integers(0, 2**31 - 1))
def test_top_p_never_emits_a_token_outside_the_nucleus(logits, top_p, seed):
    """Issue 24 (tests, property): the token drawn is in the nucleus: the tokens likelier than it hold
    less than top_p of the probability."""
    logits = np.asarray(logits, np.float32)
    token = int(jitted_pick(None, True)(logits[None], jax.random.key(seed), np.float32(top_p))[0])
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert probabilities[probabilities > probabilities[token]].sum() < top_p + 1e-5


# A trained run: greedy sampling reproduces memorised text; the CLI; eval bpc ---------------------------

@pytest.fixture(scope="session")
def memorised_run(tmp_path_factory, compile_cache) -> Path:
    """A tiny LSTM LM trained (zoo.fit, task lm) to memorise one repeated sentence, char vocabulary."""
    from zoo.config import from_dict
    from zoo.training import fit

    root = tmp_path_factory.mktemp("lm")
    (root / "fox.txt").write_text(SENTENCE * 40)
    config = merged(TINY, {"name": "fox", "task": "lm", "train": {"steps": 150, "log_every": 50},
                           "checkpoint": {"every": 150},
                           "optimizer": {"name": "adam", "learning_rate": 1e-2, "schedule": "constant"}})
    config["data"] = {"name": "text", "path": str(root / "fox.txt"), "vocabulary": "char", "seq_len": 16,
                      "batch_size": 32, "validation": 0.1, "test": 0.1}
    config["model"] = {"name": "lstm_lm", "hidden_size": 32, "embed_dim": 16}
    fit(from_dict(config), root / "run")
    return root / "run"


@pytest.mark.slow
def test_greedy_sampling_from_a_model_that_memorised_a_text_reproduces_it(memorised_run):
    """Issue 24 (tests): temperature 0 continues the prompt with the memorised sentence, from the run
    directory alone (vocabulary from the recorded spec)."""
    from zoo.inference.loaded import load_run

    run = load_run(memorised_run, step="best")
    assert run.spec.vocabulary["level"] == "char"
    assert run.sample("the quick", 60, temperature=0) == (SENTENCE * 3)[len("the quick"):][:60]


@pytest.mark.slow
def test_zoo_sample_prints_the_text_on_stdout_and_tokens_per_second_on_stderr(memorised_run, zoo_main):
    """Issue 24 (sampling): `zoo sample RUN --prompt ... --max-tokens N` from the run directory."""
    status, out, err = zoo_main("sample", memorised_run, "--prompt", "the lazy", "--max-tokens", "12",
                                "--temperature", "0")
    assert status == 0, err
    assert out == "the lazy" + " dog; the quick"[:12] + "\n"
    assert "12 tokens in" in err and "tokens/s" in err


@pytest.mark.slow
@pytest.mark.parametrize("args,phrases", [
    (["--prompt", "the Zebra"], ["'Z' (position 4)", "not in this run's vocabulary"]),
    (["--prompt", "the", "--top-k", "0"], ["--top-k 0 must be from 1"]),
    (["--prompt", "the", "--temperature", "-1"], ["--temperature -1.0 must be"]),
    (["--prompt", ""], ["the prompt is empty"]),
])
def test_bad_sampling_input_is_one_line_and_exit_2(memorised_run, zoo_main, one_line_error, args, phrases):
    """Issue 24 (bad input): prompt characters outside the vocabulary and out-of-range settings."""
    status, out, err = zoo_main("sample", memorised_run, "--max-tokens", "5", *args)
    assert status == 2 and out == ""
    one_line_error(err, *phrases)


@pytest.mark.slow
def test_eval_bpc_equals_the_recorded_bpc(memorised_run):
    """Issue 24 (tests): `zoo.evaluate` of the final checkpoint reproduces the bpc training recorded."""
    from zoo import evaluate

    result = evaluate(memorised_run)
    assert result["test"]["bpc"] == pytest.approx(result["recorded"]["test_bpc"], rel=1e-6)
    assert result["val"]["bpc"] == pytest.approx(result["recorded"]["val_bpc"], rel=1e-6)


@pytest.mark.slow
def test_continuing_or_initialising_from_a_run_with_another_vocabulary_is_one_line(memorised_run, tmp_path,
                                                                                  write_config, zoo_main,
                                                                                  one_line_error):
    """Issue 24 (bad input): a continue (data.vocabulary changed) and an init_from whose token ids mean
    other text are refused in one line each, before anything is written."""
    from zoo.rundir import CONFIG_FILE
    import json
    import shutil

    stored = json.loads((memorised_run / CONFIG_FILE).read_text())
    stored["data"]["vocabulary"] = "byte"
    stored["train"]["steps"] = 151
    config = write_config(text=json.dumps(stored))
    continued = shutil.copytree(memorised_run, tmp_path / "continued")
    status, _, err = zoo_main("train", config, "--workdir", continued)
    assert status == 2
    one_line_error(err, "data.vocabulary")
    stored["init_from"] = {"run": str(memorised_run)}
    config = write_config(text=json.dumps(stored), name="init.yaml")
    status, _, err = zoo_main("train", config, "--workdir", tmp_path / "fresh")
    assert status == 2 and not (tmp_path / "fresh" / "checkpoints").exists()
    one_line_error(err, "init_from", "char level, ", "byte level", "init_from.skip")


@pytest.mark.slow
def test_sampling_a_classifier_run_is_one_line(finished_run, zoo_main, one_line_error):
    """Issue 24 (bad input): `zoo sample` of a run whose model is not a language model."""
    status, out, err = zoo_main("sample", finished_run, "--prompt", "hello", "--step", "latest")
    assert status == 2 and out == ""
    one_line_error(err, "model 'mlp'", "not a language model")


@pytest.mark.slow
def test_a_language_model_compare_writes_a_report_ranked_by_bpc_with_samples(tmp_path, zoo_main):
    """Issue 24, compare: a compare of `task: lm` runs trains, selects on validation and writes its
    report with the bpc column (it once crashed after training, fitting the regression baseline), and
    a few sampled lines per model: exactly what `zoo sample` of that run prints with those seeds."""
    import yaml

    from zoo.inference.loaded import load_run

    model = {"name": "tiny_lm", "task": "lm", "seed": 0,
             "data": {"name": "pydoc", "vocabulary": "byte", "seq_len": 8, "batch_size": 8},
             "model": {"name": "lstm_lm", "embed_dim": 8, "hidden_size": 8},
             "train": {"steps": 4, "log_every": 2}, "checkpoint": {"every": 2, "keep": 1}}
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(model))
    compare = {"name": "tiny_text", "dataset": "pydoc", "seeds": [0, 1], "budget": {"steps": 4},
               "models": [str(tmp_path / "lm.yaml")],
               "samples": {"prompt": "The ", "max_tokens": 12, "temperature": 1.5, "count": 2, "seed": 5}}
    (tmp_path / "compare.yaml").write_text(yaml.safe_dump(compare))
    status, _, err = zoo_main("compare", tmp_path / "compare.yaml", "--workdir", tmp_path / "work")
    assert status == 0, err
    report = (tmp_path / "work" / "report" / "report.md").read_text()
    assert "test bpc" in report and "least squares" not in report
    run = load_run(tmp_path / "work" / "runs" / "tiny_lm" / "seed0")  # the compare's first seed
    texts = [run.sample("The ", 12, 1.5, seed=seed) for seed in (5, 6)]
    assert texts[0] != texts[1]
    section = report[report.index("### Samples"):]
    assert "**tiny_lm** (`runs/tiny_lm/seed0`)" in section
    blocks = [m.group(2) for m in re.finditer(r"^(`{3,})\n(.*?)\n\1$", section, flags=re.M | re.S)]
    assert [printable("The " + t) for t in texts] == blocks[1:]  # blocks[0]: the command


def test_samples_in_a_compare_that_is_not_a_language_model_is_refused():
    """Issue 24: `samples:` means text sampled from language models; a classification compare that
    sets it is refused in one line, not silently ignored."""
    from zoo.comparison.schema import parse_compare

    with pytest.raises(ConfigError, match="samples: only a language-model compare"):
        parse_compare({"name": "c", "dataset": "digits", "budget": {"steps": 2},
                       "models": ["configs/digits/mlp.yaml"], "samples": {"count": 1}})
