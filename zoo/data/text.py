"""Text for language models: `data.name: text` reads a UTF-8 file or a folder of them (`data.path`);
`data.name: pydoc` is the built-in corpus, shipped in the package, that needs no network.

The corpus is split into three contiguous blocks, never shuffled characters: train first, then
validation (`data.validation` of the tokens, default 0.1), then test (`data.test`, default 0.05).
Each token is a byte (`data.vocabulary: byte`, 256 ids, any UTF-8 text round-trips) or a character
(`char`: the sorted distinct characters of the training block, plus one id for "unknown", which is
what a validation or test character never seen in training becomes: it costs the model its
probability of <unk>, so bpc stays honest). The vocabulary is recorded in the run (`DataSpec.vocabulary`),
so sampling and evaluation decode exactly as training did.

Examples are windows of `data.seq_len` tokens with the next token at every position: x = w[:-1],
y = w[1:] of a window w of seq_len + 1 tokens. Training windows start at every position (zero-copy
NumPy views, `sliding_window_view`; the pipeline shuffles which windows make a batch); validation
and test windows do not overlap (every token is predicted once; the last tokens that do not fill a
window are left out).
"""

from __future__ import annotations

import dataclasses
import hashlib
from importlib import resources
from pathlib import Path

import numpy as np

from zoo.data import limits, source
from zoo.errors import DataError

SOURCES = ("text", "pydoc")  # data.name values this module reads
LEVELS = ("byte", "char")
DEFAULT_SEQ_LEN = 128
DEFAULT_TEST = 0.05  # of the corpus, the last block
UNKNOWN_CHAR = "\ufffd"  # how the char vocabulary's unknown id (and an invalid byte sequence) prints

# The built-in corpus: the English prose of CPython's `pydoc_data.topics` (79 help topics, the text of
# `help('assert')` and the like, (c) Python Software Foundation, PSF License), extracted once from
# Python 3.11.7 with the topics in sorted order, separated by newlines. The text differs between
# Python versions, so the file ships in the package and its bytes are pinned here.
PYDOC = {"file": "pydoc_topics.txt", "bytes": 466_195,
         "sha256": "2a95af4ac93f5b719944030ce3769070ddf827d847cba42192afa8da989e5dc4"}


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Token ids <-> text. Byte level: ids 0..255 are UTF-8 bytes. Char level: id i is `chars[i]`, and
    id len(chars) is "unknown" (characters outside the training text)."""

    level: str
    chars: tuple = ()

    @property
    def size(self) -> int:
        return 256 if self.level == "byte" else len(self.chars) + 1

    def to_spec(self) -> dict:
        """The record kept in `DataSpec.vocabulary`."""
        return {"level": "byte"} if self.level == "byte" else {"level": "char", "chars": list(self.chars),
                                                                "unknown": len(self.chars)}

    @classmethod
    def from_spec(cls, recorded: dict | None) -> "Vocabulary":
        """The vocabulary a run recorded; refuses a run without one (not trained on text)."""
        if not recorded or recorded.get("level") not in LEVELS:
            raise DataError("this run was not trained on text (its data spec records no vocabulary): sampling "
                            "and text evaluation need a run of data.name text or pydoc")
        if recorded["level"] == "byte":
            return cls("byte")
        chars = tuple(str(c) for c in recorded.get("chars") or ())
        if not chars or any(len(c) != 1 for c in chars) or list(chars) != sorted(set(chars)):
            raise DataError("the run's recorded character vocabulary is damaged (it must be distinct single "
                            "characters in sorted order): the run directory was changed by hand")
        return cls("char", chars)

    def encode(self, text: str, strict: bool = True, where: str = "the prompt") -> np.ndarray:
        """int32 ids of `text`. With `strict`, a character outside a char vocabulary is refused in one
        line; without, it becomes the unknown id."""
        if self.level == "byte":
            return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)
        points = np.frombuffer(text.encode("utf-32-le"), np.uint32)
        known = np.frombuffer("".join(self.chars).encode("utf-32-le"), np.uint32)
        ids = np.minimum(np.searchsorted(known, points), len(known) - 1)
        unknown = known[ids] != points
        if strict and unknown.any():
            at = int(np.argmax(unknown))
            raise DataError(f"{where} has the character {text[at]!r} (position {at}), which is not in this run's "
                            f"vocabulary ({len(self.chars)} characters of its training text): leave it out or "
                            "replace it (a run with data.vocabulary byte takes any text)")
        return np.where(unknown, len(self.chars), ids).astype(np.int32)

    def decode(self, ids) -> str:
        """The text of token ids; invalid UTF-8 (byte level) and the unknown id print as U+FFFD."""
        ids = np.asarray(ids, np.int64).ravel()
        if self.level == "byte":
            return bytes(ids.astype(np.uint8).tolist()).decode("utf-8", errors="replace")
        return "".join(self.chars[i] if 0 <= i < len(self.chars) else UNKNOWN_CHAR for i in ids.tolist())


def check_same_vocabulary(recorded: dict | None, current: dict | None, where: str,
                          fix: str = "use the same data.name, data.path and data.vocabulary") -> None:
    """Refuses `current` (this run's vocabulary) when `recorded` (`where`'s) differs: the same ids
    would mean other characters."""
    if (recorded or None) == (current or None):
        return

    def name(v):
        if not v:
            return "none (not a text run)"
        return "byte level" if v.get("level") == "byte" else f"char level, {len(v.get('chars') or ())} characters"

    raise DataError(f"{where} was trained with vocabulary {name(recorded)}, this run's data gives {name(current)}: "
                    f"{fix}")


def files_of(root: Path) -> list[Path]:
    """The text files of `root`: itself, or every file under the folder (hidden ones skipped), sorted by path."""
    if root.is_file():
        return [root]
    found = sorted(p for p in root.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not found:
        raise DataError(f"text folder {root} holds no files: put UTF-8 text files in it, or point data.path at one")
    return found


def read_text(paths: list[Path]) -> str:
    """The files' text, concatenated in order. Sizes are checked against zoo's memory limit before
    anything is read (each token takes 4 bytes as an int32 id); a file that is not UTF-8 is refused
    naming the byte offset of its first bad byte."""
    total = sum(p.stat().st_size for p in paths)
    limits.check_bytes(5 * total, f"the text of {paths[0] if len(paths) == 1 else f'{len(paths)} files'}")
    parts = []
    for path in paths:
        data = path.read_bytes()
        try:
            parts.append(data.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise DataError(f"{path} is not UTF-8 text: byte offset {error.start} (0x{data[error.start]:02x}) "
                            f"{error.reason}: convert the file to UTF-8 (e.g. iconv -t UTF-8) or leave it out") from None
    return "".join(parts)


def read_pydoc() -> tuple[str, dict]:
    """The built-in corpus and its fingerprint; refuses a file whose bytes are not the pinned ones."""
    data = resources.files("zoo.data").joinpath("corpora", PYDOC["file"]).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != PYDOC["sha256"] or len(data) != PYDOC["bytes"]:
        raise DataError(f"the built-in corpus zoo/data/corpora/{PYDOC['file']} is not the pinned file ({len(data):,} "
                        f"bytes, sha256 {digest[:12]}; expected {PYDOC['bytes']:,} bytes, {PYDOC['sha256'][:12]}): "
                        "reinstall zoo")
    return data.decode("utf-8"), {"files": 1, "bytes": len(data), "sha256": digest}


def split_bounds(count: int, validation: float, test: float) -> dict:
    """{split: [start, end)} token positions of the three contiguous blocks: train, val, test."""
    n_test, n_val = int(round(count * test)), int(round(count * validation))
    first_val = count - n_test - n_val
    return {"train": [0, first_val], "val": [first_val, count - n_test], "test": [count - n_test, count]}


def windows(tokens: np.ndarray, seq_len: int, overlapping: bool) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) int32 [N, seq_len]: views of `tokens` (no copy). Overlapping: a window at every start
    position; else consecutive windows sharing only their boundary token (each token predicted once)."""
    if len(tokens) < seq_len + 1:
        empty = np.zeros((0, seq_len), np.int32)
        return empty, empty
    view = np.lib.stride_tricks.sliding_window_view(tokens, seq_len + 1)
    if not overlapping:
        view = view[::seq_len]
    return view[:, :-1], view[:, 1:]


def _check_splits(bounds: dict, seq_len: int, validation: float, where: str) -> None:
    """Every split in use holds at least one window (seq_len + 1 tokens)."""
    for split, (start, end) in bounds.items():
        if split == "val" and validation == 0:
            continue
        if end - start < seq_len + 1:
            raise DataError(f"{where}: its {split} block has {end - start:,} tokens ({bounds['test'][1]:,} in all), "
                            f"fewer than one window of data.seq_len + 1 = {seq_len + 1}: lower data.seq_len, or "
                            "give more text")


def _tokens(text: str, level: str, train_chars: int | None = None) -> tuple[np.ndarray, "Vocabulary"]:
    """int32 ids of the whole text and the vocabulary (char level: built from the first `train_chars`)."""
    if level == "byte":
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32), Vocabulary("byte")
    vocabulary = Vocabulary("char", tuple(sorted(set(text[:train_chars]))))
    return vocabulary.encode(text, strict=False), vocabulary


def load(config):
    """The dataset of a `data:` section naming a text source."""
    from zoo.data import DataSpec, Dataset

    if config.name == "pydoc":
        if config.path is not None:
            raise DataError("data.path is set but 'pydoc' is the built-in corpus: set data.name to text to read "
                            "your own files")
        text, fingerprint = read_pydoc()
        name, where, recorded = "pydoc", "the built-in corpus pydoc", {"kind": "pydoc", "fingerprint": fingerprint}
    else:
        root = source.resolve(config.path, "text")
        paths = files_of(root)
        text, name, where = read_text(paths), root.stem or "text", str(root)
        recorded = source.record("text", root, paths)
    if not text:
        raise DataError(f"{where} is empty: a language model needs text to read")
    level = config.vocabulary or "byte"
    seq_len = config.seq_len or DEFAULT_SEQ_LEN
    test = DEFAULT_TEST if config.test is None else config.test
    count = len(text.encode("utf-8")) if level == "byte" else len(text)
    bounds = split_bounds(count, config.validation, test)
    _check_splits(bounds, seq_len, config.validation, where)
    tokens, vocabulary = _tokens(text, level, bounds["train"][1])
    splits = {split: windows(tokens[start:end], seq_len, split == "train") for split, (start, end) in bounds.items()}
    spec = DataSpec(name, (seq_len,), "tokens", vocabulary.size, vocabulary.size, len(splits["train"][0]),
                    len(splits["test"][0]), len(splits["val"][0]),
                    source={**recorded, "level": level, "tokens": count, "split": bounds},
                    vocabulary=vocabulary.to_spec())
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = splits["train"], splits["val"], splits["test"]
    return Dataset(spec, x_train, y_train, x_test, y_test, x_val, y_val)
