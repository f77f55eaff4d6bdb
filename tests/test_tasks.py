"""The task abstraction (issue 24): each task's loss, batch metrics and the reduction of an evaluation
split on hand-made examples, classify's soft targets, the config keys a task refuses, and classify's
stored config and data spec unchanged by tasks. Nothing here trains a model."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from zoo import tasks


def _split_sums(task, outputs, targets, rows_per_batch: int, pad_with=0.0) -> dict:
    """The task's eval sums over batches of `rows_per_batch` (the last padded with `pad_with` and masked),
    added up as the evaluator adds them, then `finish`ed."""
    totals, eval_sums = None, jax.jit(task.eval_sums)
    for start in range(0, len(outputs), rows_per_batch):
        out, tgt = outputs[start:start + rows_per_batch], targets[start:start + rows_per_batch]
        mask = np.ones(rows_per_batch, np.float32)
        real = len(out)
        if real < rows_per_batch:
            pad = rows_per_batch - real
            out = np.concatenate([out, np.full((pad, *out.shape[1:]), pad_with, out.dtype)])
            tgt = np.concatenate([tgt, np.zeros((pad, *tgt.shape[1:]), tgt.dtype)])
            mask[real:] = 0
        sums = jax.device_get(eval_sums(out, tgt, mask))
        totals = sums if totals is None else {k: totals[k] + sums[k] for k in sums}
    return task.finish({k: float(v) if np.ndim(v) == 0 else np.asarray(v, np.float64) for k, v in totals.items()})


@pytest.mark.slow  # the first jitted reduction of the session (and scikit-learn's import)
def test_regression_r2_rmse_and_mae_match_scikit_learn_in_original_units():
    """Issue 24, regression metrics: RMSE, MAE and R² of a split (two targets, batches with a padded,
    masked last batch) equal scikit-learn's on the original units, averaged over targets."""
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

    rng = np.random.default_rng(0)
    mean, std = np.array([150.0, -3.0]), np.array([70.0, 0.5])
    truth = rng.normal(mean, std, size=(13, 2))
    predicted = truth + rng.normal(0, [20.0, 0.2], size=(13, 2))
    task = tasks.Regress(2, tuple(mean), tuple(std))
    scaled = lambda y: ((y - mean) / std).astype(np.float32)  # noqa: E731 - as the training split standardises
    metrics = _split_sums(task, scaled(predicted), scaled(truth), rows_per_batch=5, pad_with=1e3)
    assert metrics["r2"] == pytest.approx(r2_score(truth, predicted), rel=1e-5)
    assert metrics["rmse"] == pytest.approx(root_mean_squared_error(truth, predicted), rel=1e-5)
    assert metrics["mae"] == pytest.approx(mean_absolute_error(truth, predicted), rel=1e-5)
    assert metrics["loss"] == pytest.approx(np.mean((scaled(predicted) - scaled(truth)) ** 2), rel=1e-5)


def test_regression_predictions_undo_the_target_standardisation():
    """Issue 24, regression predict: a model's standardised outputs come back in the targets' units."""
    task = tasks.Regress(2, (150.0, -3.0), (70.0, 0.5))
    np.testing.assert_allclose(task.predictions(np.array([[0.0, 0.0], [1.0, -2.0]], np.float32)),
                               [[150.0, -3.0], [220.0, -4.0]], rtol=1e-6)


def test_huber_loss_is_quadratic_near_zero_and_linear_beyond_one_standard_deviation():
    """Issue 24, `train.loss: huber`: 0.5 e² for |e| <= 1 (standard deviation), |e| - 0.5 beyond, mean over targets."""
    task = tasks.Regress(2, loss_name="huber")
    loss = task.loss(np.array([[0.5, 3.0]], np.float32), np.zeros((1, 2), np.float32))
    np.testing.assert_allclose(loss, [(0.5 * 0.25 + (3.0 - 0.5)) / 2], rtol=1e-6)


def _log_softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


LM_LOGITS = np.array([[[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 0.4], [-2.0, 3.0, 0.0, 1.0]],
                      [[1.0, 1.0, 1.0, 1.0], [0.0, 5.0, 0.0, 0.0], [4.0, -1.0, 2.0, 0.5]]], np.float32)
LM_TARGETS = np.array([[0, 3, 1], [2, 1, 0]], np.int32)


@pytest.mark.slow  # the first jitted reduction of the session (and scikit-learn's import)
def test_lm_loss_bpc_and_perplexity_on_a_hand_made_window():
    """Issue 24, lm metrics: per-example loss = mean token cross-entropy over T; a split's loss is nats
    per token, bpc = loss / ln 2, perplexity = exp(loss)."""
    token_losses = -np.take_along_axis(_log_softmax(LM_LOGITS.astype(np.float64)), LM_TARGETS[..., None], -1)[..., 0]
    task = tasks.LanguageModel(4)
    np.testing.assert_allclose(task.loss(LM_LOGITS, LM_TARGETS), token_losses.mean(-1), rtol=1e-6)
    metrics = _split_sums(task, LM_LOGITS, LM_TARGETS, rows_per_batch=2)
    expected = token_losses.mean()
    assert metrics["loss"] == pytest.approx(expected, rel=1e-6)
    assert metrics["bpc"] == pytest.approx(expected / math.log(2), rel=1e-6)
    assert metrics["perplexity"] == pytest.approx(math.exp(expected), rel=1e-6)
    assert task.batch_metrics(LM_LOGITS, LM_TARGETS)["bpc"] == pytest.approx(expected / math.log(2), rel=1e-6)


def test_lm_eval_sums_count_no_padding_row_and_no_padding_token():
    """Issue 24, lm reduction: a masked padding row and negative (padding) target ids add nothing to
    the sums; the token count is the real tokens only."""
    eval_sums = jax.jit(tasks.LanguageModel(4).eval_sums)
    alone = jax.device_get(eval_sums(LM_LOGITS[:1], LM_TARGETS[:1], np.ones(1, np.float32)))
    padded = jax.device_get(eval_sums(LM_LOGITS, LM_TARGETS, np.array([1.0, 0.0], np.float32)))
    assert float(padded["count"]) == 3 and float(padded["loss"]) == pytest.approx(float(alone["loss"]), rel=1e-6)
    targets = LM_TARGETS.copy()
    targets[0, 2] = -1  # a padding token inside a real row
    short = jax.device_get(eval_sums(LM_LOGITS[:1], targets[:1], np.ones(1, np.float32)))
    two = jax.device_get(eval_sums(LM_LOGITS[:1, :2], LM_TARGETS[:1, :2], np.ones(1, np.float32)))
    assert float(short["count"]) == 2 and float(short["loss"]) == pytest.approx(float(two["loss"]), rel=1e-6)


def test_classify_loss_takes_soft_targets_as_well_as_class_ids():
    """Issue 24 (for issue 25's mixup/cutmix): class ids and their one-hot distributions give the same
    loss; a mixed distribution gives the mixed cross-entropy; label smoothing applies to both."""
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], np.float32)
    labels = np.array([0, 2])
    task = tasks.Classify(3, label_smoothing=0.1)
    one_hot = np.eye(3, dtype=np.float32)[labels]
    np.testing.assert_allclose(task.loss(logits, one_hot), task.loss(logits, labels), rtol=1e-6)
    mixed = 0.4 * one_hot + 0.6 * np.eye(3, dtype=np.float32)[[1, 2]]  # the mixes' argmax: classes 1 and 2
    plain = tasks.Classify(3)
    expected = -(mixed * _log_softmax(logits)).sum(-1)
    np.testing.assert_allclose(plain.loss(logits, mixed), expected, rtol=1e-5)
    assert float(plain.batch_metrics(logits, mixed)["accuracy"]) == 0.5  # the logits' argmax: classes 0 and 2


def test_each_task_selects_on_its_own_validation_metric():
    """Issue 24, selection: classify picks steps by validation accuracy (max), regress and lm by the
    validation loss (min); a config leaves checkpoint.metric and early stopping's metric to the task."""
    from zoo.config import from_dict

    assert tasks.describe("classify").selection == ("accuracy", "max")
    assert tasks.describe("regress").selection == tasks.describe("lm").selection == ("loss", "min")
    for task, metric in (("classify", "accuracy"), ("regress", "loss")):
        config = from_dict({"task": task, "train": {"steps": 1}})
        assert config.checkpoint.metric == config.train.early_stopping.metric == metric


def test_a_classification_config_and_spec_store_nothing_new():
    """Issue 24, classify unchanged: a classification's stored config has no task or train.loss key and
    its data spec no targets key, so its run directory reads as before tasks existed."""
    from zoo.config import from_dict
    from zoo.data import DataSpec

    stored = from_dict({"train": {"steps": 1}}).to_dict()
    assert "task" not in stored and "loss" not in stored["train"] and stored["checkpoint"]["metric"] == "accuracy"
    assert "targets" not in DataSpec("d", (8, 8, 1), "image", 10).to_json()
    regression = from_dict({"task": "regress", "data": {"name": "diabetes"}, "train": {"steps": 1}}).to_dict()
    assert regression["task"] == "regress" and regression["checkpoint"]["metric"] == "loss"


REFUSED = {
    "label smoothing": ({"task": "regress", "data": {"name": "diabetes"}, "train": {"label_smoothing": 0.1}},
                        ("train.label_smoothing", "task 'regress'")),
    "classes": ({"task": "regress", "data": {"name": "diabetes", "classes": [0, 1]}}, ("data.classes",)),
    "checkpoint metric": ({"task": "regress", "data": {"name": "diabetes"}, "checkpoint": {"metric": "accuracy"}},
                          ("checkpoint.metric 'accuracy'", "validation loss")),
    "early stopping metric": ({"task": "lm", "data": {"name": "pydoc"},
                               "train": {"early_stopping": {"metric": "accuracy", "patience": 2}}},
                              ("train.early_stopping.metric 'accuracy'",)),
    "loss of another task": ({"train": {"loss": "huber"}}, ("train.loss 'huber'", "task 'classify'")),
    "regress on class data": ({"task": "regress"}, ("task 'regress'", "'digits'")),
    "classify on diabetes": ({"data": {"name": "diabetes"}}, ("'diabetes' is a regression dataset", "task: regress")),
    "model without the task": ({"task": "lm", "data": {"name": "pydoc"}}, ("model 'mlp' does not do task 'lm'",)),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_config_key_or_source_that_does_not_fit_the_task_is_refused_in_one_line(case, refused_train):
    """Issue 24 refusals: one line, exit 2, nothing written (the refused_train fixture checks all three)."""
    overrides, phrases = REFUSED[case]
    refused_train(overrides, *phrases)


def test_predict_on_a_language_model_points_to_zoo_sample():
    """Issue 24: LoadedRun.predict of an lm run refuses in one line naming `zoo sample`."""
    from pathlib import Path

    from zoo.config import from_dict
    from zoo.data import DataSpec
    from zoo.errors import ZooError
    from zoo.inference.loaded import LoadedRun

    config = from_dict({"task": "lm", "data": {"name": "pydoc"}, "model": {"name": "mlp"}, "train": {"steps": 1}})
    run = LoadedRun(Path("runs/lm"), 1, None, {}, config, DataSpec("pydoc", (8,), "tokens", 256, 256), {})
    with pytest.raises(ZooError, match="zoo sample runs/lm"):
        run.predict(np.zeros((1, 8), np.int32))
