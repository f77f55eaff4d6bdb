"""zoo: five families of JAX models as init/apply pairs, one training loop, Orbax checkpoints.

`zoo.compare` and `zoo.evaluate` are the submodules; their entry points are `zoo.run_compare` and
`zoo.evaluate_run` (also `zoo.compare.compare`, `zoo.evaluate.evaluate`).
"""

from zoo.compare import compare as run_compare, load_compare
from zoo.config import Config, load as load_config
from zoo.data import DataSpec, Dataset, list_datasets, load_dataset
from zoo.errors import CheckpointError, ConfigError, DataError, ModelError, RunError, ZooError
from zoo.evaluate import evaluate as evaluate_run
from zoo.models import Model, build, list_models, param_count
from zoo.run import LoadedRun, load_run
from zoo.training import fit

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "Config", "ConfigError", "DataError", "DataSpec", "Dataset", "Model",
    "LoadedRun", "ModelError", "RunError", "ZooError", "build", "evaluate_run", "fit", "list_datasets",
    "list_models", "load_compare", "load_config", "load_dataset", "load_run", "param_count", "run_compare",
]
