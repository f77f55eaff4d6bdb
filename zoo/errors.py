"""Errors a user can cause. The CLI catches `ZooError` once and prints one line; exit status 2."""


class ZooError(Exception):
    """Bad input: a message that names the problem and the fix."""

    exit_code = 2


class ConfigError(ZooError):
    """A config file, key, type or value is wrong."""


class ModelError(ZooError):
    """An unknown model, a bad hyperparameter, or input the model cannot take."""


class DataError(ZooError):
    """An unknown dataset, or data of the wrong shape or kind."""


class CheckpointError(ZooError):
    """A checkpoint is missing, damaged, or belongs to something else."""


class DamagedCheckpointError(CheckpointError):
    """A checkpoint's files are unreadable, incomplete or fail their checksums: another step may do."""


class RunError(ZooError):
    """A run directory cannot be used (locked by another writer, or training diverged)."""


class WeightsError(ZooError):
    """A weights file to import is unreadable, or its tensors do not fit the model."""


def did_you_mean(value, choices) -> str:
    """"did you mean 'x'? " for the choice closest to `value`, or "" when none is close."""
    import difflib

    near = difflib.get_close_matches(str(value), [str(choice) for choice in choices], n=1)
    return f"did you mean '{near[0]}'? " if near else ""
