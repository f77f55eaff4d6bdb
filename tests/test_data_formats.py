"""Own-data sources and the dataset plumbing under them: class selection, CSV, npz, IDX, image
folders, CIFAR-10 files, MNIST-1D, held-out splits, memory-mapped views and worker batches.
Each test names the mutant it kills in its docstring (found by tools/mutation.py)."""

from __future__ import annotations

import mmap

import numpy as np
import pytest

from zoo import data
from zoo.data import arrays, cifar, source, split as split_lib
from zoo.errors import DataError


def test_a_class_outside_the_dataset_is_refused_naming_it_and_the_range():
    """zoo.data.split.x_select_classes__mutmut_13 (the message's advice was changed)."""
    x, y = np.zeros((6, 2), np.float32), np.arange(6) % 3
    dataset = data.Dataset.from_arrays(x, y, x, y, name="toy")
    with pytest.raises(DataError) as error:
        data.select_classes(dataset, [0, 7])
    assert str(error.value) == ("data.classes names class 7, but 'toy' has classes 0..2: give class indices of "
                                "the dataset")


def test_a_run_trained_on_in_memory_arrays_asks_for_them_again_when_the_config_reads_files():
    """zoo.data.source.x_check_unchanged__mutmut_17 (the error lost its message) and _16 (arrays given
    again were refused)."""
    with pytest.raises(DataError, match=r"in-memory arrays .* pass them again with "
                                        r"zoo\.evaluate\(run_dir, dataset=\.\.\.\)"):
        source.check_unchanged({"kind": "arrays"}, {"kind": "npz", "fingerprint": {}})
    source.check_unchanged({"kind": "arrays"}, {"kind": "arrays"})  # given again: nothing to refuse


def test_releasing_a_view_drops_the_pages_of_the_memory_map_under_it():
    """zoo.data.arrays.x_release__mutmut_13 (the walk down .base stopped at the view)."""
    advised = []

    class Mapped:
        def madvise(self, option):
            advised.append(option)

    class Array:
        def __init__(self, base=None, mapped=None):
            self.base, self._mmap = base, mapped

    arrays.release(Array(base=Array(base=Array(mapped=Mapped()))))
    assert advised == [mmap.MADV_DONTNEED]


def test_a_cifar10_folder_missing_a_file_names_the_cifar10_files(tmp_path):
    """zoo.data.cifar.x__need__mutmut_11 (cifar10 was told to hold CIFAR-100's train.bin, test.bin)."""
    with pytest.raises(DataError, match=r"lacks data_batch_1\.bin: .*cifar10 binary version "
                                        r"\(data_batch_1\.bin \.\.\. test_batch\.bin\)"):
        cifar._need(tmp_path, "data_batch_1.bin", "cifar10")
    with pytest.raises(DataError, match=r"cifar100 binary version \(train\.bin, test\.bin\)"):
        cifar._need(tmp_path, "train.bin", "cifar100")


def test_selecting_classes_keeps_every_example_of_each_and_relabels_them_in_the_order_given():
    """zoo.data.split.x_select_classes__mutmut_31 (the examples of the first class given were dropped)."""
    y = np.array([0, 1, 2, 2, 1, 0, 2])
    x = np.arange(7, dtype=np.float32).reshape(7, 1)
    chosen = data.select_classes(data.Dataset.from_arrays(x, y, x, y, name="toy"), [2, 0])
    np.testing.assert_array_equal(np.asarray(chosen.x_train).ravel(), [0, 2, 3, 5, 6])
    np.testing.assert_array_equal(chosen.y_train, [1, 0, 0, 1, 0])


def test_a_csv_test_file_with_a_label_the_training_file_lacks_is_refused_naming_it(tmp_path):
    """zoo.data.csv.x_load__mutmut_48 (the message indexed a second unseen label that is not there)."""
    from zoo.config import from_dict

    (tmp_path / "train.csv").write_text("f,label\n1,cat\n2,dog\n3,cat\n")
    (tmp_path / "test.csv").write_text("f,label\n1,cat\n2,emu\n")
    config = from_dict({"data": {"name": "csv", "path": str(tmp_path / "train.csv"), "label": "label",
                                 "test_path": str(tmp_path / "test.csv")}, "train": {"steps": 1}})
    with pytest.raises(DataError, match=r"test\.csv has label 'emu', never seen in .*train\.csv"):
        data.load(config.data)


def test_a_csv_test_file_with_other_columns_is_refused_naming_both_column_lists(tmp_path):
    """zoo.data.csv.x_load__mutmut_34 (the advice of the message was garbled) and _31 (the test file's
    columns were joined by 'XX, XX')."""
    from zoo.config import from_dict

    (tmp_path / "train.csv").write_text("f,g,label\n1,2,cat\n")
    (tmp_path / "test.csv").write_text("f,h,label\n1,2,cat\n")
    config = from_dict({"data": {"name": "csv", "path": str(tmp_path / "train.csv"), "label": "label",
                                 "test_path": str(tmp_path / "test.csv")}, "train": {"steps": 1}})
    with pytest.raises(DataError, match=r"test\.csv has columns f, h, .*train\.csv has f, g: the test file "
                                        r"needs the same columns$"):
        data.load(config.data)


def test_an_empty_array_stored_in_an_npz_keeps_its_dtype_and_shape(tmp_path):
    """zoo.data.npz.x__mapped_member__mutmut_46 (an empty member came back as float64)."""
    from zoo.data import npz

    np.savez(tmp_path / "a.npz", x=np.zeros((0, 3), np.int16), y=np.arange(4, dtype=np.uint8))
    members = npz._npz(tmp_path / "a.npz")
    assert (members["x"].dtype, members["x"].shape) == (np.int16, (0, 3))
    np.testing.assert_array_equal(members["y"], np.arange(4, dtype=np.uint8))


def test_arrays_without_any_label_have_no_classes():
    """zoo.data.xǁDatasetǁfrom_arrays__mutmut_42 (no labels made one class)."""
    x, y = np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
    spec = data.Dataset.from_arrays(x, y, x, y).spec
    assert (spec.num_classes, spec.train_size) == (0, 0)


def test_an_npz_with_a_validation_split_trains_on_train_and_selects_on_that_split(tmp_path):
    """zoo.data.npz.x_load__mutmut_78 (x_val was ignored: the validation split came from nowhere)."""
    from zoo.config import from_dict

    rng = np.random.default_rng(0)
    split = lambda n: (rng.normal(size=(n, 4)).astype(np.float32), np.arange(n) % 2)  # noqa: E731
    (x, y), (xv, yv), (xt, yt) = split(10), split(6), split(4)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_val=xv, y_val=yv, x_test=xt, y_test=yt)
    config = from_dict({"data": {"name": "npz", "path": str(tmp_path / "d.npz")}, "train": {"steps": 1}})
    dataset = data.load(config.data)
    np.testing.assert_array_equal(np.asarray(dataset.x_val).reshape(6, 4), xv)
    assert dataset.spec.name == "d"  # named after the file (zoo.data.npz.x_load__mutmut_58)
    assert (dataset.spec.train_size, dataset.spec.val_size, dataset.spec.test_size) == (10, 6, 4)


def test_a_held_out_split_takes_one_example_of_a_two_example_class_however_small_the_fraction():
    """zoo.data.split.x_stratified_indices__mutmut_16 (a class of exactly two gave none to the split)."""
    labels = np.array([0, 0] + [1] * 10)
    kept, held = split_lib.stratified_indices(labels, 0.1, seed=0)
    assert sorted(labels[held].tolist()) == [0, 1] and len(kept) == 10
    assert not set(kept) & set(held) and sorted([*kept, *held]) == list(range(12))


def test_float_labels_are_accepted_only_when_they_are_whole_numbers():
    """zoo.data.source.x_check_labels__mutmut_13 (any float label passed, 0.5 included)."""
    assert source.check_labels(np.array([0.0, 2.0, 1.0]), None, "y_train") == 3
    with pytest.raises(DataError, match=r"y_train: labels must be integer class ids, got float64"):
        source.check_labels(np.array([0.0, 0.5]), None, "y_train")


def test_a_vocabulary_size_is_kept_only_for_token_inputs():
    """zoo.data.xǁDatasetǁfrom_arrays__mutmut_115 (float images carried a vocab_size: models embedded them)."""
    x, y = np.zeros((4, 3, 3, 1), np.float32), np.arange(4) % 2
    assert data.Dataset.from_arrays(x, y, x, y, vocab_size=50).spec.vocab_size is None
    tokens = np.ones((4, 5), np.int32)
    assert data.Dataset.from_arrays(tokens, y, tokens, y, vocab_size=50).spec.vocab_size == 50


def test_a_run_evaluated_on_another_kind_of_data_is_refused_naming_both_kinds():
    """zoo.data.source.x_check_unchanged__mutmut_35 (the message named no current kind)."""
    with pytest.raises(DataError, match=r"^this run was trained on npz data, the config now reads csv: restore its "
                                        r"data section, or pass --allow-changed-data$"):
        source.check_unchanged({"kind": "npz"}, {"kind": "csv"})


@pytest.mark.parametrize("content", [b"", b"\x00\x00", b"\x00\x00\x08", b"\x01\x00\x08\x01"])
def test_a_file_too_short_or_with_a_wrong_magic_number_is_not_an_idx_file(tmp_path, content):
    """zoo.data.idx.x_read__mutmut_11 (a file under 4 bytes crashed with an IndexError)."""
    from zoo.data import idx

    (tmp_path / "x.idx").write_bytes(content)
    with pytest.raises(DataError, match=r"x\.idx is not an IDX file: wrong magic number"):
        idx.read(tmp_path / "x.idx")


def image_folder(root, **section):
    from zoo.config import from_dict

    return data.load(from_dict({"data": {"name": "image_folder", "path": str(root), **section},
                                "train": {"steps": 1}}).data)


def test_an_image_folder_of_wide_images_has_height_by_width_inputs(tmp_path):
    """zoo.data.image_folder.x__inspect__mutmut_4 (the width was read as the height: square inputs)."""
    from data_files import write_png_folder

    dataset = image_folder(write_png_folder(tmp_path / "p", n_train=6, n_test=3, size=(4, 6)))
    assert dataset.spec.input_shape == (4, 6, 1) and np.asarray(dataset.x_train[np.array([0])]).shape == (1, 4, 6, 1)


def test_class_folders_without_a_test_fraction_are_refused_naming_both_fixes(tmp_path):
    """zoo.data.image_folder.x_load__mutmut_59 (the advice of the message was garbled)."""
    from data_files import write_png_folder

    root = write_png_folder(tmp_path / "p", n_train=6, n_test=3, layout="flat")
    with pytest.raises(DataError) as error:
        image_folder(root)
    assert str(error.value) == (f"{root.resolve()} has no train/ and test/ folders: set data.test (e.g. 0.2) to "
                                "carve a test split out of its class folders, or use the train/<class>, "
                                "test/<class> layout")


def test_images_of_different_sizes_are_refused_naming_two_of_them_and_the_fix(tmp_path):
    """zoo.data.image_folder.x_load__mutmut_99 (the setting to use was misspelt in the message)."""
    from PIL import Image

    for split, size in (("train", (8, 8)), ("test", (6, 5))):
        (tmp_path / split / "a").mkdir(parents=True)
        Image.fromarray(np.zeros(size, np.uint8)).save(tmp_path / split / "a" / "0.png")
    with pytest.raises(DataError, match=r"images differ in size \(.*0\.png is 8x8, .*0\.png is 6x5\): set "
                                        r"data\.image_size: \[H, W\] to resize them all$"):
        image_folder(tmp_path)


def test_class_folders_with_a_test_fraction_hold_out_that_share_of_each_class(tmp_path):
    """zoo.data.image_folder.x_load__mutmut_138 (the carved-out test split was lost)."""
    from data_files import write_png_folder

    dataset = image_folder(write_png_folder(tmp_path / "p", n_train=30, n_test=10, layout="flat"), test=0.25)
    assert (dataset.spec.train_size, dataset.spec.test_size) == (30, 10)
    assert np.asarray(dataset.x_test[np.arange(10)]).shape == (10, 8, 8, 1)
    per_class = zip(np.bincount(dataset.y_test), np.bincount(dataset.y_train), strict=True)
    assert all(abs(test - 0.25 * (test + train)) <= 1 for test, train in per_class)


def test_a_train_folder_without_a_test_folder_is_refused_naming_both_fixes(tmp_path):
    """zoo.data.image_folder.x_load__mutmut_27 (the error lost its message)."""
    import shutil

    from data_files import write_png_folder

    root = write_png_folder(tmp_path / "p", n_train=6, n_test=3)
    shutil.rmtree(root / "test")
    with pytest.raises(DataError, match=r"has train/ but no test/: add test/<class>/ folders or set data\.test "
                                        r"\(e\.g\. 0\.2\) to carve a test split out of train/$"):
        image_folder(root)


def test_an_empty_class_folder_is_refused_naming_it_and_the_fix(tmp_path):
    """zoo.data.image_folder.x__class_files__mutmut_26 (the advice of the message was garbled)."""
    from data_files import write_png_folder

    root = write_png_folder(tmp_path / "p", n_train=6, n_test=3)
    (root / "train" / "class_9").mkdir()
    with pytest.raises(DataError, match=r"class folder .*class_9 holds no images \(.*\): add images or remove "
                                        r"the folder$"):
        image_folder(root)


@pytest.mark.slow
def test_mnist1d_has_its_published_4000_and_1000_labelled_signals_of_length_40():
    """zoo.data.mnist1d.x__make__mutmut_52 (the training labels were lost)."""
    from zoo.data import mnist1d

    dataset = mnist1d.load()
    assert dataset.x_train.shape == (4000, 40, 1) and dataset.x_test.shape == (1000, 40, 1)
    for labels in (dataset.y_train, dataset.y_test):
        assert labels.dtype == np.int32 and set(np.unique(labels)) == set(range(10))


@pytest.mark.slow
def test_batches_are_the_same_with_a_worker_process_as_without():
    """zoo.data.pipeline.xǁGatherBatchǁmap__mutmut_15 and xǁBatchIteratorǁ_element__mutmut_12 (the
    worker path, which gathers one batch per element, crashed on a float index or a bad reshape)."""
    from zoo.data.pipeline import BatchIterator

    x = np.arange(200, dtype=np.float32).reshape(50, 4)
    y = np.arange(50) % 3
    plain, workers = BatchIterator(x, y, 8, seed=1), BatchIterator(x, y, 8, seed=1, workers=1)
    for _ in range(8):  # past the end of the first epoch
        (xa, ya), (xb, yb) = next(plain), next(workers)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_a_row_view_converts_to_the_array_of_all_its_rows():
    """zoo.data.arrays.xǁRowViewǁ__array____mutmut_1 (np.asarray of a view gave None)."""
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    view = arrays.RowView(x, np.array([4, 0, 2]))
    np.testing.assert_array_equal(np.asarray(view), x[[4, 0, 2]])
    assert np.asarray(view, dtype=np.float64).dtype == np.float64


def test_idx_files_load_as_grey_images_with_one_label_each_in_both_splits(tmp_path):
    """zoo.data.idx.x_load__mutmut_19, _22, _27 and _48 (the test split skipped or swapped, grey images
    left without a channel axis, every 1-D label file refused)."""
    from zoo.config import from_dict

    from data_files import write_idx

    root = write_idx(tmp_path / "idx", n_train=30, n_test=10)
    dataset = data.load(from_dict({"data": {"name": "idx", "path": str(root)}, "train": {"steps": 1}}).data)
    assert np.asarray(dataset.x_train).shape[0] == 30 and np.asarray(dataset.x_test).shape[0] == 10
    assert np.asarray(dataset.x_train).ndim == 4 and np.asarray(dataset.x_train).shape[-1] == 1
    assert len(dataset.y_train) == 30 and len(dataset.y_test) == 10


def test_data_changed_since_training_is_refused_naming_both_fingerprints_with_12_hash_digits():
    """zoo.data.source.x_check_unchanged__mutmut_86 (the current hash was shown with 13 digits)."""
    before = {"kind": "npz", "path": "/d.npz", "fingerprint": {"files": 1, "bytes": 10, "hash": "a" * 32}}
    now = {"kind": "npz", "path": "/d.npz", "fingerprint": {"files": 1, "bytes": 12, "hash": "b" * 32}}
    with pytest.raises(DataError) as error:
        source.check_unchanged(before, now)
    assert str(error.value) == (
        "the data at /d.npz changed since training (1 files, 10 bytes, hash aaaaaaaaaaaa then; 1 files, 12 bytes, "
        "hash bbbbbbbbbbbb now): restore the data, or pass --allow-changed-data to evaluate on it anyway")


def test_the_source_record_of_files_names_their_kind_path_and_fingerprint(tmp_path):
    """zoo.data.source.x_record__mutmut_1 (the "kind" key was misspelt: a changed kind went unnoticed)."""
    (tmp_path / "d.npz").write_bytes(b"12345")
    recorded = source.record("npz", tmp_path / "d.npz", [tmp_path / "d.npz"])
    assert recorded["kind"] == "npz" and recorded["path"] == str(tmp_path / "d.npz")
    assert recorded["fingerprint"]["files"] == 1 and recorded["fingerprint"]["bytes"] == 5


def test_a_negative_label_is_refused_naming_its_row():
    """zoo.data.source.x_check_labels__mutmut_58 (the message named row 0 whatever the row)."""
    with pytest.raises(DataError) as error:
        source.check_labels(np.array([0, 2, 1, -1, 0]), None, "d.npz y_train")
    assert str(error.value) == ("d.npz y_train: label -1 is negative (row 3): class ids run from 0 to the class "
                                "count - 1")


def test_the_class_names_stored_in_an_npz_name_the_classes(tmp_path):
    """zoo.data.npz.x_load__mutmut_39 (every class was named 'None')."""
    from zoo.config import from_dict

    x, y = np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1])
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x, y_test=y, class_names=np.array(["cat", "dog"]))
    config = from_dict({"data": {"name": "npz", "path": str(tmp_path / "d.npz")}, "train": {"steps": 1}})
    assert data.load(config.data).spec.class_names == ("cat", "dog")


def csv_config(tmp_path, **section):
    from zoo.config import from_dict

    return from_dict({"data": {"name": "csv", "path": str(tmp_path / "train.csv"), "label": "label", **section},
                      "train": {"steps": 1}}).data


def test_csv_labels_that_look_like_a_regression_target_are_refused_naming_the_training_file(tmp_path):
    """zoo.data.csv.x_load__mutmut_37 (with a test file the message began 'None:' instead of the file)."""
    (tmp_path / "train.csv").write_text("f,label\n" + "".join(f"{i},{i}\n" for i in range(30)))
    (tmp_path / "test.csv").write_text("f,label\n0,0\n1,1\n")
    with pytest.raises(DataError) as error:
        data.load(csv_config(tmp_path, test_path=str(tmp_path / "test.csv")))
    assert str(error.value).startswith(f"{tmp_path / 'train.csv'}: the labels take 30 distinct values in 32 rows, "
                                       "which looks like a regression target")


def test_a_negative_csv_label_is_refused_naming_the_file(tmp_path):
    """zoo.data.csv.x_load__mutmut_75 (the message began 'None:' instead of the file)."""
    (tmp_path / "train.csv").write_text("f,label\n" + "".join(f"{i},{i % 3 - 1}\n" for i in range(12)))
    with pytest.raises(DataError) as error:
        data.load(csv_config(tmp_path, test=0.25))
    assert str(error.value).startswith(f"{tmp_path / 'train.csv'}: label -1 is negative (row 0)")


def test_the_memory_limit_counts_every_block_of_csv_values(tmp_path, monkeypatch):
    """zoo.data.csv.x__rows__mutmut_33 (each new block of values took bytes off the count: never refused)."""
    from zoo.data import csv as csv_lib, limits

    (tmp_path / "train.csv").write_text("f,label\n" + "1,0\n" * 4097)  # 16 KB on disk; two blocks of 4096 rows
    monkeypatch.setenv(limits.MAX_BYTES_ENV, "20000")  # one block of 4096 float32 values is 16,384 bytes
    with pytest.raises(DataError, match=r"^the values of CSV file .*train\.csv takes 32,768 bytes in memory, over "
                                        r"zoo's limit of 20,000"):
        csv_lib._read(tmp_path / "train.csv", ("label",))


def test_an_idx_source_without_a_path_is_refused_naming_the_idx_source():
    """zoo.data.idx.x_load__mutmut_5 (the message said data.name 'None')."""
    from zoo.config import from_dict
    from zoo.data import idx

    with pytest.raises(DataError) as error:
        idx.load(from_dict({"data": {"name": "idx"}, "train": {"steps": 1}}).data)
    assert str(error.value) == "data.name 'idx' reads files: set data.path to the file or folder holding them"


def test_a_wrong_idx_magic_number_is_refused_saying_what_the_magic_number_holds(tmp_path):
    """zoo.data.idx.x__header__mutmut_22 (the description of the magic number was shouted in capitals)."""
    from zoo.data import idx

    (tmp_path / "x.idx").write_bytes(b"\x01\x00\x08\x01")
    with pytest.raises(DataError) as error:
        idx.read(tmp_path / "x.idx")
    assert str(error.value) == (f"{tmp_path / 'x.idx'} is not an IDX file: wrong magic number 01000801 (expected "
                                "00 00, a type code such as 08, and the number of dimensions)")


def test_a_truncated_idx_file_is_refused_saying_how_many_bytes_it_holds(tmp_path):
    """zoo.data.idx.x_read__mutmut_40 (the message said the file holds 'None' bytes)."""
    from zoo.data import idx

    (tmp_path / "x.idx").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x08" + b"\x01" * 5)
    with pytest.raises(DataError) as error:
        idx.read(tmp_path / "x.idx")
    assert str(error.value) == (f"{tmp_path / 'x.idx'}: the header says shape (8,) (8 bytes of values) but the file "
                                "holds 5: the file is truncated or not this dataset's")


def test_a_test_class_folder_that_train_lacks_is_refused_naming_it_and_why(tmp_path):
    """zoo.data.image_folder.x__labelled__mutmut_8 (the reason was garbled to 'XXtraining imagesXX')."""
    import shutil

    from data_files import write_png_folder

    root = write_png_folder(tmp_path / "p", n_train=6, n_test=3)
    (root / "test" / "class_9").mkdir()
    shutil.copy(next((root / "test").rglob("*.png")), root / "test" / "class_9" / "a.png")
    with pytest.raises(DataError) as error:
        image_folder(root)
    assert str(error.value) == (f"{root / 'test'} has class folder 'class_9', which train/ lacks: every class needs "
                                "training images")


def test_one_image_of_an_image_folder_decodes_to_height_width_channels(tmp_path):
    """zoo.data.image_folder.xǁLazyImagesǁ__getitem____mutmut_6 (an integer index lost the channels: TypeError)
    and zoo.data.image_folder.x_load__mutmut_188 (the source was recorded as kind 'XXimage_folderXX')."""
    from data_files import write_png_folder

    dataset = image_folder(write_png_folder(tmp_path / "p", n_train=6, n_test=3, size=(4, 6)))
    image = dataset.x_test[1]
    assert image.shape == (4, 6, 1) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, np.asarray(dataset.x_test[np.array([1])])[0])
    assert dataset.spec.source["kind"] == "image_folder"
