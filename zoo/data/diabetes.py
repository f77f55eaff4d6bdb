"""scikit-learn's diabetes data (Efron et al. 2004, "Least Angle Regression"; ships in the wheel): 442
patients, 10 baseline features as measured (age in years, sex, body mass index, mean blood pressure,
six blood serum measurements; zoo standardises them by the training split), and one target: a
quantitative measure of disease progression one year after baseline (25-346). A regression dataset
(`task: regress`) with a fixed random test split."""

import numpy as np

TEST_FRACTION = 0.2
SPLIT_SEED = 0
TARGET = "progression"


def load():
    from sklearn.datasets import load_diabetes

    from zoo.data import Dataset
    from zoo.data.targets import random_indices

    bunch = load_diabetes(scaled=False)
    x, y = bunch.data.astype(np.float32), bunch.target.astype(np.float32)
    kept, held = random_indices(len(y), TEST_FRACTION, SPLIT_SEED)
    return Dataset.from_arrays(x[kept], y[kept], x[held], y[held], name="diabetes", where="dataset 'diabetes'",
                               source={"kind": "diabetes", "columns": list(bunch.feature_names)},
                               task="regress", target_names=(TARGET,))
