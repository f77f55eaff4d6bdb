"""The bottom-floor helpers: atomic writes, durations for people, did-you-mean hints."""

from __future__ import annotations

import os

from zoo import util
from zoo.errors import did_you_mean


def test_atomic_write_gives_each_writer_its_own_temporary_file_in_the_same_directory(tmp_path, monkeypatch):
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(util.os, "replace", lambda src, dst: renamed.append(src) or real_replace(src, dst))
    target = tmp_path / "result.json"
    util.atomic_write(target, "first")
    util.atomic_write(target, b"second")
    assert len(set(renamed)) == 2 and all(os.path.dirname(src) == str(tmp_path) for src in renamed)
    assert target.read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")
    try:
        util.atomic_write(target, object())  # not str or bytes: the write fails
    except TypeError:
        pass
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_clock_reads_as_seconds_then_minutes():
    assert (util.clock(42.4), util.clock(185)) == ("42 s", "3 min 05 s")


def test_did_you_mean_names_the_closest_choice_or_nothing():
    assert did_you_mean("adamm", ["adam", "sgd"]) == "did you mean 'adam'? "
    assert did_you_mean("xyz", ["adam", "sgd"]) == ""
