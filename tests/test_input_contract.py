"""What a run takes as input (issue 22): the value range of image arrays given to `LoadedRun.predict`,
`zoo predict` and a `.zoo` export (22.1), and the forms of config every public entry point takes
(22.7)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

import zoo
from conftest import TINY, merged
from data_files import banded_images, write_png_folder
from zoo.errors import ConfigError, DataError

N_TRAIN, N_TEST = 48, 12


# 22.1: image arrays, one contract: uint8 are pixels 0-255; floats are in the range the run records -----


@pytest.fixture(scope="module")
def png_run(tmp_path_factory, tiny_config):
    """A tiny run on a folder of 8x8 grey PNGs (its source gives uint8 pixels), its .zoo export, and
    the test images as uint8."""
    root = tmp_path_factory.mktemp("pngs")
    write_png_folder(root / "pngs", n_train=N_TRAIN, n_test=N_TEST, classes=3)
    run_dir = root / "run"
    zoo.fit(tiny_config({"data": {"name": "image_folder", "path": str(root / "pngs"), "batch_size": 16,
                                  "eval_batch_size": 12}, "train": {"steps": 4, "log_every": 2},
                         "checkpoint": {"every": 4}}), run_dir)
    zoo.export_run(run_dir, root / "model.zoo")
    images = banded_images(N_TRAIN + N_TEST, 3)[0][N_TRAIN:]  # the test split's pixels, as the PNGs hold them
    return run_dir, root / "model.zoo", images


def _predict_rows(zoo_main, target, x, path):
    np.save(path, x)
    status, out, err = zoo_main("predict", target, path, "--json")
    return status, (np.array([row["probabilities"] for row in json.loads(out)]) if status == 0 else None), err


@pytest.mark.slow
def test_load_run_predicts_the_same_on_uint8_pixels_and_floats_in_0_1(png_run):
    """22.1: a run whose source gave uint8 pixels takes uint8 (0-255) or floats in [0, 1] (pixels / 255,
    as the README says images are scaled); both give the same probabilities."""
    run_dir, _, images = png_run
    run = zoo.load_run(run_dir)
    np.testing.assert_allclose(run.predict(images.astype(np.float32) / 255), run.predict(images), atol=1e-6)


@pytest.mark.slow
def test_load_run_refuses_float_pixel_values_0_255_naming_the_range_and_the_fix(png_run):
    """22.1: floats above 1 given to a run that takes floats in [0, 1] are refused in one line naming
    the range and the fix, never silently predicted on."""
    run_dir, _, images = png_run
    with pytest.raises(DataError, match=r"\[0, 1\].*divide by 255, or give uint8") as caught:
        zoo.load_run(run_dir).predict(images.astype(np.float32))
    assert "\n" not in str(caught.value)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["run", "export"])
def test_zoo_predict_on_npy_gives_the_same_for_uint8_and_floats_in_0_1(target, png_run, zoo_main, tmp_path):
    """22.1: `zoo predict` on a .npy of uint8 pixels and on one of floats in [0, 1] prints the same
    probabilities, from the run directory and from its .zoo export alike."""
    run_dir, export, images = png_run
    where = run_dir if target == "run" else export
    status, as_uint8, err = _predict_rows(zoo_main, where, images, tmp_path / "u8.npy")
    assert status == 0, err
    status, as_floats, err = _predict_rows(zoo_main, where, images.astype(np.float32) / 255, tmp_path / "f.npy")
    assert status == 0, err
    np.testing.assert_allclose(as_floats, as_uint8, atol=1e-6)
    np.testing.assert_allclose(as_uint8, zoo.load_run(run_dir).predict(images), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["run", "export"])
def test_zoo_predict_refuses_float_pixel_values_0_255_in_one_line(target, png_run, zoo_main, tmp_path,
                                                                   one_line_error):
    """22.1: `zoo predict` on a .npy of floats 0-255 for a run that takes floats in [0, 1]: exit 2, one
    line naming the file, the expected range and the fix, from the run directory and its export."""
    run_dir, export, images = png_run
    status, _, err = _predict_rows(zoo_main, run_dir if target == "run" else export, images.astype(np.float32),
                                   tmp_path / "x.npy")
    assert status == 2
    one_line_error(err, "x.npy", "[0, 1]", "divide by 255, or give uint8")


@pytest.mark.slow
def test_an_export_header_records_the_inputs_the_run_takes(png_run):
    """22.1: a .zoo header says what its array inputs are: the training source's dtype and the float range."""
    from zoo.interop import artifact

    header, _ = artifact.read(png_run[1])
    assert header["raw_uint8"] is True and header["inputs"] == {"dtype": "uint8", "float_range": [0.0, 1.0]}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, tiny_config):
    """A tiny run on the built-in digits (float images in [0, 1])."""
    path = tmp_path_factory.mktemp("digits") / "run"
    zoo.fit(tiny_config({"train": {"steps": 4, "log_every": 2}, "checkpoint": {"every": 4}}), path)
    return path


@pytest.mark.slow
def test_a_run_on_float_images_in_0_1_takes_uint8_pixels_as_value_over_255(digits_run):
    """22.1: uint8 given to a run trained on floats in [0, 1] are pixels 0-255: the same as pixels / 255."""
    x = zoo.load_dataset("digits").x_test[:8]
    pixels = np.round(x * 255).astype(np.uint8)
    run = zoo.load_run(digits_run)
    np.testing.assert_allclose(run.predict(pixels), run.predict(pixels.astype(np.float32) / 255), atol=1e-6)


@pytest.mark.slow
def test_a_run_on_float_images_in_0_1_refuses_values_above_1(digits_run):
    """22.1: floats above 1 given to a run trained on floats in [0, 1] (digits) are refused in one line."""
    x = zoo.load_dataset("digits").x_test[:8]
    with pytest.raises(DataError, match=r"values in \[0, 255\].*\[0, 1\].*divide by 255"):
        zoo.load_run(digits_run).predict(x * 255)


@pytest.fixture(scope="module")
def float_pixel_run(tmp_path_factory, tiny_config):
    """A tiny run on in-memory float32 images holding pixel values 0-255 (not scaled)."""
    x, y = banded_images(N_TRAIN + N_TEST, 3)
    data = zoo.Dataset.from_arrays(x[:N_TRAIN].astype(np.float32), y[:N_TRAIN], x[N_TRAIN:].astype(np.float32),
                                   y[N_TRAIN:], name="floats")
    path = tmp_path_factory.mktemp("floats") / "run"
    zoo.fit(tiny_config({"data": {"name": "floats", "batch_size": 16, "eval_batch_size": 12},
                         "train": {"steps": 4, "log_every": 2}, "checkpoint": {"every": 4}}), path, dataset=data)
    return path, x[N_TRAIN:]


@pytest.mark.slow
def test_a_run_on_float_pixel_values_refuses_floats_within_0_1(float_pixel_run):
    """22.1: floats all within [0, 1] given to a run trained on floats 0-255 are refused in one line
    naming the run's range and the fix (multiply by 255, or give uint8)."""
    path, images = float_pixel_run
    with pytest.raises(DataError, match=r"within \[0, 1\].*\[0, 2\d\d\].*multiply by 255, or give uint8"):
        zoo.load_run(path).predict(images.astype(np.float32) / 255)


@pytest.mark.slow
def test_a_run_on_float_pixel_values_takes_uint8_as_those_values(float_pixel_run):
    """22.1: uint8 given to a run trained on floats 0-255 are those pixel values: the same predictions."""
    path, images = float_pixel_run
    run = zoo.load_run(path)
    np.testing.assert_allclose(run.predict(images), run.predict(images.astype(np.float32)), atol=1e-6)


# 22.7: every public function that takes a config takes a Config, a YAML path or a dict ------------------


def _tiny(**changes) -> dict:
    return merged(TINY, {"train": {"steps": 2, "log_every": 1}, "checkpoint": {"every": 2}, **changes})


def test_as_config_reads_a_yaml_path_with_its_base(tmp_path):
    """22.7: a path (str or Path) is read as zoo.config.load reads it, `base:` inheritance included."""
    from zoo.config import as_config

    (tmp_path / "base.yaml").write_text(yaml.safe_dump(_tiny()))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "name": "child"}))
    for path in (tmp_path / "child.yaml", str(tmp_path / "child.yaml")):
        config = as_config(path)
        assert config.name == "child" and config.train.steps == 2


def test_as_config_builds_a_dict_and_passes_a_config_through(compile_cache):
    """22.7: a dict is validated by zoo.config.from_dict; a Config is returned as it is."""
    from zoo.config import as_config, from_dict

    config = as_config(_tiny())
    assert config == from_dict(_tiny())
    assert as_config(config) is config


@pytest.mark.parametrize("value", [42, ["a.yaml"], None])
def test_as_config_refuses_another_type_in_one_line(value):
    """22.7: anything but a Config, a path or a dict is a one-line ConfigError naming the accepted forms."""
    from zoo.config import as_config

    with pytest.raises(ConfigError, match=r"a Config, the path of a YAML config or a dict") as caught:
        as_config(value)
    assert "\n" not in str(caught.value)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["path", "dict"])
def test_fit_takes_a_yaml_path_or_a_dict(form, tmp_path, compile_cache):
    """22.7: zoo.fit(path) and zoo.fit(dict) train as zoo.fit(Config) does (was an AttributeError)."""
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(_tiny(name="by_" + form)))
    result = zoo.fit(str(tmp_path / "c.yaml") if form == "path" else _tiny(name="by_dict"), tmp_path / "run")
    assert result["final_step"] == 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["name"] == "by_" + form


def test_fit_refuses_another_type_in_one_line_writing_nothing(tmp_path):
    """22.7: zoo.fit(42, ...) is a one-line ConfigError, and no run directory is made."""
    with pytest.raises(ConfigError, match="zoo.fit: expected a Config"):
        zoo.fit(42, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _compare_dict(directory) -> dict:
    model = directory / "mlp.yaml"
    model.write_text(yaml.safe_dump(_tiny(name="tiny_mlp")))
    return {"name": "tiny", "dataset": "digits", "seeds": [0], "budget": {"steps": 2}, "models": [str(model)]}


@pytest.mark.slow
def test_compare_takes_a_dict(tmp_path, compile_cache):
    """22.7: zoo.compare(dict) validates it as a compare config and runs it (a path and a
    CompareConfig already worked)."""
    result = zoo.compare(_compare_dict(tmp_path), tmp_path / "work")
    assert result["trained"] == 1 and (tmp_path / "work" / "report").is_dir()


def test_compare_refuses_another_type_in_one_line(tmp_path):
    """22.7: zoo.compare(42, ...) is a one-line ConfigError, and the workdir is not made."""
    with pytest.raises(ConfigError, match="zoo.compare: expected a CompareConfig"):
        zoo.compare(42, tmp_path / "work")
    assert not (tmp_path / "work").exists()
