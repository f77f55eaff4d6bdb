"""The trained model back in your hands: `zoo.load_run`, `zoo predict` on files, in-memory runs."""

import csv
import io

import numpy as np
import pytest

import zoo
from zoo.data import load_dataset
from zoo.errors import DataError


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_config):
    """A tiny digits MLP run (inputs 8x8x1 images in [0, 1])."""
    path = tmp_path_factory.mktemp("run")
    zoo.fit(tiny_config({"train": {"steps": 40}}), path)
    return path


def rows_of(text):
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.slow
def test_load_run_predict_gives_evals_test_accuracy(trained):
    run = zoo.load_run(trained)
    data = load_dataset("digits")
    probabilities = run.predict(data.x_test)
    assert probabilities.shape == (360, 10) and np.allclose(probabilities.sum(-1), 1, atol=1e-5)
    accuracy = float(np.mean(probabilities.argmax(-1) == data.y_test))
    assert accuracy == pytest.approx(zoo.evaluate(trained)["test"]["accuracy"], abs=1e-9)


@pytest.mark.slow
def test_load_run_exposes_model_variables_config_spec_and_class_names(trained):
    run = zoo.load_run(trained, step="best")
    logits, _ = run.model.apply(run.variables, run.preprocess(load_dataset("digits").x_test[:3]))
    assert logits.shape == (3, 10)
    assert run.config.model.name == "mlp" and run.spec.input_shape == (8, 8, 1)
    assert run.class_names == [str(i) for i in range(10)]
    assert run.step == zoo.evaluate(trained, best=True)["step"]


@pytest.mark.slow
def test_load_run_predict_refuses_the_wrong_shape_naming_the_expected_one(trained):
    with pytest.raises(DataError, match=r"it expects \(8, 8, 1\)"):
        zoo.load_run(trained).predict(np.zeros((4, 10), np.float32))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["npy", "npz", "csv", "image", "folder"])
def test_predict_gives_one_row_per_example_for_each_input_kind(kind, trained, tmp_path, zoo_main):
    from PIL import Image

    x = load_dataset("digits").x_test[:4]
    if kind == "npy":
        path = tmp_path / "x.npy"
        np.save(path, x)
    elif kind == "npz":
        path = tmp_path / "x.npz"
        np.savez(path, x=x)
    elif kind == "csv":
        path = tmp_path / "x.csv"
        path.write_text("\n".join(",".join(f"{v:.6f}" for v in row) for row in x.reshape(4, -1)) + "\n")
        x = x.reshape(4, -1)  # a flat row per example: refused below, rows of 64 are not (8, 8, 1)
    else:
        folder = tmp_path / "images"
        folder.mkdir()
        for i, image in enumerate(x):
            Image.fromarray((image[..., 0] * 255).round().astype(np.uint8)).save(folder / f"{i}.png")
        path = folder / "0.png" if kind == "image" else folder
    status, out, err = zoo_main("predict", trained, path, "--top-k", "2")
    if kind == "csv":
        assert status == 2 and "it expects (8, 8, 1)" in err
        return
    assert status == 0, err
    rows = rows_of(out)
    assert len(rows) == (1 if kind == "image" else 4)
    expected = zoo.load_run(trained).predict(load_dataset("digits").x_test[:len(rows)])
    assert [row["class"] for row in rows] == [str(c) for c in expected.argmax(-1)]
    # the same probabilities as the arrays give (PNGs round pixels to 1/255: a small tolerance)
    assert [float(row["probability"]) for row in rows] == pytest.approx(expected.max(-1), abs=0.01)
    assert all(len(row["top_k"].split()) == 2 for row in rows)


@pytest.mark.slow
def test_predict_reads_csv_rows_for_a_run_on_vectors(tmp_path, tiny_config, zoo_main):
    """A run on flat feature vectors: a CSV with a header, one example a row."""
    data = load_dataset("digits")
    flat = zoo.Dataset(zoo.DataSpec("flat", (64,), "signal", 10, None, len(data.y_train), len(data.y_test)),
                       data.x_train.reshape(-1, 64), data.y_train, data.x_test.reshape(-1, 64), data.y_test)
    zoo.fit(tiny_config({"data": {"name": "flat"}}), tmp_path / "run", dataset=flat)
    path = tmp_path / "x.csv"
    header = ",".join(f"f{i}" for i in range(64))
    path.write_text(header + "\n" + "\n".join(",".join(map(str, row)) for row in flat.x_test[:5]) + "\n")
    status, out, err = zoo_main("predict", tmp_path / "run", path, "--out", tmp_path / "p.csv")
    assert status == 0, err
    rows = rows_of((tmp_path / "p.csv").read_text())
    assert [row["input"] for row in rows] == [f"{path}[{i}]" for i in range(5)]


def test_predict_on_inputs_of_the_wrong_shape_is_refused_in_one_line(trained, tmp_path, zoo_main, one_line_error):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((3, 7, 7, 1), np.float32))
    status, out, err = zoo_main("predict", trained, path)
    assert status == 2 and out == ""
    one_line_error(err, str(path), "(7, 7, 1)", "it expects (8, 8, 1)")


def test_predict_on_an_npz_without_x_lists_its_keys(trained, tmp_path, zoo_main, one_line_error):
    path = tmp_path / "x.npz"
    np.savez(path, images=np.zeros((2, 8, 8, 1)))
    status, _, err = zoo_main("predict", trained, path)
    assert status == 2
    one_line_error(err, "has no 'x' array", "it holds images")


def test_predict_on_a_file_that_is_not_an_image_names_it(trained, tmp_path, zoo_main, one_line_error):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not a png")
    status, _, err = zoo_main("predict", trained, path)
    assert status == 2
    one_line_error(err, "broken.png", "cannot be read as an image")


@pytest.fixture(scope="module")
def in_memory(tmp_path_factory, tiny_config):
    """A run trained on arrays passed from Python (digits under another name), and those arrays."""
    data = load_dataset("digits")
    arrays = zoo.Dataset(zoo.DataSpec("mydata", (8, 8, 1), "image", 10, None, len(data.y_train), len(data.y_test)),
                         data.x_train, data.y_train, data.x_test, data.y_test)
    path = tmp_path_factory.mktemp("memory")
    result = zoo.fit(tiny_config({"data": {"name": "mydata"}}), path, dataset=arrays)
    return path, arrays, result


def test_a_run_on_in_memory_arrays_records_that_it_was(in_memory):
    _, _, result = in_memory
    assert result["in_memory"] is True


def test_eval_of_an_in_memory_run_says_how_to_pass_the_data_again(in_memory, zoo_main, one_line_error):
    path, _, _ = in_memory
    status, _, err = zoo_main("eval", path)
    assert status == 2
    one_line_error(err, "trained on in-memory arrays", "zoo.evaluate(", "dataset=")


def test_evaluate_and_load_run_accept_the_in_memory_dataset(in_memory):
    path, arrays, result = in_memory
    evaluated = zoo.evaluate(path, dataset=arrays)
    assert evaluated["test"]["accuracy"] == pytest.approx(result["final"]["test_accuracy"], abs=1e-9)
    run = zoo.load_run(path, dataset=arrays)
    accuracy = float(np.mean(run.predict(arrays.x_test).argmax(-1) == arrays.y_test))
    assert accuracy == pytest.approx(result["final"]["test_accuracy"], abs=1e-9)
