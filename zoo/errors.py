"""Errors a user can cause. The CLI catches `ZooError` once and prints one line; exit status 2."""

MAX_MESSAGE = 2000  # characters of one error line: a message quoting a hostile file stays readable


class ZooError(Exception):
    """Bad input: a message that names the problem and the fix, on one line of at most MAX_MESSAGE
    characters (line breaks become spaces; an overlong middle is cut, keeping the fix at the end)."""

    exit_code = 2

    def __init__(self, message: str = ""):
        super().__init__(one_line(str(message)))


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


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` on one line, its middle cut when longer than `limit` characters."""
    text = " ".join(text.splitlines())
    if len(text) <= limit:
        return text
    head, tail = limit * 2 // 3, limit // 4
    return f"{text[:head]} ... [{len(text) - head - tail:,} characters cut] ... {text[-tail:]}"


def listing(items, first: int = 10, width: int = 60) -> str:
    """The first `first` items, comma-separated (each cut to `width` characters), then "... and N more"."""
    items = [str(item) for item in items]
    shown = [item if len(item) <= width else item[:width - 3] + "..." for item in items[:first]]
    more = f", ... and {len(items) - first:,} more" if len(items) > first else ""
    return ", ".join(shown) + more


def did_you_mean(value, choices) -> str:
    """"did you mean 'x'? " for the choice closest to `value` (a match ignoring case first), or "" when
    none is close."""
    import difflib

    by_lower = {}
    for choice in choices:
        by_lower.setdefault(str(choice).lower(), str(choice))
    wanted = str(value).lower()
    near = [wanted] if wanted in by_lower else difflib.get_close_matches(wanted, list(by_lower), n=1)
    return f"did you mean '{by_lower[near[0]]}'? " if near else ""
