"""Augmentation of a training batch on the device, inside the jitted step (`data.augment`).

Pure functions of a PRNG key, so a step augments the same way whenever it runs: the train step keys
them by its step (`augment_key`), which makes a resumed run augment exactly as an uninterrupted one.
Inputs are channels-last with any number of spatial axes (signals (B, L, C), images (B, H, W, C)),
already preprocessed (zero is the training mean for standardised sources).

- crop_pad N: zero-pad every spatial axis by N on both sides and take a window of the original size
  at a random offset in [0, 2N] per axis and example (the ResNet paper's pad-4 crop on CIFAR; a
  random shift by up to N steps with zero fill).
- flip: mirror the width axis (the last spatial one) of each image with probability 1/2.
- mixup alpha: lambda ~ Beta(alpha, alpha) per batch; every example becomes lambda * itself +
  (1 - lambda) * its partner (the batch reversed, as timm pairs them); targets likewise.
- cutmix alpha: lambda ~ Beta(alpha, alpha) per batch; a box of (1 - lambda) of the spatial area
  (side ratios sqrt(1 - lambda), centre uniform, clipped at the borders, so often less) comes from
  the partner; the targets mix by the area actually pasted (timm's `correct_lam`).
- both: each batch takes one of the two, with probability 1/2 each (timm's switch), and one lambda
  drawn with that one's alpha.

Mixup and cutmix turn class ids [B] into distributions [B, C] (the classify task's soft targets).
Evaluation never augments: only `zoo.training.step`'s train step calls this module.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

STREAM = 0x4A9  # folded into a step's key: the augmentation draws, apart from the step's dropout key


def augment_key(step_key):
    """The key of a step's augmentation, from the key the step derives from (seed, step)."""
    return jax.random.fold_in(step_key, STREAM)


def crop(key, x, pad: int):
    """Each example padded by `pad` zeros on both sides of every spatial axis, then cropped back to its
    size at a uniform random offset in [0, 2 * pad] per axis. Returns (inputs, offsets [B, axes])."""
    spatial = x.shape[1:-1]
    offsets = jax.random.randint(key, (x.shape[0], len(spatial)), 0, 2 * pad + 1)
    padded = jnp.pad(x, [(0, 0)] + [(pad, pad)] * len(spatial) + [(0, 0)])

    def window(example, offset):
        return jax.lax.dynamic_slice(example, (*offset, 0), (*spatial, x.shape[-1]))

    return jax.vmap(window)(padded, offsets), offsets


def flip(key, x):
    """Each example's width axis (the last spatial one) mirrored with probability 1/2.
    Returns (inputs, flipped [B] bool)."""
    flipped = jax.random.bernoulli(key, 0.5, (x.shape[0],))
    mirrored = jnp.flip(x, axis=x.ndim - 2)
    return jnp.where(flipped.reshape(-1, *[1] * (x.ndim - 1)), mirrored, x), flipped


def beta(key, alpha):
    """lambda ~ Beta(alpha, alpha), as G1 / (G1 + G2) of two Gamma(alpha) draws taken in log space (as
    jax.random.beta does, for small alpha), from one jax.random.loggamma call of shape 2: half the compile
    time of jax.random.beta's two. `alpha` may be traced (mixup's or cutmix's, chosen per batch)."""
    log_gammas = jax.random.loggamma(key, jnp.full((2,), alpha, jnp.float32))
    return jax.nn.sigmoid(log_gammas[0] - log_gammas[1])


def mixup(x, targets, lam):
    """lam * x + (1 - lam) * x reversed along the batch, and the targets (distributions [B, C]) likewise."""
    return (lam * x + (1 - lam) * x[::-1]).astype(x.dtype), lam * targets + (1 - lam) * targets[::-1]


def cutmix(key, x, targets, lam):
    """A box of about (1 - lam) of the spatial area (each side sqrt(1 - lam) of its axis, the centre
    uniform, clipped at the borders) pasted from the batch reversed; the targets mix by the pasted
    area. Returns (inputs, targets, the share of each example kept)."""
    spatial = x.shape[1:-1]
    side = jnp.sqrt(1.0 - lam)
    centres = jax.random.uniform(key, (len(spatial),))
    inside = jnp.ones(spatial, bool)
    for axis, size in enumerate(spatial):
        half = jnp.floor(size * side / 2).astype(jnp.int32)
        centre = jnp.floor(centres[axis] * size).astype(jnp.int32)
        low, high = jnp.clip(centre - half, 0, size), jnp.clip(centre + half, 0, size)
        position = jnp.arange(size).reshape([-1 if a == axis else 1 for a in range(len(spatial))])
        inside = inside & (position >= low) & (position < high)
    kept = 1.0 - jnp.mean(inside.astype(jnp.float32))
    return jnp.where(inside[None, ..., None], x[::-1], x), kept * targets + (1 - kept) * targets[::-1], kept


def check(settings, kind: str, task: str) -> None:
    """Refuses, in one line, augmentation that means nothing for the data or the task: any of it on
    token ids, flips of anything but images, mixup and cutmix for tasks other than classify."""
    from zoo.errors import ConfigError

    asked = [name for name in ("crop_pad", "flip", "mixup", "cutmix") if getattr(settings, name)]
    if asked and kind == "tokens":
        raise ConfigError(f"data.augment.{asked[0]} augments images and signals, and this data is token ids: "
                          "remove data.augment")
    if settings.flip and kind != "image":
        raise ConfigError(f"data.augment.flip mirrors the width of images, and this data is {kind}s: remove it")
    mixing = [name for name in ("mixup", "cutmix") if getattr(settings, name)]
    if mixing and task != "classify":
        raise ConfigError(f"data.augment.{mixing[0]} mixes class labels (task classify), and this run's task is "
                          f"{task}: remove it")


def augment(key, x, y, settings, num_classes: int):
    """The batch (x, y) augmented by `settings` (a `config.AugmentConfig`): (inputs, targets), where
    targets are `y` unchanged without mixup and cutmix, distributions [B, num_classes] with them."""
    crop_key, flip_key, mix_key, switch_key, box_key = jax.random.split(key, 5)
    if settings.crop_pad:
        x, _ = crop(crop_key, x, settings.crop_pad)
    if settings.flip:
        x, _ = flip(flip_key, x)
    if not (settings.mixup or settings.cutmix):
        return x, y
    targets = jax.nn.one_hot(y, num_classes, dtype=jnp.float32)
    use_cutmix = jax.random.bernoulli(switch_key, 0.5) if settings.mixup and settings.cutmix else bool(settings.cutmix)
    lam = beta(mix_key, jnp.where(use_cutmix, settings.cutmix, settings.mixup))
    if not settings.cutmix:
        return mixup(x, targets, lam)
    cut = cutmix(box_key, x, targets, lam)[:2]
    if not settings.mixup:
        return cut
    return tuple(jnp.where(use_cutmix, c, m) for c, m in zip(cut, mixup(x, targets, lam)))
