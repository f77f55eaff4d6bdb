"""Datasets and batching: fixed splits, specs, determinism, resumable positions."""

import random

import numpy as np
import pytest

from zoo.data import BatchIterator, check_inputs, eval_batches, load_dataset
from zoo.data.batching import Position
from zoo.errors import DataError


def test_digits_split_is_fixed_and_stratified():
    first, second = load_dataset("digits"), load_dataset("digits")
    assert first.spec.input_shape == (8, 8, 1) and first.spec.kind == "image"
    assert (first.spec.train_size, first.spec.test_size) == (1437, 360)
    np.testing.assert_array_equal(first.y_test, second.y_test)
    assert np.bincount(first.y_test).min() >= 35  # every class in the test set
    assert 0.0 <= first.x_train.min() and first.x_train.max() <= 1.0


@pytest.mark.slow
def test_mnist1d_is_the_published_split():
    data = load_dataset("mnist1d")
    assert (data.x_train.shape, data.x_test.shape) == ((4000, 40, 1), (1000, 40, 1))
    assert data.spec.kind == "signal" and data.spec.num_classes == 10


@pytest.mark.slow
def test_mnist1d_does_not_disturb_global_rngs():
    np.random.seed(123), random.seed(123)
    expected = (np.random.rand(), random.random())
    np.random.seed(123), random.seed(123)
    load_dataset("mnist1d")
    assert (np.random.rand(), random.random()) == expected


@pytest.mark.slow
def test_mnist1d_shuffled_permutes_positions_not_labels():
    plain, shuffled = load_dataset("mnist1d"), load_dataset("mnist1d_shuffled")
    np.testing.assert_array_equal(plain.y_train, shuffled.y_train)
    assert not np.allclose(plain.x_train, shuffled.x_train)


def test_unknown_dataset_suggests_nearest():
    with pytest.raises(DataError, match="did you mean 'digits'"):
        load_dataset("digit")


def toy(n=50):
    return np.arange(n * 4, dtype=np.float32).reshape(n, 2, 2, 1), np.arange(n, dtype=np.int32)


def test_batch_order_depends_only_on_seed_and_epoch():
    x, y = toy()
    a = [next(BatchIterator(x, y, 10, seed=3))[1] for _ in range(2)]
    b = BatchIterator(x, y, 10, seed=4)
    np.testing.assert_array_equal(a[0], a[1])
    assert not np.array_equal(a[0], next(b)[1])


def test_iterator_resumes_from_saved_position():
    x, y = toy()
    straight = BatchIterator(x, y, 10, seed=0)
    batches = [next(straight) for _ in range(12)]  # crosses two epoch boundaries (5 per epoch)
    first = BatchIterator(x, y, 10, seed=0)
    for _ in range(7):
        next(first)
    resumed = BatchIterator(x, y, 10, seed=0, position=first.position)
    for expected in batches[7:]:
        got = next(resumed)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


def test_epoch_visits_every_example_once():
    x, y = toy(50)
    iterator = BatchIterator(x, y, 10, seed=1)
    seen = np.concatenate([next(iterator)[1] for _ in range(5)])
    assert sorted(seen) == list(range(50)) and iterator.position == Position(1, 0)


def test_eval_batches_pad_and_mask_the_last_batch():
    x, y = toy(25)
    batches = list(eval_batches(x, y, 10))
    assert [b[0].shape[0] for b in batches] == [10, 10, 10]
    assert batches[-1][2].sum() == 5


def test_check_inputs_rejects_wrong_shape():
    spec = load_dataset("digits").spec
    with pytest.raises(DataError, match="shape"):
        check_inputs(spec, np.zeros((2, 7, 7, 1), np.float32))
