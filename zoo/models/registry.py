"""The registry: every model name maps to an `Entry`, and `build` turns one into `Model(init, apply, info)`.

The families are listed explicitly below, so `import zoo` knows every name (no registration as a
side effect of some other import). Adding a model: one family file declaring `ENTRIES`, plus one
name in `FAMILIES`; the registry-wide tests (tests/test_models.py, tests/test_autodiff.py) then
cover each of its entries.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import typing
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import numpy as np

from zoo import config
from zoo.errors import ConfigError, ModelError, did_you_mean
from zoo.models import cnn, mlp, resnet, rnn, transformer, transformer_lm
from zoo.models.common import Entry, check_hparam_range

FAMILIES = (mlp, cnn, rnn, resnet, transformer, transformer_lm)  # modules declaring ENTRIES (a family may span two)

# Module fields that are not hyperparameters: flax's own, and what build() passes itself.
_NOT_HPARAMS = ("parent", "name", "num_classes", "vocab_size", "model_name")


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
    module: nn.Module | None = None  # the flax module behind apply (language models decode through it)


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

    return Model(init, apply, info, module)


def _table() -> dict[str, Entry]:
    table = {}
    for family in FAMILIES:
        for entry in family.ENTRIES:
            if entry.name in table:
                raise ValueError(f"model name '{entry.name}' is registered twice")
            table[entry.name] = entry
    return table


_REGISTRY = _table()


def list_models(pattern: str = "*") -> list[str]:
    return sorted(name for name in _REGISTRY if fnmatch.fnmatch(name, pattern))


def get_entry(name: str) -> Entry:
    if name not in _REGISTRY:
        raise ModelError(
            f"unknown model '{name}': {did_you_mean(name, _REGISTRY)}choose one of {', '.join(sorted(_REGISTRY))} "
            "(see `zoo list`)"
        )
    return _REGISTRY[name]


def hparam_fields(name: str) -> dict[str, Any]:
    """The hyperparameters a name accepts, with their defaults (those the name fixes excluded)."""
    entry = get_entry(name)
    fields = {}
    for field in dataclasses.fields(entry.module_cls):
        if field.name in _NOT_HPARAMS or field.name in entry.defaults:
            continue
        fields[field.name] = field.default if field.default is not dataclasses.MISSING else None
    return fields


def _check_hparams(name: str, hparams: dict) -> dict:
    """Each hyperparameter coerced to its module field's annotation by the config schema's rules."""
    valid = hparam_fields(name)
    types = typing.get_type_hints(get_entry(name).module_cls)
    checked = {}
    for key, value in hparams.items():
        if key not in valid:
            raise ModelError(
                f"model '{name}' has no hyperparameter '{key}': {did_you_mean(key, valid)}valid: "
                f"{', '.join(sorted(valid))}"
            )
        try:
            checked[key] = config.coerce(value, types[key], f"model.{key}")
        except ConfigError as error:
            raise ModelError(f"model '{name}': {error}") from None
        check_hparam_range(name, key, checked[key])
    return checked


def build(name: str, num_classes: int, vocab_size: int | None = None, **hparams) -> Model:
    """Builds a registered model. Unknown or ill-typed hyperparameters raise ModelError naming them."""
    entry = get_entry(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ModelError(f"model '{name}': num_classes {num_classes!r} must be a positive integer (the class count)")
    hparams = _check_hparams(name, hparams)
    kwargs = {**entry.defaults, **hparams, "num_classes": num_classes, "model_name": name}
    if "vocab_size" in {f.name for f in dataclasses.fields(entry.module_cls)}:
        kwargs["vocab_size"] = vocab_size
    try:
        module = entry.module_cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ModelError(f"model '{name}': {error}") from None
    info = ModelInfo(name, entry.family, entry.description, {**hparam_fields(name), **entry.defaults, **hparams})
    return from_module(module, info)


def count_params(variables_or_params) -> int:
    params = variables_or_params.get("params", variables_or_params)
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))


def param_count(model: Model, input_shape, dtype="float32") -> int:
    """Parameter count for a batch of one input of `input_shape`, without allocating weights."""
    x = jax.ShapeDtypeStruct((1, *input_shape), np.dtype(dtype))
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    return count_params(shapes)
