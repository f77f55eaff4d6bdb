"""Issue 25, "augmentation": crop with padding, flips, mixup and cutmix of training batches on the device,
keyed by (seed, step). The statistics of each draw, not only that it runs; evaluation never augments;
a resumed run augments exactly as an uninterrupted one; data.shift became data.augment.crop_pad."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from zoo.config import AugmentConfig
from zoo.training import augment

DRAWS = 4000
KEYS = jax.random.split(jax.random.key(7), DRAWS)  # fixed: every statistic below is the same each run


def _draw(fn, *args):
    """`fn(key, *args)` for each of DRAWS keys, in one jitted vmap."""
    return jax.jit(jax.vmap(lambda key: fn(key, *args)))(KEYS)


@jax.jit
def _lambdas(alpha):
    """augment.beta(key, alpha) for each of DRAWS keys (alpha traced: one compile for every alpha)."""
    return jax.vmap(augment.beta, in_axes=(0, None))(KEYS, alpha)


def test_flip_mirrors_about_half_the_images_along_their_width():
    """Each image is mirrored (its columns reversed, rows kept) or left as it is, each with rate 1/2."""
    x = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(1, 2, 3, 4)[..., :1].repeat(2, axis=0)
    out, _ = _draw(augment.flip, x)
    mirrored = np.all(out == x[:, :, ::-1][None], axis=(2, 3, 4))
    kept = np.all(out == x[None], axis=(2, 3, 4))
    assert np.all(mirrored ^ kept)
    assert abs(mirrored.mean() - 0.5) < 3 * np.sqrt(0.25 / mirrored.size)


def test_crop_offsets_are_uniform_over_the_padded_range_on_every_axis():
    """pad 2 on a 5x5 image: the window's offset is uniform over 0..4 on both axes (chi-square), and
    the crop is the window of the zero-padded image at that offset."""
    x = jnp.arange(1, 26, dtype=jnp.float32).reshape(1, 5, 5, 1)
    out, offsets = _draw(augment.crop, x, 2)
    offsets = np.asarray(offsets).reshape(-1, 2)
    for axis in range(2):
        counts = np.bincount(offsets[:, axis], minlength=5)
        assert len(counts) == 5 and stats.chisquare(counts).pvalue > 1e-3, counts
    padded = np.pad(np.asarray(x[0, ..., 0]), 2)
    for image, (row, col) in zip(np.asarray(out)[:50, 0, ..., 0], offsets[:50]):
        np.testing.assert_array_equal(image, padded[row:row + 5, col:col + 5])


def test_crop_of_a_signal_moves_it_along_its_one_axis():
    """Signals (B, L, C) are cropped along L alone, any length."""
    x = jnp.arange(1, 8, dtype=jnp.float32).reshape(1, 7, 1)
    out, offsets = augment.crop(jax.random.key(0), x, 3)
    assert out.shape == x.shape and offsets.shape == (1, 1)
    np.testing.assert_array_equal(out[0, :, 0], np.pad(np.arange(1, 8), 3)[int(offsets[0, 0]):][:7])


@pytest.mark.slow
def test_mixup_lambda_follows_beta_alpha_alpha():
    """lambda as drawn for mixup: a Kolmogorov-Smirnov test against Beta(0.4, 0.4) does not reject it."""
    lam = np.asarray(_lambdas(0.4))
    assert stats.kstest(lam, stats.beta(0.4, 0.4).cdf).pvalue > 0.01


def test_mixup_mixes_inputs_and_targets_by_lambda_with_the_reversed_batch():
    """Example 0 (zeros) mixed with its partner (ones) by lambda 0.3: 0.7 ones, targets 0.3 / 0.7."""
    x = jnp.asarray([0.0, 1.0]).reshape(2, 1, 1, 1)
    out, mixed = augment.mixup(x, jax.nn.one_hot(jnp.asarray([0, 1]), 2), 0.3)
    np.testing.assert_allclose(out[:, 0, 0, 0], [0.7, 0.3], atol=1e-6)
    np.testing.assert_allclose(mixed, [[0.3, 0.7], [0.7, 0.3]], atol=1e-6)


def test_cutmix_pasted_area_equals_the_targets_share_of_the_partner():
    """Example 0 (zeros) gets a box of its partner (ones), lambda ~ Beta(1, 1): the box's share of the
    pixels is exactly the partner's weight in its targets, and at most 1 - lambda (border clipping)."""
    x = jnp.stack([jnp.zeros((8, 6, 1)), jnp.ones((8, 6, 1))])
    targets = jax.nn.one_hot(jnp.asarray([0, 1]), 2)

    lam = _lambdas(1.0)
    cut = jax.jit(jax.vmap(lambda key, lam: augment.cutmix(key, x, targets, lam)))
    out, mixed, kept = (np.asarray(a) for a in cut(KEYS, lam))
    pasted = out[:, 0].mean(axis=(1, 2, 3))
    np.testing.assert_allclose(mixed[:, 0, 1], pasted, atol=1e-6)
    np.testing.assert_allclose(1 - kept, pasted, atol=1e-6)
    assert np.all(pasted <= 1 - np.asarray(lam) + 1e-6) and 0.1 < pasted.mean() < 0.5


@pytest.mark.parametrize("settings,kind,task,phrase", [
    ({"crop_pad": 2}, "tokens", "lm", "data.augment.crop_pad augments images and signals"),
    ({"flip": True}, "signal", "classify", "data.augment.flip mirrors the width of images"),
    ({"mixup": 0.2}, "image", "regress", "data.augment.mixup mixes class labels"),
])
def test_augmentation_that_means_nothing_for_the_data_or_task_is_refused(settings, kind, task, phrase):
    """Any augmentation of token ids, flips of signals, mixing labels of a regression: one line each."""
    from zoo.errors import ConfigError

    with pytest.raises(ConfigError, match=phrase) as error:
        augment.check(AugmentConfig(**settings), kind, task)
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_evaluation_never_augments(ema_augment_runs, tiny_config):
    """The same state evaluated under the augmenting config and under one without augmentation gives
    the same metrics, to the bit."""
    import conftest
    from zoo.training import restore
    from zoo.training.setup import Evaluator, build_setup

    state = restore.restore(ema_augment_runs[0]).state
    plain = {**conftest.EMA_AUGMENT, "data": {}}
    metrics = [Evaluator(build_setup(tiny_config(overrides))).splits(state)
               for overrides in (conftest.EMA_AUGMENT, plain)]
    assert metrics[0] == metrics[1]


@pytest.mark.slow
def test_a_resumed_run_augments_exactly_as_an_uninterrupted_one(ema_augment_runs):
    """Resumed from step 2, the run's parameters after step 4 equal the uninterrupted run's bit for bit:
    each step's crops, flips and mixes come from (seed, step) alone."""
    from zoo.training import restore

    straight, resumed = (restore.restore(run).state for run in ema_augment_runs)
    assert int(resumed.step) == 4
    for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)


def test_data_shift_in_a_config_is_refused_naming_data_augment_crop_pad(refused_train):
    """The old key is refused, one line naming the new one; nothing is written."""
    refused_train({"data": {"shift": 2}}, "data.shift is now data.augment.crop_pad", "crop_pad: N")


def test_a_stored_config_with_data_shift_reads_as_crop_pad():
    """Run directories written before issue 25 stored data.shift: read back as data.augment.crop_pad."""
    from zoo.config import from_dict

    assert from_dict({"data": {"shift": 3}, "train": {"steps": 1}}).data.augment == AugmentConfig(crop_pad=3)
    assert from_dict({"data": {"shift": 0}, "train": {"steps": 1}}).data.augment == AugmentConfig()
