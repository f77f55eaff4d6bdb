"""The model registry: every name maps to a builder that returns `Model(init, apply, info)`.

Every family module is imported here explicitly, so `import zoo` knows every name (no registration
as a side effect of some other import).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import inspect
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import numpy as np

from zoo.errors import ModelError


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    description: str
    hparams: dict


class Model(NamedTuple):
    """A pure init/apply pair.

    variables = model.init(key, x)
    out, state = model.apply(variables, x, train=False, rng=None)   # state: non-param collections
    """

    init: Callable
    apply: Callable
    info: ModelInfo


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    family: str
    description: str
    module_cls: type  # a flax.linen.Module subclass taking num_classes plus hyperparameters
    defaults: dict  # hyperparameters this name fixes (e.g. stage sizes of resnet50)
    input_kinds: tuple = ("image", "signal", "tokens")


FAMILIES = ("dnn", "cnn", "rnn", "resnet", "transformer")


def from_module(module: nn.Module, info: ModelInfo) -> Model:
    """Wraps a linen module whose `__call__(x, train)` returns logits into a `Model`."""

    def init(key, x):
        params_key, dropout_key = jax.random.split(key)
        variables = module.init({"params": params_key, "dropout": dropout_key}, x, train=False)
        return dict(variables)

    def apply(variables, x, train: bool = False, rng=None):
        state = {k: v for k, v in variables.items() if k != "params"}
        rngs = {"dropout": rng} if rng is not None else {}
        if train and state:
            out, new_state = module.apply(variables, x, train=True, rngs=rngs, mutable=list(state))
            return out, dict(new_state)
        return module.apply(variables, x, train=train, rngs=rngs), state

    return Model(init, apply, info)


def _entries() -> dict[str, Entry]:
    from zoo.models import cnn, mlp, resnet, rnn, transformer

    table = {}
    for family_module in (mlp, cnn, rnn, resnet, transformer):
        for entry in family_module.ENTRIES:
            assert entry.name not in table, entry.name
            table[entry.name] = entry
    return table


_REGISTRY: dict[str, Entry] | None = None


def registry() -> dict[str, Entry]:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _entries()
    return _REGISTRY


def list_models(pattern: str = "*") -> list[str]:
    return sorted(name for name in registry() if fnmatch.fnmatch(name, pattern))


def get_entry(name: str) -> Entry:
    table = registry()
    if name not in table:
        near = difflib.get_close_matches(name, list(table), n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise ModelError(
            f"unknown model '{name}': {hint}choose one of {', '.join(sorted(table))} (see `zoo list`)"
        )
    return table[name]


def hparam_fields(name: str) -> dict[str, Any]:
    """The hyperparameters a name accepts, with their defaults (num_classes/vocab_size excluded)."""
    entry = get_entry(name)
    fields = {}
    for field in dataclasses.fields(entry.module_cls):
        if field.name in ("parent", "name", "num_classes", "vocab_size") or field.name in entry.defaults:
            continue
        fields[field.name] = field.default if field.default is not dataclasses.MISSING else None
    return fields


def _check_hparam(model: str, key: str, value, default):
    """Checks a hyperparameter against its default's type; lists become tuples (YAML has no tuples)."""
    if isinstance(value, list):
        value = tuple(value)
    if default is None:
        return value
    expected = type(default)
    ok = isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if expected is tuple and ok:
        ok = all(isinstance(v, type(default[0])) for v in value) if default else True
    if not ok:
        raise ModelError(f"model '{model}': hyperparameter '{key}' must be like {default!r} "
                         f"({expected.__name__}), got {value!r}")
    return value


def build(name: str, num_classes: int, vocab_size: int | None = None, **hparams) -> Model:
    """Builds a registered model. Unknown hyperparameters raise ModelError naming the valid ones."""
    entry = get_entry(name)
    valid = hparam_fields(name)
    for key in hparams:
        if key not in valid:
            near = difflib.get_close_matches(key, list(valid), n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            raise ModelError(
                f"model '{name}' has no hyperparameter '{key}': {hint}valid: {', '.join(sorted(valid))}"
            )
    hparams = {key: _check_hparam(name, key, value, valid[key]) for key, value in hparams.items()}
    kwargs = {**entry.defaults, **hparams, "num_classes": num_classes}
    if "vocab_size" in {f.name for f in dataclasses.fields(entry.module_cls)}:
        kwargs["vocab_size"] = vocab_size
    try:
        module = entry.module_cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ModelError(f"model '{name}': {error}") from None
    info = ModelInfo(name, entry.family, entry.description, {**valid, **entry.defaults, **hparams})
    return from_module(module, info)


def count_params(variables_or_params) -> int:
    params = variables_or_params.get("params", variables_or_params)
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))


def param_count(model: Model, input_shape, dtype="float32") -> int:
    """Parameter count for a batch of one input of `input_shape`, without allocating weights."""
    x = jax.ShapeDtypeStruct((1, *input_shape), np.dtype(dtype))
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    return count_params(shapes)
