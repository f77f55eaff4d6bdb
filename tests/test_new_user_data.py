"""Issue 22, "what a new user tripped on": non-finite values in data (item 2), labels that are not
0..K-1 or not classes at all (item 3), error messages: case, grammar, class names in data.classes
(item 13), and packaging (item 14)."""

from __future__ import annotations

import csv
import io
import struct
import subprocess
import tomllib
from pathlib import Path

import numpy as np
import pytest
from data_files import npz_arrays, write_csv, write_idx, write_npz

from zoo import data
from zoo.config import from_dict
from zoo.errors import DataError, did_you_mean

REPO = Path(__file__).resolve().parents[1]


def data_config(section: dict):
    return from_dict({"data": section, "train": {"steps": 1}}).data


def edit_csv(path: Path, line: int, column: int, cell: str) -> Path:
    """`path` with the cell at (editor line number, column index) replaced by `cell`."""
    rows = list(csv.reader(io.StringIO(path.read_text())))
    rows[line - 1][column] = cell
    path.write_text("\n".join(",".join(row) for row in rows) + "\n")
    return path


def relabel_csv(path: Path, change) -> Path:
    """`path` (write_csv's layout, integer labels in column 2) with every label passed through `change`."""
    rows = list(csv.reader(io.StringIO(path.read_text())))
    for row in rows[1:]:
        row[2] = str(change(int(row[2])))
    path.write_text("\n".join(",".join(row) for row in rows) + "\n")
    return path


# Item 2: non-finite features or labels are refused at load, naming the file, row and column ------------------


def test_a_nan_cell_in_a_csv_is_refused_before_training_naming_file_line_and_column(tmp_path, refused_train):
    """Item 2: the literal `nan` in a feature cell (it trained, then failed as "training diverged") is
    refused in one line naming the file, the line and the column."""
    path = edit_csv(write_csv(tmp_path / "animals.csv"), 6, 0, "nan")
    refused_train({"data": {"name": "csv", "path": str(path), "label": "species", "test": 0.2}},
            f"{path} line 6, column 'f0': 'nan' is not a finite number", "fix or drop the row")


def _npz_with(tmp_path, key, index, value, compressed):
    arrays = npz_arrays()
    arrays[key] = arrays[key].astype(np.float32)
    arrays[key][index] = value
    return str(write_npz(tmp_path / "a.npz", compressed=compressed, **{key: arrays[key]}))


def _npy_folder_with(tmp_path, key, index, value):
    folder = tmp_path / "arrays"
    folder.mkdir()
    for name, array in npz_arrays(rank=2).items():
        array = array.astype(np.float32) if name == key else array
        if name == key:
            array[index] = value
        np.save(folder / f"{name}.npy", array)
    return str(folder)


def _idx_with_float_images(tmp_path, index, value):
    root = write_idx(tmp_path / "m")
    images = np.zeros((100, 8, 8), np.float32)
    images[index] = value
    header = bytes([0, 0, 0x0D, 3]) + struct.pack(">3I", *images.shape)
    (root / "t10k-images-idx3-ubyte").write_bytes(header + images.astype(">f4").tobytes())
    return str(root)


NON_FINITE = {
    "csv_inf": (lambda d: {"name": "csv", "label": "species", "test": 0.2,
                           "path": str(edit_csv(write_csv(d / "a.csv"), 9, 4, "-inf"))},
                r"a.csv line 9, column 'f3': '-inf' is not a finite number"),
    "npz_deflated": (lambda d: {"name": "npz", "path": _npz_with(d, "x_train", (7, 3, 4, 0), np.nan, True)},
                     r"a.npz x_train row 7, position \(3, 4, 0\): nan is not a finite number"),
    "npz_memory_mapped": (lambda d: {"name": "npz", "path": _npz_with(d, "x_test", (2, 0, 1, 0), np.inf, False)},
                          r"a.npz x_test row 2, position \(0, 1, 0\): inf is not a finite number"),
    "npy_vectors": (lambda d: {"name": "npz", "path": _npy_folder_with(d, "x_train", (250, 17), np.nan)},
                    r"arrays x_train row 250, column 17: nan is not a finite number"),
    "idx_float": (lambda d: {"name": "idx", "path": _idx_with_float_images(d, (42, 5, 6), -np.inf)},
                  r"m x_test row 42, position \(5, 6, 0\): -inf is not a finite number"),
    "npz_label": (lambda d: {"name": "npz", "path": _npz_with(d, "y_train", 5, np.nan, True)},
                  r"a.npz y_train: labels must be integer class ids, got float32 \(row 5: nan\)"),
}


@pytest.mark.parametrize("source", list(NON_FINITE))
def test_a_non_finite_value_in_any_file_source_is_refused_at_load_naming_file_row_and_column(tmp_path, source):
    """Item 2: NaN or infinity in csv, npz (deflated or memory-mapped), .npy and IDX features, or in
    labels, is refused when the source is loaded, naming the file, the split, the row and the column."""
    section, message = NON_FINITE[source]
    with pytest.raises(DataError, match=message):
        data.load(data_config(section(tmp_path)))


def test_a_non_finite_value_in_in_memory_arrays_is_refused_naming_the_array_row_and_column():
    """Item 2: zoo.Dataset.from_arrays refuses NaN in the arrays it is given, naming the row and column."""
    x = np.ones((20, 3), np.float32)
    x[4, 1] = np.nan
    with pytest.raises(DataError, match=r"dataset 'mine' x_test row 4, column 1: nan is not a finite number"):
        data.Dataset.from_arrays(np.ones((10, 3), np.float32), np.arange(10) % 2, x, np.arange(20) % 2, name="mine")


def test_a_non_finite_value_in_a_dataset_built_directly_is_refused_before_training(tiny_config):
    """Item 2: a zoo.Dataset constructed directly (not through from_arrays) is checked as it is prepared
    for training, before any step."""
    x = np.ones((64, 8, 8, 1), np.float32)
    x[3, 2, 1, 0] = np.inf
    y = np.arange(64, dtype=np.int32) % 2
    spec = data.DataSpec("direct", (8, 8, 1), "image", 2, None, 64, 64)
    with pytest.raises(DataError, match=r"dataset 'direct' x_train row 3, position \(2, 1, 0\): inf is not"):
        data.prepare(data.Dataset(spec, x, y, np.zeros_like(x), y), tiny_config().data)


# Item 3: labels that are not 0..K-1, and label columns that are not classes ----------------------------------


def test_integer_labels_1_to_3_are_three_classes_named_by_their_values(tmp_path):
    """Item 3: labels 1..3 gave a 4-class head with an empty class 0; labels that are not 0..K-1 are
    remapped to 0..K-1 in sorted order, the original values becoming the class names."""
    path = relabel_csv(write_csv(tmp_path / "a.csv", text_labels=False), lambda label: label + 1)
    dataset = data.load(data_config({"name": "csv", "path": str(path), "label": "species", "test": 0.2}))
    assert (dataset.spec.num_classes, dataset.spec.class_names) == (3, ("1", "2", "3"))
    assert sorted(set(dataset.y_train.tolist())) == [0, 1, 2]


@pytest.mark.slow
def test_predict_prints_the_original_label_values_of_remapped_labels(tmp_path, write_config, zoo_main):
    """Item 3: a run trained on labels 10, 20, 30 predicts '10', '20' or '30', never a class index."""
    path = relabel_csv(write_csv(tmp_path / "a.csv", text_labels=False), lambda label: 10 * (label + 1))
    config = write_config({"data": {"name": "csv", "path": str(path), "label": "species", "test": 0.2,
                                    "eval_batch_size": 100}})
    assert zoo_main("train", config, "--workdir", tmp_path / "run")[0] == 0
    features = tmp_path / "features.csv"
    features.write_text("0.1,2.0,0.3,0.4\n2.0,0.1,0.2,0.3\n")
    status, out, err = zoo_main("predict", tmp_path / "run", features)
    assert status == 0, err
    classes = [row["class"] for row in csv.DictReader(io.StringIO(out))]
    assert len(classes) == 2 and set(classes) <= {"10", "20", "30"}


def test_a_continuous_label_column_is_refused_as_a_regression_target(tmp_path, refused_train):
    """Item 3: a price column as the label made hundreds of classes; more distinct labels than half
    the rows is refused as a regression target in one line."""
    rng = np.random.default_rng(0)
    lines = ["a,b,price"] + [f"{rng.normal():.3f},{rng.normal():.3f},{rng.uniform(100, 900):.2f}" for _ in range(300)]
    (tmp_path / "prices.csv").write_text("\n".join(lines) + "\n")
    refused_train({"data": {"name": "csv", "path": str(tmp_path / "prices.csv"), "label": "price", "test": 0.2}},
            "distinct values in 300 rows", "looks like a regression target",
            "classification needs integer class labels")


def test_more_than_1000_distinct_integer_labels_are_refused_as_a_regression_target(tmp_path):
    """Item 3: integer labels of 1500 distinct values (in 3000 rows) are not a classification's classes."""
    x = np.zeros((3000, 2), np.float32)
    y = np.arange(3000) % 1500
    with pytest.raises(DataError, match=r"the labels take 1,500 distinct values in 6,000 rows, which looks like a "
                                        r"regression target: classification needs integer class labels"):
        data.Dataset.from_arrays(x, y, x, y)


def test_a_few_classes_with_one_example_each_are_still_classes():
    """Item 3: the regression guard leaves small label sets alone: 10 rows of 10 classes are classes."""
    x = np.zeros((10, 2), np.float32)
    assert data.Dataset.from_arrays(x, np.arange(10), x, np.arange(10)).spec.num_classes == 10


# Item 13: messages ----------------------------------------------------------------------------------------------


def test_a_wrongly_cased_optimizer_name_suggests_that_name(tmp_path, refused_train):
    """Item 13: optimizer.name adamW suggested 'adam'; names are compared ignoring case first."""
    refused_train({"optimizer": {"name": "adamW"}}, "'adamW' is not valid: did you mean 'adamw'?")


@pytest.mark.parametrize("value, choices, hint", [("adamW", ["adam", "adamw"], "adamw"), ("MLP", ["mlp", "cnn"], "mlp"),
                                                  ("Adamm", ["adam", "sgd"], "adam")])
def test_did_you_mean_matches_ignoring_case_and_answers_in_the_choices_case(value, choices, hint):
    """Item 13: the suggestion is the choice equal ignoring case, else the closest ignoring case."""
    assert did_you_mean(value, choices) == f"did you mean '{hint}'? "


def test_a_list_type_is_named_in_plain_english(refused_train):
    """Item 13: "expected a list of an integers" reads "expected a list of integers"."""
    refused_train({"data": {"image_size": "big"}}, "data.image_size: expected a list of integers or null, got 'big'")


def test_data_classes_takes_class_names_resolved_against_the_datasets_names(tmp_path, tiny_config):
    """Item 13: data.classes: [emu, cat] keeps those classes of a CSV with string labels, in that order."""
    from zoo.training.setup import prepare_dataset

    path = write_csv(tmp_path / "a.csv")
    config = tiny_config({"data": {"name": "csv", "path": str(path), "label": "species", "test": 0.2,
                                   "classes": ["emu", "cat"]}})
    spec = prepare_dataset(config).spec
    assert (spec.num_classes, spec.class_names) == (2, ("emu", "cat"))


def test_an_unknown_class_name_in_data_classes_is_refused_naming_the_classes(tmp_path, refused_train):
    """Item 13: a class name the dataset lacks is refused in one line with a suggestion and its classes."""
    path = write_csv(tmp_path / "a.csv")
    refused_train({"data": {"name": "csv", "path": str(path), "label": "species", "test": 0.2, "classes": ["emu", "kat"]}},
            "data.classes names class 'kat', which 'a' lacks: did you mean 'cat'? its classes are cat, dog, emu")


# Item 14: packaging -------------------------------------------------------------------------------------------


def test_the_license_is_an_spdx_expression_built_by_a_setuptools_that_reads_it():
    """Item 14: `license = { text = ... }` (deprecated by setuptools 77) is the SPDX string form, and the
    build requires a setuptools that accepts it."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in pyproject["build-system"]["requires"]


def test_the_exported_digits_folder_is_ignored_by_git_but_the_data_package_is_not():
    """Item 14: data/ (scripts/export_digits_png.py writes data/digits_png) is ignored; zoo/data/ is not."""
    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO).returncode == 0

    assert ignored("data/digits_png/train/0/0.png")
    assert not ignored("zoo/data/new_source.py")
