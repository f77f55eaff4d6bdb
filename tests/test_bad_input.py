"""Bad input of every kind: one line on stderr naming the problem and the fix, exit status 2,
no traceback, and nothing on disk changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import zoo.data

TAMPERED_MODEL = {"name": "cnn", "features": [4], "hidden": 8}


@pytest.fixture
def refused(zoo_main, snapshot, one_line_error):
    """refused(args, watched, *phrases): the in-process CLI exits 2 with one line holding the phrases,
    and nothing under `watched` changed."""

    def check(args, watched: Path, *phrases):
        before = snapshot(watched)
        status, out, err = zoo_main(*args)
        assert status == 2, err
        one_line_error(err, *phrases)
        assert out == ""
        assert snapshot(watched) == before

    return check


@pytest.fixture
def refused_in_subprocess(zoo_process, snapshot, one_line_error):
    """As `refused`, for `python -m zoo.cli` in a subprocess (its stderr is all the user sees)."""

    def check(args, watched: Path, *phrases, devices: int = 1):
        before = snapshot(watched)
        result = zoo_process(*args, devices=devices)
        assert result.returncode == 2, result.stderr
        one_line_error(result.stderr, *phrases)
        assert snapshot(watched) == before

    return check


def step_dir(run_dir: Path, step: int = 20) -> Path:
    return run_dir / "checkpoints" / str(step)


def largest_array_file(run_dir: Path) -> Path:
    return max((p for p in (step_dir(run_dir) / "state").rglob("*") if p.is_file() and p.parent.name == "d"),
               key=lambda p: p.stat().st_size)


def edit_meta(run_dir: Path, change) -> None:
    """Changes a step's metadata and re-seals its checksum: the defence under test is then the one
    after the integrity check (the edit itself is caught by tests/test_hostile_run_dirs.py)."""
    from zoo import checkpoint as ckpt

    path = step_dir(run_dir) / "meta" / "metadata"
    meta = json.loads(path.read_text())
    change(meta)
    if ckpt.META_CHECKSUM in meta:
        meta[ckpt.META_CHECKSUM] = ckpt.meta_checksum(meta)
    path.write_text(json.dumps(meta))


# Configs ---------------------------------------------------------------------------------------

def test_missing_config_file(tmp_path, refused):
    refused(["train", tmp_path / "nope.yaml", "--workdir", tmp_path / "run"], tmp_path,
            "config file", "nope.yaml' does not exist", "check the path")


def test_yaml_syntax_error(tmp_path, write_config, refused):
    config = write_config(text="name: tiny\ndata: {name: digits, batch_size: 32\n")
    refused(["train", config, "--workdir", tmp_path / "run"], tmp_path, "YAML syntax error at line")


def test_unknown_key_suggests_the_nearest(tmp_path, write_config, refused):
    config = write_config({"optimizer": {"learnig_rate": 0.1}})
    refused(["train", config, "--workdir", tmp_path / "run"], tmp_path,
            "unknown key 'optimizer.learnig_rate'", "did you mean 'learning_rate'?")


def test_wrong_type(tmp_path, write_config, refused):
    config = write_config({"data": {"batch_size": "big"}})
    refused(["train", config, "--workdir", tmp_path / "run"], tmp_path,
            "data.batch_size: expected an integer, got 'big'")


def test_negative_learning_rate(tmp_path, write_config, refused):
    config = write_config({"optimizer": {"learning_rate": -0.1}})
    refused(["train", config, "--workdir", tmp_path / "run"], tmp_path,
            "optimizer.learning_rate: -0.1 is out of range; it must be greater than 0")


def test_batch_size_zero(tmp_path, write_config, refused):
    config = write_config({"data": {"batch_size": 0}})
    refused(["train", config, "--workdir", tmp_path / "run"], tmp_path,
            "data.batch_size: 0 is out of range; it must be at least 1")


@pytest.mark.slow
def test_batch_size_that_does_not_split_over_the_devices(tmp_path, write_config, refused_in_subprocess):
    config = write_config({"data": {"batch_size": 30}})
    refused_in_subprocess(["train", config, "--workdir", tmp_path / "run"], tmp_path,
                          "data.batch_size 30 does not split over 8 devices: use a multiple of 8", devices=8)


@pytest.mark.slow
def test_unknown_model(tmp_path, write_config, refused):
    config = write_config({"model": {"name": "mlpp"}})
    refused(["train", config, "--workdir", tmp_path / "run"], tmp_path,
            "unknown model 'mlpp'", "did you mean 'mlp'?", "zoo list")


def test_unknown_dataset(tmp_path, write_config, refused):
    config = write_config({"data": {"name": "digit"}})
    refused(["train", config, "--workdir", tmp_path / "run"], tmp_path,
            "unknown dataset 'digit'", "did you mean 'digits'?")


def test_unknown_optimizer(tmp_path, write_config, refused):
    config = write_config({"optimizer": {"name": "adamm"}})
    refused(["train", config, "--workdir", tmp_path / "run"], tmp_path,
            "optimizer.name: 'adamm' is not valid: did you mean 'adam'?")


def test_yaml_tag_that_builds_a_python_object(tmp_path, write_config, refused):
    config = write_config(text='name: !!python/object/apply:os.system ["echo hi"]\n')
    refused(["train", config, "--workdir", tmp_path / "run"], tmp_path,
            "python/object/apply:os.system", "is not allowed")


# Data ------------------------------------------------------------------------------------------

def _with_dataset(monkeypatch, name: str, x: np.ndarray, input_shape, kind: str = "image"):
    """Registers a dataset `name` of inputs `x` whose spec claims `input_shape` and `kind`."""
    y = np.arange(len(x), dtype=np.int32) % 10
    spec = zoo.data.DataSpec(name, tuple(input_shape), kind, 10, None, len(x), len(x))
    loaders = {**zoo.data._loaders(), name: lambda: zoo.data.Dataset(spec, x, y, x, y)}
    monkeypatch.setattr(zoo.data, "_loaders", lambda: loaders)


def test_data_of_a_shape_other_than_its_spec(tmp_path, write_config, refused, monkeypatch):
    _with_dataset(monkeypatch, "skewed", np.zeros((64, 8, 9, 1), np.float32), (8, 8, 1))
    config = write_config({"data": {"name": "skewed"}})
    refused(["train", config, "--workdir", tmp_path / "run"], tmp_path,
            "dataset 'skewed' gave inputs of shape (8, 9, 1), its spec says (8, 8, 1)")


def test_data_of_the_wrong_kind_for_its_spec(tmp_path, write_config, refused, monkeypatch):
    _with_dataset(monkeypatch, "int_images", np.zeros((64, 8, 8, 1), np.int64), (8, 8, 1))
    config = write_config({"data": {"name": "int_images"}})
    refused(["train", config, "--workdir", tmp_path / "run"], tmp_path,
            "dataset 'int_images' is of kind 'image' but its inputs are int64")


def test_data_of_a_shape_the_model_cannot_take(tmp_path, write_config, refused, monkeypatch):
    _with_dataset(monkeypatch, "flat", np.zeros((64, 64), np.float32), (64,), kind="signal")
    config = write_config({"data": {"name": "flat"}}, replace={"model": {"name": "cnn"}})
    refused(["train", config, "--workdir", tmp_path / "run"], tmp_path,
            "model 'cnn' takes image (B, H, W, C) float", "got float32 of shape (1, 64)")


# Checkpoints -----------------------------------------------------------------------------------

def test_eval_of_a_missing_run_dir(tmp_path, refused):
    refused(["eval", tmp_path / "nowhere"], tmp_path, "run directory", "nowhere' does not exist")


def test_eval_of_an_empty_run_dir(tmp_path, refused):
    (tmp_path / "empty").mkdir()
    refused(["eval", tmp_path / "empty"], tmp_path, "holds no checkpoints/", "written by `zoo train`")


@pytest.mark.slow
def test_train_on_a_run_dir_of_another_model(run_dir, write_config, refused):
    config = write_config(replace={"model": TAMPERED_MODEL})
    refused(["train", config, "--workdir", run_dir], run_dir,
            "holds a run of another config", "model.", "use another --workdir")


@pytest.mark.slow
def test_train_on_a_checkpoint_of_another_model_under_a_matching_config(run_dir, write_config, refused):
    config = write_config(replace={"model": TAMPERED_MODEL})
    stored = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**stored, "model": TAMPERED_MODEL}))
    refused(["train", config, "--workdir", run_dir], run_dir,
            "checkpoint step 20 holds another model", "use another --workdir")


@pytest.mark.slow
def test_eval_of_a_tampered_config(run_dir, refused):
    edit_meta(run_dir, lambda meta: meta["config"].update(model=TAMPERED_MODEL))
    refused(["eval", run_dir], run_dir, "checkpoint step 20 holds another model: array")


@pytest.mark.slow
def test_eval_of_a_truncated_array_file(run_dir, refused_in_subprocess):
    path = largest_array_file(run_dir)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    refused_in_subprocess(["eval", run_dir], run_dir, "checkpoint step 20 is damaged", "use another step")


@pytest.mark.slow
def test_eval_of_corrupted_bytes(run_dir, refused_in_subprocess):
    path = largest_array_file(run_dir)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    refused_in_subprocess(["eval", run_dir], run_dir, "checkpoint step 20 is damaged", "use another step")


@pytest.mark.slow
def test_eval_of_malformed_meta_json(run_dir, refused):
    (step_dir(run_dir) / "meta" / "metadata").write_text('{"format": 1, "arrays": ')
    refused(["eval", run_dir], run_dir, "checkpoint step 20 is damaged", "is not valid JSON")


def test_eval_of_a_newer_format(run_dir, refused):
    edit_meta(run_dir, lambda meta: meta.update(format=99))
    refused(["eval", run_dir], run_dir, "checkpoint step 20 has format 99, newer than this zoo reads",
            "upgrade zoo")


# The command line ------------------------------------------------------------------------------

def test_unknown_command(tmp_path, refused):
    refused(["frobnicate"], tmp_path, "invalid choice: 'frobnicate'", "zoo --help")


def test_unknown_flag(tmp_path, write_config, refused):
    refused(["train", write_config(), "--frobnicate"], tmp_path, "unrecognized arguments: --frobnicate",
            "zoo --help")
