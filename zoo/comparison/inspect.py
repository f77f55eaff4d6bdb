"""`zoo info MODEL`: what one model is and costs, before training it: its layers (module path, output
shape, parameters), total parameters (as `zoo list` counts them), forward FLOPs per example (XLA's
cost analysis, as the compare report counts them: `cost.forward_flops`) and the compiled train step's
memory on this backend (XLA's memory analysis: `cost.train_step_memory`)."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np

from zoo import config as config_lib
from zoo import models
from zoo.comparison import cost
from zoo.data import DataSpec


def info_config(name: str, batch_size: int = 64, overrides: list[str] = ()) -> config_lib.Config:
    """The config `zoo info` builds the model and its train step from: zoo's defaults for `name` at
    `batch_size` (the first task its entry does), with `overrides` ('model.width=32',
    'optimizer.name=sgd') applied and validated."""
    raw = {"name": "info", "model": {"name": name}, "data": {"batch_size": batch_size}, "train": {"steps": 1}}
    tasks = getattr(models.get_entry(name), "tasks", ("classify",))
    if "classify" not in tasks:  # a language model: its own task unless --set task=... says otherwise
        raw["task"] = tasks[0]
    return config_lib.from_dict(config_lib.apply_overrides(raw, list(overrides)))


def info_spec(input_shape: tuple, num_classes: int, vocab_size: int | None = None, tokens: bool = False,
              batch_size: int = 1) -> DataSpec:
    """A data spec for one example of `input_shape`: token ids (`tokens`), a 1-D signal (L, C) or an
    image (H, W, C)."""
    kind = "tokens" if tokens else "signal" if len(input_shape) == 2 else "image"
    return DataSpec("info", tuple(input_shape), kind, num_classes, vocab_size, train_size=batch_size)


def _shapes(out) -> str:
    leaves = [leaf for leaf in jax.tree.leaves(out) if hasattr(leaf, "shape")]
    return ", ".join(f"{np.dtype(leaf.dtype).name}[{','.join(map(str, leaf.shape))}]" for leaf in leaves) or "-"


def layer_rows(model: models.Model, spec: DataSpec) -> list[dict]:
    """One row per module in the order they are first called for one example: 'path' ('' for the
    model itself), 'module' (its class), 'output' (dtype[shape]) and 'params' (its own parameters,
    not its children's). Traced with `nn.intercept_methods` under `jax.eval_shape`: nothing allocated."""
    rows = {}

    def record(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        path = "/".join(context.module.path)
        row = rows.setdefault(path, {"path": path, "module": type(context.module).__name__, "output": "-"})
        out = next_fun(*args, **kwargs)
        if row["output"] == "-":
            row["output"] = _shapes(out)
        return out

    def init(x):
        with nn.intercept_methods(record):
            return model.init(jax.random.key(0), x)

    variables = jax.eval_shape(init, jax.ShapeDtypeStruct((1, *spec.input_shape), np.dtype(spec.dtype)))
    own = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables.get("params", {})):
        owner = "/".join(str(getattr(key, "key", key)) for key in path[:-1])
        own[owner] = own.get(owner, 0) + int(np.prod(leaf.shape))
    for owner in own.keys() - rows.keys():  # parameters of a module never called (none in zoo's models)
        rows[owner] = {"path": owner, "module": "-", "output": "-"}
    return [{**row, "params": own.get(row["path"], 0)} for row in rows.values()]


def inspect_model(name: str, input_shape: tuple, num_classes: int = 10, vocab_size: int | None = None,
                  tokens: bool = False, batch_size: int = 64, overrides: list[str] = ()) -> dict:
    """Everything `zoo info` prints, as a dict (its --json)."""
    config = info_config(name, batch_size, overrides)
    spec = info_spec(input_shape, num_classes, vocab_size, tokens, config.data.batch_size)
    model = models.build(config.model.name, num_classes, vocab_size, **config.model.hparams)
    rows = layer_rows(model, spec)
    return {
        "model": config.model.name, "family": model.info.family, "hparams": config.model.hparams,
        "input_shape": list(spec.input_shape), "kind": spec.kind, "num_classes": num_classes,
        "params": models.param_count(model, spec.input_shape, spec.dtype),
        "forward_flops_per_example": cost.forward_flops(config, spec),
        "train_step_memory": {"batch_size": config.data.batch_size, "optimizer": config.optimizer.name,
                              "backend": jax.default_backend(), **cost.train_step_memory(config, spec)},
        "layers": rows,
    }
