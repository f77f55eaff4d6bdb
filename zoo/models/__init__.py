"""Models by name: `build(name, num_classes, **hparams)` returns `Model(init, apply, info)`.

Package map: registry.py (entries, build, list), common.py (what families share), layers.py (the
fast layers), and one file per family (mlp, cnn, rnn, resnet, transformer) importing only those.
"""

from zoo.models.common import Entry
from zoo.models.registry import (
    FAMILIES, Model, ModelInfo, build, count_params, from_module, get_entry, hparam_fields, list_models,
    param_count,
)

__all__ = [
    "Entry", "FAMILIES", "Model", "ModelInfo", "build", "count_params", "from_module", "get_entry",
    "hparam_fields", "list_models", "param_count",
]
