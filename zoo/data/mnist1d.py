"""MNIST-1D (Greydanus & Kobak, 2024): regenerated exactly by the `mnist1d` package, 4000/1000 x 40."""

import random

import numpy as np


def _make(shuffle_seq: bool):
    from mnist1d.data import get_dataset_args, make_dataset

    from zoo.data import DataSpec, Dataset

    args = get_dataset_args()
    args.shuffle_seq = shuffle_seq
    # make_dataset reseeds NumPy's and Python's global RNGs; leave the caller's untouched.
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    name = "mnist1d_shuffled" if shuffle_seq else "mnist1d"
    x_train = data["x"].astype(np.float32)[..., None]
    x_test = data["x_test"].astype(np.float32)[..., None]
    y_train = data["y"].astype(np.int32)
    y_test = data["y_test"].astype(np.int32)
    spec = DataSpec(name, (x_train.shape[1], 1), "signal", 10, None, len(y_train), len(y_test))
    return Dataset(spec, x_train, y_train, x_test, y_test)


def load():
    return _make(shuffle_seq=False)


def load_shuffled():
    return _make(shuffle_seq=True)
