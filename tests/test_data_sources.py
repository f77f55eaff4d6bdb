"""Data sources from files (npz, csv, image_folder, idx, cifar10/100), the Grain pipeline, the recorded
source and normalisation, and the bad-input refusals of each format."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from data_files import (banded_images, npz_arrays, write_cifar10, write_cifar100, write_csv, write_idx,
                        write_idx_file, write_npz, write_png_folder)

from zoo import data
from zoo.config import from_dict
from zoo.data.arrays import RowView
from zoo.data.pipeline import BatchIterator, Rows
from zoo.errors import ConfigError, DataError

TRAIN = {"model": {"name": "mlp", "hidden_sizes": [32]}, "train": {"steps": 60, "log_every": 30},
         "checkpoint": {"every": 30}, "optimizer": {"learning_rate": 3e-3}}

# source name -> (writer of the files under a folder, the data: section naming them)
SOURCES = {
    "npz": lambda d: {"name": "npz", "path": str(write_npz(d / "images.npz"))},
    "npz_vectors": lambda d: {"name": "npz", "path": str(write_npz(d / "vectors.npz", rank=2, compressed=True))},
    "npz_signals": lambda d: {"name": "npz", "path": str(write_npz(d / "signals.npz", rank=3))},
    "csv": lambda d: {"name": "csv", "path": str(write_csv(d / "animals.csv")), "label": "species", "test": 0.25},
    "image_folder": lambda d: {"name": "image_folder", "path": str(write_png_folder(d / "pngs"))},
    "image_folder_flat": lambda d: {"name": "image_folder", "test": 0.25,
                                    "path": str(write_png_folder(d / "flat", layout="flat"))},
    "idx": lambda d: {"name": "idx", "path": str(write_idx(d / "mnist", gz=True))},
    "cifar10": lambda d: {"name": "cifar10", "path": str(write_cifar10(d / "cifar-10-batches-bin"))},
    "cifar100": lambda d: {"name": "cifar100", "label_mode": "coarse",
                           "path": str(write_cifar100(d / "cifar-100-binary"))},
}


def config_of(section: dict, **train):
    return from_dict({"data": {"batch_size": 32, "eval_batch_size": 100, **section}, **TRAIN, **train})


# Training and evaluating through the CLI ------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("source", list(SOURCES))
def test_every_source_trains_above_chance_and_eval_equals_the_recorded_metrics(source, tmp_path, write_config,
                                                                                zoo_main):
    """Through the CLI (in this process: the imports and compiles are the suite's, not paid per source)."""
    section = SOURCES[source](tmp_path)
    config = write_config({**TRAIN, "data": {"batch_size": 32, "eval_batch_size": 100, **section}})
    run = tmp_path / "run"
    status, _, err = zoo_main("train", config, "--workdir", run)
    assert status == 0, err
    result = json.loads((run / "result.json").read_text())
    classes = 20 if source == "cifar100" else {"cifar10": 10, "csv": 3, "image_folder": 3,
                                               "image_folder_flat": 3}.get(source, 4)
    assert result["final"]["test_accuracy"] > 1 / classes + 0.2, result["final"]
    status, stdout, err = zoo_main("eval", run, "--json")
    assert status == 0, err
    out = json.loads(stdout)
    recorded = out["recorded"]
    assert out["val"]["accuracy"] == recorded["val_accuracy"]
    assert out["test"]["accuracy"] == recorded["test_accuracy"]
    assert out["test"]["loss"] == pytest.approx(recorded["test_loss"], rel=1e-6)


@pytest.mark.slow
def test_the_run_records_kind_resolved_path_fingerprint_classes_and_statistics(tmp_path, tiny_config, monkeypatch):
    from zoo import checkpoint as ckpt
    from zoo.training import fit

    write_png_folder(tmp_path / "pngs")
    monkeypatch.chdir(tmp_path)  # a relative data.path starts at the working directory
    fit(tiny_config({"data": {"name": "image_folder", "path": "pngs", "eval_batch_size": 60}}), tmp_path / "run")
    reader = ckpt.Checkpoints(tmp_path / "run" / "checkpoints", read_only=True)
    spec = data.DataSpec.from_json(reader.read_meta(reader.latest_step())["spec"])
    assert spec.source["kind"] == "image_folder" and spec.source["path"] == str((tmp_path / "pngs").resolve())
    assert spec.source["fingerprint"]["files"] == 210 and len(spec.source["fingerprint"]["hash"]) == 32
    assert spec.class_names == ("class_0", "class_1", "class_2")
    assert spec.normalization["shape"] == [1] and 0 < spec.normalization["mean"][0] < 1


# Sources, one behaviour each -------------------------------------------------------------------------

def test_uncompressed_npz_is_memory_mapped_not_loaded(tmp_path):
    dataset = data.load(config_of({"name": "npz", "path": str(write_npz(tmp_path / "a.npz"))}).data)
    assert isinstance(dataset.x_train, np.memmap)


def test_npy_files_named_by_a_manifest_are_memory_mapped(tmp_path):
    for key, array in npz_arrays().items():
        np.save(tmp_path / f"{key}.npy", array)
    (tmp_path / "manifest.json").write_text(json.dumps({k: f"{k}.npy" for k in npz_arrays()}))
    dataset = data.load(config_of({"name": "npz", "path": str(tmp_path / "manifest.json")}).data)
    assert isinstance(dataset.x_train, np.memmap) and dataset.spec.train_size == 300


def test_from_arrays_reads_sizes_shape_kind_and_class_count():
    arrays = npz_arrays(rank=3)
    dataset = data.Dataset.from_arrays(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                                       name="mine")
    spec = dataset.spec
    assert (spec.name, spec.input_shape, spec.kind, spec.num_classes) == ("mine", (8, 8), "signal", 4)
    assert (spec.train_size, spec.test_size, spec.source) == (300, 100, {"kind": "arrays"})


def test_integer_vectors_with_vocab_size_are_tokens():
    x = np.random.default_rng(0).integers(0, 50, size=(40, 12))
    dataset = data.Dataset.from_arrays(x, np.arange(40) % 2, x, np.arange(40) % 2, vocab_size=50)
    assert (dataset.spec.kind, dataset.spec.input_shape, dataset.spec.vocab_size) == ("tokens", (12,), 50)


def test_csv_string_labels_become_sorted_class_names_and_test_is_carved(tmp_path):
    section = {"name": "csv", "path": str(write_csv(tmp_path / "a.csv")), "label": "species", "test": 0.2}
    dataset = data.load(config_of(section).data)
    assert dataset.spec.class_names == ("cat", "dog", "emu")
    assert (dataset.spec.train_size, dataset.spec.test_size, dataset.spec.input_shape) == (240, 60, (4, 1))


def test_csv_statistics_are_per_column(tmp_path):
    section = {"name": "csv", "path": str(write_csv(tmp_path / "a.csv")), "label": "species", "test": 0.2}
    prepared = data.prepare(data.load(config_of(section).data), config_of(section).data)
    assert prepared.spec.normalization["shape"] == [4, 1]
    np.testing.assert_allclose(np.asarray(prepared.x_train).mean(axis=0), 0.0, atol=1e-5)


def test_cifar100_label_mode_picks_coarse_or_fine(tmp_path):
    root = write_cifar100(tmp_path / "c100")
    coarse = data.load(config_of({"name": "cifar100", "path": str(root), "label_mode": "coarse"}).data)
    fine = data.load(config_of({"name": "cifar100", "path": str(root)}).data)
    assert (coarse.spec.num_classes, fine.spec.num_classes) == (20, 100)
    np.testing.assert_array_equal(fine.y_train // 25, coarse.y_train)


def test_cifar10_records_are_read_channels_last(tmp_path):
    images, _ = banded_images(200 + 80, 10, size=(32, 32), channels=3)
    dataset = data.load(config_of({"name": "cifar10", "path": str(write_cifar10(tmp_path / "c10"))}).data)
    np.testing.assert_array_equal(dataset.x_test, images[200:])
    assert dataset.spec.class_names[0] == "class0"


def test_image_folder_decodes_lazily_and_resizes_to_image_size(tmp_path):
    section = {"name": "image_folder", "path": str(write_png_folder(tmp_path / "p")), "image_size": [4, 6],
               "channels": 3}
    dataset = data.load(config_of(section).data)
    assert not isinstance(dataset.x_train, np.ndarray) and dataset.x_train.shape == (150, 4, 6, 3)
    assert dataset.x_train[np.array([0, 5])].shape == (2, 4, 6, 3)


def test_image_folder_val_folder_is_the_validation_split(tmp_path):
    root = write_png_folder(tmp_path / "p")
    write_png_folder(tmp_path / "v", n_train=30, n_test=0)
    os.rename(tmp_path / "v" / "train", root / "val")
    prepared = data.prepare(data.load(config_of({"name": "image_folder", "path": str(root)}).data),
                            config_of({"name": "image_folder", "path": str(root)}).data)
    assert (prepared.spec.train_size, prepared.spec.val_size) == (150, 30)


def test_preprocess_applies_the_recorded_training_statistics(tmp_path):
    section = {"name": "npz", "path": str(write_npz(tmp_path / "a.npz"))}
    prepared = data.prepare(data.load(config_of(section).data), config_of(section).data)
    raw = npz_arrays()["x_test"]
    np.testing.assert_allclose(data.preprocess(prepared.spec, raw), prepared.x_test[:], rtol=1e-6)
    stats = prepared.spec.normalization
    np.testing.assert_allclose(data.preprocess(prepared.spec, raw)[..., 0].mean(),
                               (raw.mean() - stats["mean"][0]) / stats["std"][0], rtol=1e-4)


def test_builtin_datasets_are_not_normalised_by_default(tiny_config):
    prepared = data.prepare(data.load_dataset("digits"), tiny_config().data)
    assert prepared.spec.normalization is None and prepared.x_train.max() <= 1.0


def test_data_key_typo_suggests_the_key():
    with pytest.raises(ConfigError, match="did you mean 'image_size'"):
        from_dict({"data": {"image_sise": [8, 8]}, "train": {"steps": 1}})


# The Grain pipeline --------------------------------------------------------------------------------

def test_each_process_reads_its_rows_of_the_same_global_batch():
    x, y = banded_images(64, 4)
    x = x.astype(np.float32)
    whole = BatchIterator(x, y, 16, seed=3)
    halves = [BatchIterator(x, y, 16, seed=3, rows=Rows(i, 2)) for i in range(2)]
    for _ in range(6):
        gx, gy = next(whole)
        parts = [next(half) for half in halves]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), gx)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), gy)


@pytest.mark.slow
def test_worker_processes_give_the_same_batches_as_none(tmp_path):
    config = config_of({"name": "image_folder", "path": str(write_png_folder(tmp_path / "p"))})
    prepared = data.prepare(data.load(config.data), config.data)
    inline = BatchIterator(prepared.x_train, prepared.y_train, 16, seed=0)
    workers = BatchIterator(prepared.x_train, prepared.y_train, 16, seed=0, workers=2, position=inline.position)
    try:
        for _ in range(12):  # crosses an epoch boundary (8 batches an epoch)
            a, b = next(inline), next(workers)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
        assert workers.position == inline.position
    finally:
        workers.close()


def test_a_lazy_split_indexes_like_an_array(tmp_path):
    base = np.arange(40, dtype=np.float32).reshape(10, 4)
    view = RowView(base, rows=[9, 2, 5])
    np.testing.assert_array_equal(view[np.array([2, 0])], base[[5, 9]])
    assert view.shape == (3, 4) and view[1:].shape == (2, 4)


# Bad input: one line, exit 2, nothing written ------------------------------------------------------

@pytest.fixture
def refused(tmp_path, write_config, zoo_main, one_line_error, snapshot):
    """refused(data_section, *phrases): `zoo train` on it exits 2 with one line holding the phrases,
    and writes nothing."""

    def check(section: dict, *phrases: str):
        config = write_config({"data": section})
        before = snapshot(tmp_path)
        status, _, err = zoo_main("train", config, "--workdir", tmp_path / "run")
        assert status == 2
        one_line_error(err, *phrases)
        assert snapshot(tmp_path) == before

    return check


def test_a_truncated_image_is_refused_naming_the_file(tmp_path, refused):
    root = write_png_folder(tmp_path / "p")
    victim = sorted((root / "train" / "class_1").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:60])
    refused({"name": "image_folder", "path": str(root)}, str(victim), "truncated")


def test_a_non_image_file_is_refused_naming_the_file(tmp_path, refused):
    root = write_png_folder(tmp_path / "p")
    victim = root / "test" / "class_0" / "notes.png"
    victim.write_text("not an image")
    refused({"name": "image_folder", "path": str(root)}, str(victim))


def test_an_empty_class_folder_is_refused(tmp_path, refused):
    root = write_png_folder(tmp_path / "p")
    (root / "train" / "class_9").mkdir()
    refused({"name": "image_folder", "path": str(root)}, "class_9", "holds no images")


def test_images_of_mixed_sizes_without_image_size_are_refused(tmp_path, refused):
    from PIL import Image

    root = write_png_folder(tmp_path / "p")
    Image.new("L", (5, 7)).save(root / "train" / "class_0" / "odd.png")
    refused({"name": "image_folder", "path": str(root)}, "differ in size", "data.image_size")


def test_an_idx_file_with_a_wrong_magic_number_is_refused(tmp_path, refused):
    root = write_idx(tmp_path / "m")
    path = root / "train-labels-idx1-ubyte"
    path.write_bytes(b"\x08\x03" + path.read_bytes()[2:])
    refused({"name": "idx", "path": str(root)}, str(path), "magic number")


def test_an_idx_file_whose_size_disagrees_with_its_header_is_refused(tmp_path, refused):
    root = write_idx(tmp_path / "m")
    x, _ = banded_images(10, 4)
    path = write_idx_file(root / "t10k-images-idx3-ubyte", x[..., 0])
    path.write_bytes(path.read_bytes()[:-5])
    refused({"name": "idx", "path": str(root)}, str(path), "header says shape (10, 8, 8)")


def test_a_cifar_file_of_partial_records_is_refused(tmp_path, refused):
    root = write_cifar10(tmp_path / "c")
    path = root / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-100])
    refused({"name": "cifar10", "path": str(root)}, str(path), "3073-byte records")


def test_a_csv_non_numeric_feature_is_refused_naming_row_and_column(tmp_path, refused):
    path = write_csv(tmp_path / "a.csv")
    lines = path.read_text().splitlines()
    lines[7] = "abc," + lines[7].split(",", 1)[1]
    path.write_text("\n".join(lines) + "\n")
    refused({"name": "csv", "path": str(path), "label": "species", "test": 0.2}, "line 8", "column 'f0'", "'abc'")


def test_a_csv_without_the_label_column_is_refused_listing_the_columns(tmp_path, refused):
    path = write_csv(tmp_path / "a.csv")
    refused({"name": "csv", "path": str(path), "label": "kind", "test": 0.2}, "no label column 'kind'",
            "f0, f1, species, f2, f3")


def test_an_npz_missing_a_key_is_refused_listing_its_keys(tmp_path, refused):
    path = write_npz(tmp_path / "a.npz", y_test=None)
    refused({"name": "npz", "path": str(path)}, "lacks y_test", "it has x_test, x_train, y_train")


def test_labels_out_of_range_are_refused(tmp_path, refused):
    arrays = npz_arrays()
    arrays["y_test"][3] = 7
    path = write_npz(tmp_path / "a.npz", y_test=arrays["y_test"], class_names=np.array(["a", "b", "c", "d"]))
    refused({"name": "npz", "path": str(path)}, "label 7 is out of range for 4 classes")


def test_negative_labels_are_refused(tmp_path, refused):
    arrays = npz_arrays()
    arrays["y_train"][0] = -1
    path = write_npz(tmp_path / "a.npz", y_train=arrays["y_train"])
    refused({"name": "npz", "path": str(path)}, "label -1 is negative")


def test_a_data_path_that_does_not_exist_is_refused(tmp_path, refused):
    refused({"name": "image_folder", "path": str(tmp_path / "nowhere")}, "does not exist", "data.path")


@pytest.mark.slow
def test_eval_refuses_data_changed_since_training_unless_allowed(tmp_path, write_config, zoo_main, one_line_error):
    path = write_npz(tmp_path / "a.npz")
    config = write_config({"data": {"name": "npz", "path": str(path), "eval_batch_size": 100}})
    assert zoo_main("train", config, "--workdir", tmp_path / "run")[0] == 0
    arrays = npz_arrays()
    arrays["x_test"][0, 0, 0, 0] += 1
    np.savez(path, **arrays)
    status, _, err = zoo_main("eval", tmp_path / "run")
    assert status == 2
    one_line_error(err, "changed since training", "--allow-changed-data")
    assert zoo_main("eval", tmp_path / "run", "--allow-changed-data")[0] == 0


@pytest.mark.slow
def test_eval_of_a_run_trained_on_arrays_says_how_to_pass_them_again(tmp_path, tiny_config):
    from zoo.inference.evaluate import evaluate
    from zoo.training import fit

    arrays = npz_arrays()
    dataset = data.Dataset.from_arrays(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"])
    fit(tiny_config({"data": {"eval_batch_size": 100}}), tmp_path / "run", dataset=dataset)
    with pytest.raises(DataError, match=r"in-memory arrays .* zoo.evaluate\(.*dataset=zoo.Dataset"):
        evaluate(tmp_path / "run")


def test_an_unknown_format_name_suggests_the_nearest(tmp_path):
    with pytest.raises(DataError, match="did you mean 'image_folder'"):
        data.load(config_of({"name": "image_folders", "path": str(tmp_path)}).data)

