"""Specifications of behaviour that a plausible one-line bug would break silently: each test here
was seen to fail with that bug planted (dropout key, eval mode, best-K retention, schedule offset,
label smoothing, seed statistics, RNN direction, the residual add, the checksum check).

They go through the public entry points (zoo.models.build, the training step functions,
zoo.training.optim, zoo.checkpoint.Checkpoints, zoo.comparison.report.summarize, zoo.training.fit)."""

from __future__ import annotations

import json
import math
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import CHEAP_COMPILE
from zoo import rundir
from zoo import checkpoint as ckpt
from zoo import models
from zoo.config import OptimizerConfig
from zoo.errors import DamagedCheckpointError
from zoo.comparison.report import COLUMNS, summarize
from zoo.training import loop, optim, state as state_lib, step as step_lib

NUM_CLASSES = 10


def batch(rows: int = 32, features: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(rows, features)).astype(np.float32),
            rng.integers(0, NUM_CLASSES, size=rows).astype(np.int32))


def plain_cross_entropy(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits, jnp.float32), y)


# Training step -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_dropout_draws_a_new_mask_every_step():
    model = models.build("mlp", NUM_CLASSES, hidden_sizes=(64,), dropout=0.5)
    x, y = batch()
    tx = optax.sgd(0.0)  # parameters never move: only the dropout mask can change the loss
    step = jax.jit(step_lib.train_step_fn(model, tx, NUM_CLASSES))
    state0 = state_lib.create(model, tx, 0, x)
    state1, first = step(state0, x, y)
    _, second = step(state1, x, y)
    _, again = step(state0, x, y)
    assert float(first["loss"]) == float(again["loss"])  # the mask is a function of (seed, step) ...
    assert float(first["loss"]) != float(second["loss"])  # ... and a new one at the next step


@pytest.mark.slow
def test_the_training_loss_is_plain_cross_entropy_when_smoothing_is_zero():
    model = models.build("mlp", NUM_CLASSES, hidden_sizes=(16,))
    x, y = batch()
    tx = optax.sgd(0.1)
    state = state_lib.create(model, tx, 0, x)
    logits, _ = model.apply({"params": state.params, **state.model_state}, x, train=True)
    expected = float(plain_cross_entropy(logits, y).mean())
    for step in (step_lib.train_step_fn(model, tx, NUM_CLASSES),
                 step_lib.train_step_fn(model, tx, NUM_CLASSES, label_smoothing=0.0)):
        _, metrics = jax.jit(step)(state, x, y)
        assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_label_smoothing_mixes_the_targets_with_the_uniform_distribution():
    model = models.build("mlp", NUM_CLASSES, hidden_sizes=(16,))
    x, y = batch()
    tx = optax.sgd(0.1)
    state = state_lib.create(model, tx, 0, x)
    logits, _ = model.apply({"params": state.params, **state.model_state}, x, train=True)
    targets = 0.8 * jax.nn.one_hot(y, NUM_CLASSES) + 0.2 / NUM_CLASSES
    expected = float(optax.softmax_cross_entropy(logits, targets).mean())
    _, metrics = jax.jit(step_lib.train_step_fn(model, tx, NUM_CLASSES, label_smoothing=0.2))(state, x, y)
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-6)


# Evaluation --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_evaluation_runs_in_inference_mode_whatever_the_batch_size():
    """BatchNorm uses its running statistics and dropout is off: the metrics are those of a direct
    `apply(train=False)` pass, and the same for every eval batch size (padding included)."""
    model = models.build("mlp", NUM_CLASSES, hidden_sizes=(32,), norm="batch", dropout=0.5)
    x, y = batch(rows=50)
    tx = optax.sgd(0.1)
    state = state_lib.create(model, tx, 0, x)
    step = jax.jit(step_lib.train_step_fn(model, tx, NUM_CLASSES))
    for _ in range(3):  # running statistics away from their initial 0/1
        state, _ = step(state, x + 1.0, y)
    variables = {"params": state.params, **state.model_state}
    logits, _ = model.apply(variables, x, train=False)
    expected_loss = float(plain_cross_entropy(logits, y).mean())
    expected_accuracy = float(np.mean(np.argmax(logits, -1) == y))
    mesh = step_lib.make_mesh()
    eval_step = step_lib.jit_eval_step(model, NUM_CLASSES, mesh)
    for batch_size in (7, 16, 50, 64):
        result = step_lib.evaluate_arrays(eval_step, mesh, state.params, state.model_state, x, y, batch_size)
        assert result["accuracy"] == pytest.approx(expected_accuracy, abs=1e-6), batch_size
        assert result["loss"] == pytest.approx(expected_loss, rel=1e-5), batch_size


# Optimizer schedule ------------------------------------------------------------------------------

def sgd(schedule: str, **fields) -> OptimizerConfig:
    return OptimizerConfig(**{"name": "sgd", "learning_rate": 0.1, "momentum": 0.0, "schedule": schedule, **fields})


@pytest.mark.slow
def test_warmup_from_zero_leaves_the_parameters_unchanged_after_the_first_sgd_step():
    model = models.build("mlp", NUM_CLASSES, hidden_sizes=(16,))
    x, y = batch()
    tx = optim.make_optimizer(sgd("warmup_cosine", warmup_steps=4), total_steps=20)
    state = state_lib.create(model, tx, 0, x)
    step = jax.jit(step_lib.train_step_fn(model, tx, NUM_CLASSES))
    after_one, _ = step(state, x, y)
    after_two, _ = step(after_one, x, y)
    same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), state.params, after_one.params)
    assert all(jax.tree.leaves(same))
    moved = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), after_one.params, after_two.params)
    assert not all(jax.tree.leaves(moved))


@pytest.mark.parametrize("config, reference", [
    (sgd("constant"), optax.constant_schedule(0.1)),
    (sgd("cosine"), optax.cosine_decay_schedule(0.1, 20)),
    (sgd("warmup_cosine", warmup_steps=5), optax.warmup_cosine_decay_schedule(0.0, 0.1, 5, 20)),
    (sgd("step", decay_boundaries=(0.5, 0.75), decay_factor=0.1),
     optax.piecewise_constant_schedule(0.1, {10: 0.1, 15: 0.1})),
], ids=["constant", "cosine", "warmup_cosine", "step"])
def test_the_schedule_gives_update_k_the_optax_learning_rate_at_count_k(config, reference):
    schedule = optim.make_schedule(config, total_steps=20)
    for count in range(21):
        assert float(schedule(count)) == pytest.approx(float(reference(count)), abs=1e-9), count


@pytest.mark.parametrize("config, total, reference", [
    (sgd("warmup_cosine", warmup_steps=50), 20, optax.warmup_cosine_decay_schedule(0.0, 0.1, 19, 20)),
    (sgd("warmup_cosine", warmup_steps=3), 1, optax.warmup_cosine_decay_schedule(0.0, 0.1, 0, 1)),
    (sgd("cosine"), 1, optax.cosine_decay_schedule(0.1, 1)),
    (sgd("step", decay_boundaries=(0.3,), decay_factor=0.5), 7, optax.piecewise_constant_schedule(0.1, {2: 0.5})),
], ids=["warmup-longer-than-the-run", "warmup-one-step-run", "cosine-one-step-run", "step-rounds-down"])
def test_schedules_at_the_edges_of_a_run_match_optax(config, total, reference):
    """A warm-up longer than the run ends one step before it; boundaries round down to a step."""
    schedule = optim.make_schedule(config, total_steps=total)
    for count in range(total + 2):
        assert float(schedule(count)) == pytest.approx(float(reference(count)), abs=1e-9), count


@pytest.mark.slow
def test_the_logged_learning_rate_is_the_one_the_last_update_used(tmp_path, tiny_config):
    config = tiny_config({"optimizer": {"schedule": "warmup_cosine", "warmup_steps": 10},
                          "train": {"steps": 20, "log_every": 5, "steps_per_call": 1}})
    loop.fit(config, tmp_path / "run")
    reference = optax.warmup_cosine_decay_schedule(0.0, config.optimizer.learning_rate, 10, 20)
    logged = [json.loads(line) for line in (tmp_path / "run" / rundir.METRICS_FILE).read_text().splitlines()]
    train = {r["step"]: r["lr"] for r in logged if r["split"] == "train"}
    assert sorted(train) == [5, 10, 15, 20]
    for step, lr in train.items():
        assert lr == pytest.approx(float(reference(step - 1)), abs=1e-9), step  # update `step` ran at count step-1


def reference_optimizers():
    constant = optax.constant_schedule(0.1)
    return [
        (sgd("constant", momentum=0.9, nesterov=True), optax.sgd(constant, momentum=0.9, nesterov=True)),
        (sgd("constant"), optax.sgd(constant)),
        (OptimizerConfig(name="adam", learning_rate=0.1, schedule="constant"), optax.adam(constant)),
        (OptimizerConfig(name="adamw", learning_rate=0.1, schedule="constant", weight_decay=0.3),
         optax.adamw(constant, weight_decay=0.3)),
        (OptimizerConfig(name="rmsprop", learning_rate=0.1, momentum=0.5, schedule="constant"),
         optax.rmsprop(constant, momentum=0.5)),
        (sgd("constant", weight_decay=0.3, clip_norm=0.5),
         optax.chain(optax.clip_by_global_norm(0.5), optax.add_decayed_weights(0.3), optax.sgd(constant))),
    ]


@pytest.mark.parametrize("config, reference", reference_optimizers(),
                         ids=["sgd-nesterov", "sgd", "adam", "adamw", "rmsprop", "sgd-clip-l2"])
@pytest.mark.slow
def test_each_optimizer_updates_like_its_optax_definition(config, reference):
    """Clipping first, then coupled (L2) weight decay for all but AdamW, then the update rule."""
    params = {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array([0.5])}
    tx = optim.make_optimizer(config, total_steps=20)
    ours, theirs = tx.init(params), reference.init(params)
    for k in range(3):
        grads = {"w": jnp.array([0.3, -1.0, 2.0]) * (k + 1), "b": jnp.array([-0.7])}
        got, ours = tx.update(grads, ours, params)
        want, theirs = reference.update(grads, theirs, params)
        for name in params:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7)
        params = optax.apply_updates(params, got)


# Checkpoints -------------------------------------------------------------------------------------

TREE = {"w": np.arange(60, dtype=np.float32).reshape(6, 10), "b": np.ones(3, np.float32)}
ABSTRACT = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), TREE)


@pytest.mark.parametrize("metric, mode, scores, kept", [
    ("accuracy", "max", (0.9, 0.5, 0.6), [1, 3]),
    ("loss", "min", (0.1, 0.5, 0.4), [1, 3]),
    ("accuracy", "max", (0.5, 0.9, 0.6), [2, 3]),
])
@pytest.mark.slow
def test_best_k_retention_keeps_the_best_step_besides_the_latest(tmp_path, metric, mode, scores, kept):
    checkpoints = ckpt.Checkpoints(tmp_path, keep=1, keep_best=1, metric=metric, mode=mode, async_save=False)
    for step, score in enumerate(scores, start=1):
        checkpoints.save(step, TREE, {}, {metric: score})
    checkpoints.wait()
    assert checkpoints.steps() == kept
    assert checkpoints.best_step() == kept[0]
    checkpoints.close()


def test_a_changed_stored_value_in_a_decodable_file_is_refused_by_the_checksum(tmp_path):
    """Step 2's array files are replaced by step 1's: every file is well-formed and decodes, only
    the values differ from what step 2 recorded, so the CRC32 comparison alone must refuse it."""
    checkpoints = ckpt.Checkpoints(tmp_path, keep=3, keep_best=0, async_save=False)
    changed = {"w": TREE["w"].copy(), "b": TREE["b"]}
    changed["w"][2, 3] = np.nextafter(changed["w"][2, 3], np.float32(np.inf))  # one ulp, one element
    checkpoints.save(1, TREE, {}, {"accuracy": 0.5})
    checkpoints.save(2, changed, {}, {"accuracy": 0.5})
    checkpoints.wait()
    shutil.rmtree(tmp_path / "2" / "state")
    shutil.copytree(tmp_path / "1" / "state", tmp_path / "2" / "state")
    restored, _ = checkpoints.restore(1, ABSTRACT)  # the files themselves are fine
    assert np.array_equal(restored["w"], TREE["w"])
    with pytest.raises(DamagedCheckpointError,
                       match=r"checkpoint step 2 is damaged: checksum mismatch in 1 array\(s\), first \['w'\]"):
        checkpoints.restore(2, ABSTRACT)
    checkpoints.close()


# Reports -----------------------------------------------------------------------------------------

def test_summarize_gives_the_mean_and_sample_std_over_every_seed():
    base = {key: 1.0 for key in COLUMNS} | {"config": "a", "model": "mlp", "family": "dnn"}
    rows = [base | {"seed": 0, "final_accuracy": 0.8, "best_accuracy": 0.8},
            base | {"seed": 1, "final_accuracy": 0.9, "best_accuracy": 0.95},
            base | {"config": "b", "seed": 0, "final_accuracy": 0.7, "best_accuracy": 0.7}]
    a, b = summarize(rows)
    assert (a["config"], a["seeds"], b["config"], b["seeds"]) == ("a", 2, "b", 1)
    assert a["final_accuracy"] == pytest.approx(0.85)
    assert a["final_accuracy_std"] == pytest.approx(math.sqrt(0.005), abs=1e-12)  # 0.0707, ddof=1
    assert a["best_accuracy"] == pytest.approx(0.875)
    assert b["final_accuracy"] == pytest.approx(0.7) and b["final_accuracy_std"] == 0.0


# Models ------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name, cell", [("rnn", nn.SimpleCell), ("lstm", nn.LSTMCell), ("gru", nn.GRUCell)])
def test_a_recurrent_classifier_reads_its_sequence_first_step_first(name, cell):
    """The logits equal a reference that steps the same cell (same weights) through time 0..T-1 in a
    Python loop and applies the classifier to the last hidden state."""
    model = models.build(name, 3, hidden_size=5)
    x = np.random.default_rng(0).normal(size=(4, 7, 6)).astype(np.float32)
    variables = model.init(jax.random.key(0), x)
    params = variables["params"]
    (dense_name,) = [k for k in params if k.startswith("Dense")]
    (cell_name,) = [k for k in params if k != dense_name]
    reference_cell = cell(5)
    carry = reference_cell.initialize_carry(jax.random.key(1), x[:, 0].shape)
    for t in range(x.shape[1]):
        carry, hidden = reference_cell.apply({"params": params[cell_name]}, carry, x[:, t])
    expected = hidden @ params[dense_name]["kernel"] + params[dense_name]["bias"]
    logits, _ = model.apply(variables, x)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, hparams", [
    ("resnet20", {"width": 4}),
    pytest.param("resnet50", {"width": 2, "small_input": True}, marks=pytest.mark.slow),  # bottleneck blocks
])
@pytest.mark.slow
def test_at_initialisation_every_residual_block_passes_its_input_through_the_skip(name, hparams):
    """Each block's last BatchNorm scale starts at zero, so its residual branch adds nothing and
    only the skip path carries the input: the logits still depend on the input. Without the
    residual add every block outputs zeros and all inputs get the same logits."""
    model = models.build(name, 3, **hparams)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
    logits = jax.jit(lambda x: model.apply(model.init(jax.random.key(0), x), x)[0],  # one cheap compile
                     compiler_options=CHEAP_COMPILE)(x)
    assert float(jnp.max(jnp.std(logits, axis=0))) > 1e-4
