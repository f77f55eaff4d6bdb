"""The training step and loop: determinism, optimizers, schedules, sharding, metrics."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax
import pytest

from conftest import TINY, merged, subprocess_xla_flags
from zoo import config as config_lib
from zoo.data import BatchIterator, load_dataset, with_validation
from zoo.training import build_setup, fit, optim, step as step_lib
from conftest import tolerance


def tiny_config(**overrides):
    """conftest's TINY with dropout, and `overrides` by dotted key, e.g. **{"optimizer.name": "sgd"}."""
    raw = merged(TINY, {"model": {"hidden_sizes": [32], "dropout": 0.1}, "train": {"log_every": 10}})
    return config_lib.from_dict(config_lib.apply_overrides(raw, [f"{k}={v}" for k, v in overrides.items()]))


def train_steps(config, count):
    run = build_setup(config)
    state = run.init_state()
    train_step = step_lib.jit_train_step(run.model, run.tx, 10, 0.0, run.mesh)
    batches = BatchIterator(run.dataset.x_train, run.dataset.y_train, config.data.batch_size, config.seed)
    for _ in range(count):
        x, y = next(batches)
        state, metrics = train_step(state, step_lib.put_batch(run.mesh, x), step_lib.put_batch(run.mesh, y))
    return jax.device_get(state), jax.device_get(metrics)


@pytest.mark.slow
def test_same_seed_gives_identical_parameters():
    first, _ = train_steps(tiny_config(), 3)
    second, _ = train_steps(tiny_config(), 3)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_different_seed_gives_different_parameters():
    first, _ = train_steps(tiny_config(), 1)
    other, _ = train_steps(tiny_config(seed=1), 1)
    assert not np.array_equal(jax.tree.leaves(first.params)[0], jax.tree.leaves(other.params)[0])


@pytest.mark.slow
def test_batchnorm_running_stats_are_updated_by_training():
    config = tiny_config(**{"model.norm": "batch"})
    run = build_setup(config)
    before = jax.device_get(run.init_state().model_state)
    after, _ = train_steps(config, 2)
    assert any(not np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(before), jax.tree.leaves(after.model_state)))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_every_optimizer_lowers_the_training_loss(name):
    lr = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3}[name]
    config = tiny_config(**{"optimizer.name": name, "optimizer.learning_rate": lr,
                            "optimizer.weight_decay": 1e-4, "optimizer.clip_norm": 1.0,
                            "optimizer.schedule": "constant"})
    _, first = train_steps(config, 1)
    _, later = train_steps(config, 30)
    assert np.isfinite(later["loss"]) and later["loss"] < first["loss"]


def test_schedules_shape_the_learning_rate():
    base = config_lib.OptimizerConfig(learning_rate=1.0, warmup_steps=10)
    warm = optim.make_schedule(base.__class__(**{**base.__dict__, "schedule": "warmup_cosine"}), 100)
    cosine = optim.make_schedule(base.__class__(**{**base.__dict__, "schedule": "cosine"}), 100)
    steps = optim.make_schedule(base.__class__(**{**base.__dict__, "schedule": "step"}), 100)
    assert float(warm(0)) == 0.0 and float(warm(10)) == pytest.approx(1.0)
    assert float(cosine(0)) == pytest.approx(1.0) and float(cosine(100)) == pytest.approx(0.0, abs=1e-6)
    assert [float(steps(s)) for s in (0, 60, 80)] == pytest.approx([1.0, 0.1, 0.01])


def test_label_smoothing_raises_the_loss_of_confident_predictions():
    logits = np.array([[20.0, 0.0]])
    plain = step_lib.cross_entropy(logits, np.array([0]), 2)
    smooth = step_lib.cross_entropy(logits, np.array([0]), 2, label_smoothing=0.2)
    assert float(smooth[0]) > float(plain[0])


@pytest.mark.slow
def test_fit_writes_metrics_checkpoints_and_result(tmp_path):
    result = fit(tiny_config(), tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [10, 20]
    assert all({"loss", "accuracy", "examples_per_sec", "lr"} <= set(r) for r in train)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["10", "20"]
    assert result["final_step"] == 20 and 0.0 <= result["final"]["test_accuracy"] <= 1.0
    assert json.loads((tmp_path / "result.json").read_text())["final"] == result["final"]


@pytest.mark.slow
def test_fit_with_epochs_runs_whole_epochs(tmp_path):
    config = config_lib.from_dict({**tiny_config().to_dict(), "train": {"epochs": 1, "steps": None}})
    train_size = with_validation(load_dataset("digits"), config.data.validation, config.data.seed).spec.train_size
    assert train_size == 1437 - 142  # 10% of each class held out for validation
    assert fit(config, tmp_path)["final_step"] == train_size // 32


SHARDED = textwrap.dedent("""
    import jax, json, numpy as np
    from zoo import config as config_lib
    from zoo.data import BatchIterator
    from zoo.training import build_setup, step as step_lib
    config = config_lib.from_dict({"data": {"batch_size": 32}, "train": {"steps": 3},
                                   "model": {"name": "mlp", "hidden_sizes": [16]}})
    run = build_setup(config)
    state = run.init_state()
    train_step = step_lib.jit_train_step(run.model, run.tx, 10, 0.0, run.mesh)
    batches = BatchIterator(run.dataset.x_train, run.dataset.y_train, 32, 0)
    losses = []
    for _ in range(3):
        x, y = next(batches)
        xd = step_lib.put_batch(run.mesh, x)
        state, metrics = train_step(state, xd, step_lib.put_batch(run.mesh, y))
        losses.append(float(metrics["loss"]))
    print(json.dumps({"devices": jax.device_count(), "shards": len(xd.sharding.device_set),
                      "losses": losses}))
""")


def run_with_devices(count):
    env = {**os.environ, "XLA_FLAGS": subprocess_xla_flags(count),
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_same_code_shards_the_batch_over_eight_devices():
    eight, one = run_with_devices(8), run_with_devices(1)
    assert (eight["devices"], eight["shards"]) == (8, 8)
    np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-5)


def test_adamw_matches_optax_reference():
    cfg = config_lib.OptimizerConfig(name="adamw", learning_rate=0.1, weight_decay=0.01, schedule="constant")
    params = {"w": np.ones(3, np.float32)}
    grads = {"w": np.array([0.1, -0.2, 0.3], np.float32)}
    ours = optim.make_optimizer(cfg, 10)
    reference = optax.adamw(0.1, weight_decay=0.01)
    mine, _ = ours.update(grads, ours.init(params), params)
    theirs, _ = reference.update(grads, reference.init(params), params)
    np.testing.assert_allclose(mine["w"], theirs["w"], rtol=1e-6)


def test_steps_per_call_is_automatic_by_family_unless_set():
    from zoo.training.setup import auto_steps_per_call

    assert tiny_config().train.steps_per_call is None
    assert tuple(auto_steps_per_call(family, "cpu") for family in ("dnn", "cnn", "resnet")) == (10, 1, 1)


def test_steps_per_call_defaults_to_ten_for_every_family_on_gpu_and_tpu():
    from zoo.training.setup import auto_steps_per_call

    assert {auto_steps_per_call(family, backend) for family in ("dnn", "cnn", "rnn", "resnet", "transformer")
            for backend in ("gpu", "tpu")} == {10}


def _evaluation_case():
    """A trained-from-init MLP's eval step and the digits test split, with a batch size that pads."""
    run = build_setup(tiny_config())
    state = run.init_state()
    eval_step = step_lib.jit_eval_step(run.model, 10, run.mesh)
    return run, state, eval_step, run.dataset.x_test, run.dataset.y_test


@pytest.mark.slow
def test_evaluation_matches_per_example_float64_sums_over_a_padded_last_batch():
    run, state, eval_step, x, y = _evaluation_case()
    assert len(x) % 64
    metrics = step_lib.evaluate_arrays(eval_step, run.mesh, state.params, state.model_state, x, y, 64)
    logits, _ = run.model.apply({"params": state.params, **state.model_state}, x, train=False)
    logits = np.asarray(logits, np.float64)
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    assert metrics["accuracy"] == np.mean(logits.argmax(-1) == y)
    assert metrics["loss"] == pytest.approx(-np.mean(log_probs[np.arange(len(y)), y]), rel=tolerance(1e-5)["rtol"])


@pytest.mark.slow
def test_evaluation_fetches_its_sums_from_the_devices_once(monkeypatch):
    run, state, eval_step, x, y = _evaluation_case()
    fetches = []
    real_device_get = jax.device_get
    monkeypatch.setattr(jax, "device_get", lambda tree: fetches.append(1) or real_device_get(tree))
    step_lib.evaluate_arrays(eval_step, run.mesh, state.params, state.model_state, x, y, 32)
    assert len(x) // 32 > 5 and len(fetches) == 1


def test_deterministic_asks_gpus_for_deterministic_ops_and_sets_nothing_on_cpu_or_tpu():
    assert tiny_config().train.deterministic is True
    assert step_lib.compiler_options(True, "gpu") == {"xla_gpu_deterministic_ops": True}
    assert step_lib.compiler_options(False, "gpu") == {}
    assert step_lib.compiler_options(True, "cpu") == step_lib.compiler_options(True, "tpu") == {}


@pytest.mark.slow
def test_a_run_records_its_platform_and_xla_options(tmp_path):
    result = fit(tiny_config(**{"train.steps": 10}), tmp_path / "run")
    expected = (jax.default_backend(), step_lib.compiler_options(True))
    assert (result["platform"], result["xla_options"]) == expected
    meta = json.loads((tmp_path / "run" / "checkpoints" / "10" / "meta" / "metadata").read_text())
    assert (meta["platform"], meta["xla_options"]) == expected
