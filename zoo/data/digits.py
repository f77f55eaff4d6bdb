"""scikit-learn's 8x8 digits (1797 images, ships in the wheel): a fixed stratified split."""

import numpy as np

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from zoo.data import DataSpec, Dataset

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[..., None]  # pixel values are 0..16
    labels = bunch.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    spec = DataSpec("digits", (8, 8, 1), "image", 10, None, len(y_train), len(y_test))
    return Dataset(spec, x_train, y_train, x_test, y_test)
