"""The validation split and honest selection: held out of train, stratified, fixed by data.seed; best
checkpoints and `zoo eval --best` read validation only."""

import json

import numpy as np
import pytest

from zoo.data import load_dataset, with_validation
from zoo.errors import DataError


def indexed(n=200, classes=4):
    """A dataset whose inputs are their own row numbers, so splits can be traced back."""
    from zoo.data import DataSpec, Dataset

    x = np.arange(n, dtype=np.float32).reshape(n, 1, 1)
    y = (np.arange(n) % classes).astype(np.int32)
    return Dataset(DataSpec("indexed", (1, 1), "signal", classes, None, n, n), x, y, x, y)


def test_validation_split_is_held_out_of_train_and_stratified():
    split = with_validation(indexed(200, classes=4), 0.1, seed=0)
    train_rows, val_rows = set(split.x_train.ravel()), set(split.x_val.ravel())
    assert not train_rows & val_rows and len(train_rows | val_rows) == 200
    assert np.bincount(split.y_val).tolist() == [5, 5, 5, 5]  # 10% of each class
    assert (split.spec.train_size, split.spec.val_size) == (180, 20)


def test_digits_validation_split_sizes():
    split = with_validation(load_dataset("digits"), 0.1, seed=0)
    assert (split.spec.train_size, split.spec.val_size, split.spec.test_size) == (1295, 142, 360)


def test_validation_split_is_fixed_by_its_seed_alone():
    full = load_dataset("digits")
    a, b, c = (with_validation(full, 0.1, seed) for seed in (0, 0, 1))
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert not np.array_equal(a.x_val, c.x_val)


def test_validation_zero_leaves_train_whole_and_no_validation():
    full = load_dataset("digits")
    split = with_validation(full, 0.0)
    assert not split.has_validation and split.spec.train_size == full.spec.train_size


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_validation_outside_zero_one_is_refused(fraction):
    with pytest.raises(DataError, match=r"data.validation .* must be in \[0, 1\)"):
        with_validation(load_dataset("digits"), fraction)


@pytest.mark.slow
def test_best_checkpoint_follows_validation_when_test_disagrees(tmp_path, tiny_config, monkeypatch):
    """A run whose validation and test curves disagree keeps (and `--best` picks) the validation-best step."""
    from zoo.inference.evaluate import evaluate
    from zoo.training import fit
    from zoo.training import setup as setup_lib

    # Validation says step 10 is best, test says step 20: fake evaluations make the curves disagree.
    scores = {10: {"val_loss": 0.1, "val_accuracy": 0.9, "test_loss": 0.9, "test_accuracy": 0.1},
              20: {"val_loss": 0.9, "val_accuracy": 0.1, "test_loss": 0.1, "test_accuracy": 0.9}}
    monkeypatch.setattr(setup_lib.Evaluator, "splits", lambda evaluator, state, weights=None: scores[int(state.step)])
    config = tiny_config({"checkpoint": {"every": 10, "keep": 1, "keep_best": 1}})
    result = fit(config, tmp_path)
    assert result["best_checkpoint"]["step"] == 10
    assert result["best_accuracy"] == 0.1  # test accuracy at the validation-best step, not the test-best
    kept = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert kept == [10, 20]
    assert evaluate(tmp_path, best=True)["step"] == 10
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} == {"train", "val", "test"}
