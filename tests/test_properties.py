"""Properties that hold for every input, checked by hypothesis over generated ones: config
round-trips and dotted overrides, batch positions, eval padding, checksums, model output shapes."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from zoo import checkpoint as ckpt
from zoo import models
from zoo.config import apply_overrides, from_dict
from zoo.data import BatchIterator, eval_batches

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Config ------------------------------------------------------------------------------------------

fractions = st.floats(0.01, 0.99, allow_nan=False)
positive = st.floats(1e-6, 10.0, allow_nan=False)
raw_configs = st.fixed_dictionaries({
    "name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,12}", fullmatch=True),
    "seed": st.integers(0, 2**31 - 1),
    "data": st.fixed_dictionaries({
        "name": st.sampled_from(["digits", "mnist1d"]), "batch_size": st.integers(1, 4096),
        # crop_pad 0 is the default augment section, which to_dict leaves out (a run without it is stored as before)
        "eval_batch_size": st.integers(1, 4096), "augment": st.fixed_dictionaries({"crop_pad": st.integers(1, 4)})},
        optional={"validation": st.floats(0.0, 0.9), "seed": st.integers(0, 2**31 - 1)}),
    "model": st.fixed_dictionaries({"name": st.sampled_from(["mlp", "cnn", "lstm"])},
                                   optional={"hidden_sizes": st.lists(st.integers(1, 512), max_size=3),
                                             "dropout": fractions}),
    "optimizer": st.fixed_dictionaries({
        "name": st.sampled_from(["sgd", "adam", "adamw", "rmsprop"]), "learning_rate": positive,
        "momentum": st.floats(0.0, 0.99), "nesterov": st.booleans(), "weight_decay": st.floats(0.0, 1.0),
        "schedule": st.sampled_from(["constant", "cosine", "warmup_cosine", "step"]),
        "warmup_steps": st.integers(0, 1000), "decay_boundaries": st.lists(fractions, max_size=3),
        "decay_factor": st.floats(0.01, 1.0), "clip_norm": st.none() | positive}),
    "train": st.one_of(
        st.fixed_dictionaries({"steps": st.integers(1, 10**6), "epochs": st.none()}),
        st.fixed_dictionaries({"steps": st.none(), "epochs": st.integers(1, 1000)}),
    ).flatmap(lambda length: st.fixed_dictionaries({
        **{key: st.just(value) for key, value in length.items()},
        "eval_every": st.integers(0, 10**4), "log_every": st.integers(1, 10**4),
        "label_smoothing": st.floats(0.0, 0.99), "steps_per_call": st.none() | st.integers(1, 64)})),
    "checkpoint": st.fixed_dictionaries({
        "every": st.integers(1, 10**4), "keep": st.integers(1, 10), "keep_best": st.integers(0, 10),
        "metric": st.sampled_from(["accuracy", "loss"]), "async_save": st.booleans()}),
})


@FAST
@given(raw_configs)
def test_a_config_dict_round_trips_through_config(raw):
    config = from_dict(raw)
    assert contains(config.to_dict(), raw)
    assert from_dict(config.to_dict()) == config


def contains(out: dict, given: dict) -> bool:
    """Every key of `given` is in `out` with an equal value (sections compared key by key)."""
    if not isinstance(given, dict):
        return out == given
    return all(key in out and (contains(out[key], value) if isinstance(value, dict) and key != "model"
                               else out[key] == value) for key, value in given.items())


@FAST
@given(raw_configs, st.data())
def test_a_partial_config_dict_keeps_every_given_key_and_defaults_the_rest(raw, data):
    sections = [s for s in raw if isinstance(raw[s], dict) and s != "train"]
    dropped = data.draw(st.sets(st.sampled_from(sections)))
    partial = {key: value for key, value in raw.items() if key not in dropped}
    out = from_dict(partial).to_dict()
    # The defaults as a config resolves them (e.g. checkpoint.metric: the task's selection metric).
    defaults = from_dict({"train": raw["train"]}).to_dict()
    for key in raw:
        assert out[key] == defaults[key] if key in dropped else contains(out[key], raw[key])


override_values = st.one_of(st.integers(-10**9, 10**9), st.booleans(), st.none(),
                            st.text(st.characters(whitelist_categories=("L",)), min_size=1, max_size=8)
                            .filter(lambda s: s.lower() not in ("y", "n", "yes", "no", "on", "off",
                                                                 "true", "false", "null")))
key_parts = st.lists(st.from_regex(r"[a-z][a-z_]{0,6}", fullmatch=True), min_size=1, max_size=3)


@FAST
@given(raw_configs, key_parts, override_values)
def test_a_dotted_override_sets_exactly_its_key(raw, parts, value):
    text = value if isinstance(value, str) else json.dumps(value)
    out = apply_overrides(raw, [f"{'.'.join(parts)}={text}"])
    node = out
    for part in parts[:-1]:
        if not isinstance(node.get(part, {}), dict):
            return  # 'seed.x=1': refused elsewhere (a scalar is not a section)
        node = node[part]
    assert node[parts[-1]] == value
    # Everything else is as it was.
    node[parts[-1]] = "<gone>"
    original = json.loads(json.dumps(raw))
    here = original
    for part in parts[:-1]:
        here = here.setdefault(part, {})
    here[parts[-1]] = "<gone>"
    assert out == original


@FAST
@given(raw_configs, positive)
def test_a_float_override_reads_the_same_number_in_any_spelling(raw, rate):
    for text in {repr(rate), f"{rate:e}", f"{rate:.17g}"}:
        config = from_dict(apply_overrides(raw, [f"optimizer.learning_rate={text}"]))
        assert config.optimizer.learning_rate == float(text)


# Batches -----------------------------------------------------------------------------------------

batching = st.integers(2, 40).flatmap(lambda rows: st.tuples(
    st.just(rows), st.integers(1, rows), st.integers(0, 2**32 - 1), st.integers(0, 1)))


@FAST
@given(batching, st.integers(0, 60), st.integers(1, 20))
def test_a_batch_iterator_resumed_from_any_position_yields_the_uninterrupted_batches(setup, before, after):
    rows, batch_size, seed, _ = setup  # augmentation is the train step's now (issue 25), not the iterator's
    x = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4, 1)
    y = np.arange(rows, dtype=np.int32)
    straight = BatchIterator(x, y, batch_size, seed)
    expected = [next(straight) for _ in range(before + after)][before:]
    first = BatchIterator(x, y, batch_size, seed)
    for _ in range(before):
        next(first)
    saved = dataclasses.asdict(first.position)  # what a checkpoint stores: two integers
    resumed = BatchIterator(x, y, batch_size, seed, position=type(first.position)(**saved))
    for want, (xb, yb) in zip(expected, (next(resumed) for _ in range(after))):
        np.testing.assert_array_equal(xb, want[0])
        np.testing.assert_array_equal(yb, want[1])


@FAST
@given(batching)
def test_every_epoch_takes_distinct_rows_in_full_batches(setup):
    rows, batch_size, seed, _ = setup
    y = np.arange(rows, dtype=np.int32)
    batches = BatchIterator(np.zeros((rows, 2), np.float32), y, batch_size, seed)
    for _epoch in range(2):
        taken = np.concatenate([next(batches)[1] for _ in range(batches.steps_per_epoch)])
        assert len(taken) == (rows // batch_size) * batch_size
        assert len(np.unique(taken)) == len(taken)


@FAST
@given(st.integers(1, 60), st.integers(1, 70))
def test_eval_batches_cover_every_row_once_with_a_mask_marking_the_real_rows(rows, batch_size):
    x = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3) + 1
    y = np.arange(rows, dtype=np.int32) + 1
    xs, ys, masks = zip(*eval_batches(x, y, batch_size))
    assert len(xs) == -(-rows // batch_size)
    assert all(len(b) == batch_size and len(m) == batch_size for b, m in zip(xs, masks))
    mask = np.concatenate(masks).astype(bool)
    assert mask[:rows].all() and not mask[rows:].any()
    np.testing.assert_array_equal(np.concatenate(xs)[mask], x)
    np.testing.assert_array_equal(np.concatenate(ys)[mask], y)
    assert not np.concatenate(xs)[~mask].any()


# Checksums ---------------------------------------------------------------------------------------

DTYPES = [np.float32, np.float16, np.int32, np.int8, np.uint8, np.uint32]
arrays = st.tuples(st.sampled_from(DTYPES), st.lists(st.integers(1, 5), min_size=0, max_size=3)).flatmap(
    lambda spec: st.builds(
        lambda seed: np.random.default_rng(seed).integers(0, 100, size=spec[1]).astype(spec[0]),
        st.integers(0, 2**32 - 1)))
trees = st.dictionaries(st.from_regex(r"[a-z]{1,4}", fullmatch=True),
                        st.one_of(arrays, st.lists(arrays, min_size=1, max_size=3)), min_size=1, max_size=4)


@pytest.mark.slow
@FAST
@given(trees, st.data())
def test_the_checksum_of_any_pytree_changes_when_any_element_changes(tree, data):
    leaves, treedef = jax.tree.flatten(tree)
    which = data.draw(st.integers(0, len(leaves) - 1))
    leaf = leaves[which].copy()
    flat = leaf.reshape(-1)
    index = data.draw(st.integers(0, flat.size - 1))
    bits = flat.view(np.uint8 if leaf.dtype.itemsize == 1 else f"u{leaf.dtype.itemsize}")
    bits[index] ^= data.draw(st.integers(1, 2 ** (8 * leaf.dtype.itemsize) - 1))  # any other value
    changed = list(leaves)
    changed[which] = leaf
    before = ckpt.describe_arrays(tree)
    after = ckpt.describe_arrays(jax.tree.unflatten(treedef, changed))
    assert list(before) == list(after)
    differs = [name for name in before if before[name]["checksum"] != after[name]["checksum"]]
    assert differs == [list(before)[which]]
    assert before[differs[0]]["shape"] == list(leaf.shape) and before[differs[0]]["dtype"] == str(leaf.dtype)


# Models ------------------------------------------------------------------------------------------

# Every entry that the registry-wide tests compute numbers with (the others are more of their blocks),
# at its test settings and on its first kind: one per family in `make test`, the rest in `make test-all`.
COMPUTED = [name if models.get_entry(name).test.representative else pytest.param(name, marks=pytest.mark.exhaustive)
            for name in models.list_models() if not models.get_entry(name).test.traced_only]


@pytest.mark.slow
@pytest.mark.parametrize("name", COMPUTED)
def test_every_model_gives_batch_by_classes_logits_for_any_batch_size(name):
    test = models.get_entry(name).test
    model = models.build(name, 7, vocab_size=11, **test.hparams)
    kind, example = next(iter(test.shapes.items()))

    @settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.integers(1, 300), st.booleans())
    def check(batch, train):
        x = jax.ShapeDtypeStruct((batch, *example), np.int32 if kind == "tokens" else np.float32)
        variables = jax.eval_shape(model.init, jax.random.key(0), x)
        logits, _ = jax.eval_shape(lambda v, x: model.apply(v, x, train=train, rng=jax.random.key(1)),
                                   variables, x)
        positions = example[:1] if "lm" in models.get_entry(name).tasks else ()  # a language model: (B, T, V)
        assert logits.shape == (batch, *positions, 7) and logits.dtype == np.float32

    check()
