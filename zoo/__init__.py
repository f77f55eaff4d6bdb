"""zoo: five families of JAX models as init/apply pairs, one training loop, Orbax checkpoints.

The public face: `zoo.load_config`, `zoo.fit`, `zoo.evaluate`, `zoo.load_run`, `zoo.load_compare`,
`zoo.compare`, `zoo.build`, ... Names are imported on first use (PEP 562), so `zoo predict model.zoo`
runs an export without importing the models, data or training modules."""

import importlib

__version__ = "0.1.0"

_PUBLIC = {  # name -> (module, attribute)
    "compare": ("zoo.comparison.runner", "compare"), "load_compare": ("zoo.comparison.schema", "load_compare"),
    "Config": ("zoo.config", "Config"), "load_config": ("zoo.config", "load"),
    "DataSpec": ("zoo.data", "DataSpec"), "Dataset": ("zoo.data", "Dataset"),
    "list_datasets": ("zoo.data", "list_datasets"), "load_dataset": ("zoo.data", "load_dataset"),
    "CheckpointError": ("zoo.errors", "CheckpointError"), "ConfigError": ("zoo.errors", "ConfigError"),
    "DataError": ("zoo.errors", "DataError"), "ModelError": ("zoo.errors", "ModelError"),
    "RunError": ("zoo.errors", "RunError"), "WeightsError": ("zoo.errors", "WeightsError"),
    "ZooError": ("zoo.errors", "ZooError"),
    "evaluate": ("zoo.inference.evaluate", "evaluate"),
    "LoadedRun": ("zoo.inference.loaded", "LoadedRun"), "load_run": ("zoo.inference.loaded", "load_run"),
    "Model": ("zoo.models", "Model"), "build": ("zoo.models", "build"),
    "list_models": ("zoo.models", "list_models"), "param_count": ("zoo.models", "param_count"),
    "fit": ("zoo.training", "fit"), "fit_population": ("zoo.training.population", "fit_population"),
    "import_weights": ("zoo.interop.importer", "import_weights"),
    "import_run": ("zoo.interop.importer", "import_run"),
    "export_run": ("zoo.interop.export", "export_run"),
    "tune_host_allocator": ("zoo.host", "tune_allocator"),
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'zoo' has no attribute '{name}'")
    module, attribute = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_PUBLIC])
