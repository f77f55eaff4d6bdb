"""The text source of issue 24 (zoo/data/text.py): a UTF-8 file, a folder of them or the built-in
corpus; byte or char vocabulary; contiguous train/val/test blocks; training windows at every start
position as zero-copy views; bad input refused in one line. No model is compiled here."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from zoo.config import DataConfig
from zoo.data import load, prepare, text
from zoo.errors import DataError

SENTENCE = "the quick brown fox jumps over the lazy dog. "


def text_config(path, **keys) -> DataConfig:
    return DataConfig(**{"name": "text", "path": str(path), **keys})


def lm_config(path, **data) -> dict:
    """A whole-config replacement for refused_train: an LSTM language model on `path`."""
    return {"task": "lm", "model": {"name": "lstm_lm", "hidden_size": 8, "embed_dim": 4},
            "data": {"name": "text", "path": str(path), "seq_len": 8, "batch_size": 4, **data}}


def tokens_of(x, y) -> np.ndarray:
    """The token stream a split's non-overlapping windows cover: each window's x, then the last y."""
    return np.concatenate([x.reshape(-1), y[-1:, -1]]) if len(x) else np.zeros(0, np.int32)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_byte_vocabulary_round_trips_any_utf8_text(sample):
    """Issue 24 (tests): byte ids are the UTF-8 bytes, so any text (multi-byte characters, emoji,
    control characters) decodes back to itself."""
    vocabulary = text.Vocabulary("byte")
    ids = vocabulary.encode(sample)
    assert ids.dtype == np.int32 and len(ids) == len(sample.encode("utf-8"))
    assert vocabulary.decode(ids) == sample


def test_a_byte_level_source_round_trips_a_multibyte_file_through_its_splits(tmp_path):
    """Issue 24 (data): train, val and test are contiguous blocks in that order, and their windows
    hold exactly the file's bytes (test: non-overlapping windows, only a last partial window left out)."""
    content = ("Grüße, 世界! ∑ é😀 " * 40)
    (tmp_path / "t.txt").write_text(content, encoding="utf-8")
    dataset = load(text_config(tmp_path / "t.txt", seq_len=8, validation=0.2, test=0.2))
    bounds = dataset.spec.source["split"]
    data = content.encode("utf-8")
    assert bounds["train"][0] == 0 and bounds["train"][1] == bounds["val"][0] and bounds["val"][1] == bounds["test"][0]
    assert bounds["test"][1] == len(data)
    for split in ("val", "test"):
        start, _ = bounds[split]
        covered = tokens_of(getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}"))
        assert bytes(covered.astype(np.uint8)) == data[start:start + len(covered)]
    train = np.concatenate([dataset.x_train[:, 0], dataset.x_train[-1, 1:], dataset.y_train[-1, -1:]])
    assert bytes(train.astype(np.uint8)) == data[:bounds["train"][1]]


def test_training_windows_start_at_every_position_as_zero_copy_views(tmp_path):
    """Issue 24 (data): x = window[:-1], y = window[1:], a window at every start position of the
    training block, views of one token array (no copy), which prepare() keeps as they are."""
    (tmp_path / "t.txt").write_text(SENTENCE * 10)
    config = text_config(tmp_path / "t.txt", seq_len=6, validation=0.1, test=0.1)
    dataset = load(config)
    train_tokens = dataset.spec.source["split"]["train"][1]
    assert len(dataset.x_train) == train_tokens - 6 == dataset.spec.train_size
    assert np.shares_memory(dataset.x_train, dataset.y_train)
    np.testing.assert_array_equal(dataset.x_train[1:, :-1], dataset.x_train[:-1, 1:])
    np.testing.assert_array_equal(dataset.y_train[:, :-1], dataset.x_train[:, 1:])
    assert dataset.x_train.dtype == np.int32 and train_tokens == int(0.8 * len(SENTENCE) * 10)
    prepared = prepare(dataset, config)
    assert np.shares_memory(prepared.x_train, dataset.x_train)


def test_validation_and_test_windows_do_not_overlap(tmp_path):
    """Issue 24 (data): every validation/test token is predicted once: consecutive windows share only
    their boundary token (y of one ends where x of the next begins)."""
    (tmp_path / "t.txt").write_text(SENTENCE * 10)
    dataset = load(text_config(tmp_path / "t.txt", seq_len=5, validation=0.2, test=0.1))
    for x, y in ((dataset.x_val, dataset.y_val), (dataset.x_test, dataset.y_test)):
        np.testing.assert_array_equal(x[1:, 0], y[:-1, -1])
        assert len(x) == (len(tokens_of(x, y)) - 1) // 5


def test_char_vocabulary_is_the_training_blocks_characters_and_unseen_ones_become_unknown(tmp_path):
    """Issue 24 (data): char ids index the sorted characters of the training block; a character seen
    only in validation or test becomes the extra unknown id (bpc stays honest), never an error."""
    (tmp_path / "t.txt").write_text("abcab" * 20 + "abcaZ" * 4)
    dataset = load(text_config(tmp_path / "t.txt", seq_len=4, vocabulary="char", validation=0.1, test=0.1))
    assert dataset.spec.vocabulary == {"level": "char", "chars": ["a", "b", "c"], "unknown": 3}
    assert dataset.spec.vocab_size == dataset.spec.num_classes == 4
    assert 3 in np.concatenate([dataset.x_test.ravel(), dataset.y_test.ravel()])
    assert 3 not in dataset.x_train


def test_prompt_characters_outside_a_char_vocabulary_are_refused_naming_the_character():
    """Issue 24 (sampling): a prompt cannot be encoded with the unknown id; it is refused in one line."""
    vocabulary = text.Vocabulary("char", ("a", "b"))
    with pytest.raises(DataError, match=r"'é' \(position 1\)"):
        vocabulary.encode("aéb")
    assert vocabulary.decode(vocabulary.encode("abba")) == "abba"


def test_a_folder_is_read_file_by_file_in_sorted_order_skipping_hidden_files(tmp_path):
    """Issue 24 (data): a folder of UTF-8 files is their concatenation in sorted path order."""
    (tmp_path / "b.txt").write_text("B" * 30)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("C" * 30)
    (tmp_path / "a.txt").write_text("A" * 30)
    (tmp_path / ".hidden").write_text("H" * 30)
    dataset = load(text_config(tmp_path, seq_len=4, vocabulary="char", validation=0.25, test=0.25))
    assert dataset.spec.source["fingerprint"]["files"] == 3
    assert dataset.spec.source["tokens"] == 90 and dataset.spec.vocabulary["chars"] == ["A", "B"]


def test_the_built_in_corpus_has_its_pinned_sha256_and_records_it():
    """Issue 24 (data): the shipped pydoc corpus is byte-for-byte the pinned file; its hash is recorded."""
    from importlib import resources

    data = resources.files("zoo.data").joinpath("corpora", text.PYDOC["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == text.PYDOC["sha256"] == \
        "2a95af4ac93f5b719944030ce3769070ddf827d847cba42192afa8da989e5dc4"
    dataset = load(DataConfig(name="pydoc"))
    assert dataset.spec.source["fingerprint"]["sha256"] == text.PYDOC["sha256"]
    assert dataset.spec.vocabulary == {"level": "byte"} and dataset.spec.input_shape == (text.DEFAULT_SEQ_LEN,)


def test_a_built_in_corpus_with_other_bytes_is_refused(monkeypatch):
    """Issue 24 (data): a corpus whose bytes differ from the pinned hash is refused, not trained on."""
    monkeypatch.setitem(text.PYDOC, "sha256", "0" * 64)
    with pytest.raises(DataError, match="not the pinned file"):
        load(DataConfig(name="pydoc"))


def test_text_not_utf8_is_refused_naming_the_file_and_byte_offset(tmp_path, refused_train):
    """Issue 24 (bad input): one line naming the file and the offset of the first bad byte."""
    (tmp_path / "bad.txt").write_bytes(b"hello world " * 10 + b"\xff\xfe rest")
    refused_train(None, "bad.txt", "not UTF-8", "byte offset 120", replace=lm_config(tmp_path / "bad.txt"))


def test_an_empty_text_file_is_refused(tmp_path, refused_train):
    """Issue 24 (bad input): an empty file is one line."""
    (tmp_path / "empty.txt").write_text("")
    refused_train(None, "empty.txt", "is empty", replace=lm_config(tmp_path / "empty.txt"))


def test_text_shorter_than_one_window_per_split_is_refused(tmp_path, refused_train):
    """Issue 24 (bad input): a split with fewer than seq_len + 1 tokens is one line naming the split."""
    (tmp_path / "short.txt").write_text("x" * 40)
    refused_train(None, "val block has 4 tokens", "data.seq_len + 1 = 9", replace=lm_config(tmp_path / "short.txt"))


def test_vocabulary_and_seq_len_on_a_non_text_source_are_refused(refused_train):
    """Issue 24 (bad input): the text keys on digits mean nothing; one line instead of silence."""
    refused_train({"data": {"seq_len": 16}}, "data.seq_len applies to text sources")


def test_a_path_with_the_built_in_corpus_is_refused(tmp_path, refused_train):
    """Issue 24 (bad input): data.path beside data.name pydoc is a mistake, said in one line."""
    config = lm_config(tmp_path)
    config["data"]["name"] = "pydoc"
    refused_train(None, "'pydoc' is the built-in corpus", replace=config)
