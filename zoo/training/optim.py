"""Optax optimizers and schedules from an `OptimizerConfig`."""

from __future__ import annotations

import optax

from zoo.config import OptimizerConfig


def make_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    lr, warmup = cfg.learning_rate, min(cfg.warmup_steps, max(total_steps - 1, 0))
    if cfg.schedule == "constant":
        return optax.constant_schedule(lr)
    if cfg.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, decay_steps=max(total_steps, 1))
    if cfg.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1))
    boundaries = {int(fraction * total_steps): cfg.decay_factor for fraction in cfg.decay_boundaries}
    return optax.piecewise_constant_schedule(lr, boundaries)


def make_optimizer(cfg: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    """The optimizer chain: clipping, then the update rule with its schedule and weight decay."""
    schedule = make_schedule(cfg, total_steps)
    if cfg.name == "adamw":
        rule = optax.adamw(schedule, weight_decay=cfg.weight_decay)
    else:
        base = {
            "sgd": lambda: optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov),
            "adam": lambda: optax.adam(schedule),
            "rmsprop": lambda: optax.rmsprop(schedule, momentum=cfg.momentum),
        }[cfg.name]()
        # Coupled (L2) weight decay: added to the gradient before the update rule.
        rule = optax.chain(optax.add_decayed_weights(cfg.weight_decay), base) if cfg.weight_decay else base
    if cfg.clip_norm:
        return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), rule)
    return rule
