"""Optax optimizers and schedules from an `OptimizerConfig`."""

from __future__ import annotations

import fnmatch
from typing import Callable, NamedTuple

import jax
import optax

from zoo.config import OptimizerConfig
from zoo.errors import ConfigError


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


def make_optimizer(cfg: OptimizerConfig, total_steps: int, schedule: optax.Schedule | None = None,
                   weight_decay=None) -> optax.GradientTransformation:
    """The optimizer chain: clipping, then the update rule with its schedule and weight decay.

    `schedule` and `weight_decay` (traced values allowed) replace the config's: a population member's
    own (zoo/training/population_step.py). The chain's structure follows `cfg` alone."""
    schedule = schedule or make_schedule(cfg, total_steps)
    decay = cfg.weight_decay if weight_decay is None else weight_decay
    if cfg.name == "adamw":
        rule = optax.adamw(schedule, weight_decay=decay)
    else:
        base = {
            "sgd": lambda: optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov),
            "adam": lambda: optax.adam(schedule),
            "rmsprop": lambda: optax.rmsprop(schedule, momentum=cfg.momentum),
        }[cfg.name]()
        # Coupled (L2) weight decay: added to the gradient before the update rule.
        rule = optax.chain(optax.add_decayed_weights(decay), base) if cfg.weight_decay else base
    if cfg.clip_norm:
        return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), rule)
    return rule


def build(config, total_steps: int, **overrides) -> optax.GradientTransformation:
    """A run's whole optimizer: `make_optimizer` (with `overrides`), frozen parameters, accumulation."""
    tx = with_frozen(make_optimizer(config.optimizer, total_steps, **overrides), config.freeze)
    return accumulate(tx, config.train.accumulate)


class Accumulating(NamedTuple):
    """An optax transformation (init, update) that applies its inner one every `micro_batches` updates,
    with the mean of their gradients; the train step splits each batch into that many micro-batches."""

    init: Callable
    update: Callable
    micro_batches: int


def accumulate(tx: optax.GradientTransformation, micro_batches: int) -> optax.GradientTransformation:
    """`tx` under optax.MultiSteps (train.accumulate). Its schedule counts optimizer steps: MultiSteps
    advances the inner state, step count included, once per `micro_batches` updates."""
    if micro_batches == 1:
        return tx
    multi = optax.MultiSteps(tx, every_k_schedule=micro_batches).gradient_transformation()
    return Accumulating(multi.init, multi.update, micro_batches)


def micro_batches(tx) -> int:
    """How many micro-batches make one optimizer step of `tx` (1 unless built by `accumulate`)."""
    return getattr(tx, "micro_batches", 1)


def param_path(key_path) -> str:
    """'Conv_0/kernel' for a parameter at params['Conv_0']['kernel']: the name patterns match."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in key_path)


def matches(path: str, patterns) -> bool:
    """True when a glob of `patterns` matches the parameter's path or one of its enclosing modules
    ('Dense_1' and 'Dense_1*' both match 'Dense_1/kernel')."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatchcase(prefix, pattern) for pattern in patterns for prefix in prefixes)


def check_patterns(params, patterns, key: str) -> None:
    """Raises ConfigError for a pattern that matches no parameter (a typo would silently do nothing)."""
    paths = [param_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    for pattern in patterns:
        if not any(matches(path, [pattern]) for path in paths):
            modules = sorted({path.split("/")[0] for path in paths})
            raise ConfigError(f"{key}: pattern '{pattern}' matches no parameter of this model; its modules "
                              f"are {', '.join(modules)}")


def with_frozen(tx: optax.GradientTransformation, patterns) -> optax.GradientTransformation:
    """`tx` for every parameter except those matching `patterns`, whose updates are zero (kept fixed)."""
    if not patterns:
        return tx

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "frozen" if matches(param_path(path), patterns) else "train", params)

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
