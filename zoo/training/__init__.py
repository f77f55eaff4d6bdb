"""Training: run setup (config -> model, optimizer, data, mesh, evaluator), the train state, jitted
steps, optimizers, restore, the hooks and the `fit` loop.

Names are imported on first use (PEP 562): `zoo.training.setup` and `zoo.training.restore` (what
evaluation, prediction and import need) load without the loop and its hooks."""

import importlib

_PUBLIC = {"fit": "zoo.training.loop", "RunSetup": "zoo.training.setup", "build_setup": "zoo.training.setup",
           "TrainState": "zoo.training.state"}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'zoo.training' has no attribute '{name}'")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value
