"""Issue 26, "hostile files": a file may declare, or inflate to, far more than it holds; configs and
hyperparameters may be out of any sane range. Each is refused before anything runs, in one line
(exit 2, no traceback) that names the problem, the limit where there is one and how to raise it; the
hostile files are built here, small on disk."""

from __future__ import annotations

import gzip
import io
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from data_files import npz_arrays, write_cifar10, write_csv, write_idx, write_npz, write_png_folder

from zoo import config as config_lib
from zoo import data
from zoo.config import from_dict
from zoo.data import idx
from zoo.errors import DataError, ZooError

GIB = 1 << 30
BYTES_ENV, PIXELS_ENV = "ZOO_MAX_DATA_BYTES", "ZOO_MAX_IMAGE_PIXELS"  # the limits' names users set


def data_config(section: dict):
    return from_dict({"data": section, "train": {"steps": 1}}).data


def peak_bytes(function) -> int:
    """The peak of memory traced (Python objects and NumPy arrays) while `function()` runs."""
    tracemalloc.start()
    try:
        function()
    except ZooError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def npy_header(shape: tuple, dtype: str = "<f4") -> bytes:
    """The bytes of an .npy header declaring `shape`, with no values after it."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": dtype, "fortran_order": False, "shape": shape})
    return out.getvalue()


def gzip_of_zeros(path: Path, header: bytes, zeros: int) -> Path:
    """A gzip file of `header` then `zeros` zero bytes, written in 1 MB pieces (small on disk)."""
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(header)
        for start in range(0, zeros, 1 << 20):
            out.write(bytes(min(1 << 20, zeros - start)))
    return path


def png_of_one_colour(path: Path, width: int, height: int) -> Path:
    """A valid black PNG (1 bit per pixel): 12000 x 12000 is ~18 KB on disk, 144 M pixels decoded."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = bytes(1 + (width + 7) // 8) * height  # each row: filter byte 0, then width bits of 0
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9))
                     + chunk(b"IEND", b""))
    return path


# A. YAML aliases -------------------------------------------------------------------------------------

BILLION_LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip([None, *"abcdefgh"], "abcdefghi"))


def test_a_billion_laughs_config_is_refused_at_load_in_one_line(refused_train):
    """A: nested YAML aliases (a few hundred bytes, 9**9 strings once expanded by the JSON round trip
    of overrides) are refused when the file is read, naming aliases and the fix."""
    assert len(BILLION_LAUGHS) < 500
    refused_train(None, "YAML aliases", "are not allowed", "write the value out", text=BILLION_LAUGHS)


def test_a_yaml_alias_in_an_override_value_is_refused(tmp_path, write_config, zoo_main, one_line_error):
    """A: an override value is YAML too: an anchor and an alias in it are refused the same way."""
    status, _, err = zoo_main("train", write_config(), "--workdir", tmp_path / "run",
                              "--set", "freeze=[&a Dense_0, *a]")
    assert status == 2
    one_line_error(err, "override 'freeze': YAML aliases", "are not allowed")


def test_a_config_file_over_a_megabyte_is_refused_without_parsing_it(refused_train):
    """A: a config is a few hundred bytes; a file over 1 MiB (here 1.5 MB of comments) is refused from
    its size, before YAML reads it."""
    refused_train(None, "bytes, not a config (at most 1,048,576)", "check the path",
            text="name: tiny\n" + "# padding\n" * 150_000)


# B. Declared sizes and inflation -------------------------------------------------------------------


def test_a_gzip_idx_declaring_8_gib_is_refused_before_inflating_naming_the_limit(tmp_path):
    """B: a gzip IDX whose header declares 8 GiB (its body 1 MB of zeros) is refused from the header,
    naming the limit and the environment variable that raises it."""
    root = write_idx(tmp_path / "m", gz=True)
    count = 8 * GIB // 784
    gzip_of_zeros(root / "train-images-idx3-ubyte.gz", bytes([0, 0, 8, 3]) + struct.pack(">3I", count, 28, 28),
                  1 << 20)
    with pytest.raises(DataError, match=rf"train-images-idx3-ubyte.gz: the header's shape \({count}, 28, 28\) "
                                        rf"takes {count * 784:,} bytes .* over zoo's limit .*{BYTES_ENV}="):
        data.load(data_config({"name": "idx", "path": str(root)}))


def test_a_gzip_idx_inflating_past_its_header_is_read_no_further_than_the_header_says(tmp_path):
    """B: a gzip IDX whose header declares 10 images of 8x8 but whose body inflates to 16 MB is refused
    after reading one byte past the declared 640: the bomb is never inflated."""
    path = gzip_of_zeros(tmp_path / "x.gz", bytes([0, 0, 8, 3]) + struct.pack(">3I", 10, 8, 8), 16 << 20)
    assert path.stat().st_size < 100_000
    with pytest.raises(DataError, match=r"header says shape \(10, 8, 8\) \(640 bytes of values\) but the file "
                                        r"holds more than 640"):
        idx.read(path)
    assert peak_bytes(lambda: idx.read(path)) < 4 << 20


@pytest.mark.parametrize("dims", [(65536,) * 4, (1 << 31, 1 << 31, 2)], ids=["wraps_to_0", "wraps_negative"])
def test_idx_dimensions_whose_product_overflows_int64_are_refused_with_their_true_size(tmp_path, dims):
    """B: IDX dims of 65536**4 (int64 product 0: a reshape traceback) or 2**31 * 2**31 * 2 (a negative
    byte count in the message) are sized in Python integers and refused against the limit."""
    path = tmp_path / "x"
    path.write_bytes(bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims))
    with pytest.raises(DataError, match=rf"shape \({', '.join(map(str, dims))}\) takes {np.prod(dims, dtype=object):,} "
                                        r"bytes"):
        idx.read(path)


def test_an_npy_file_declaring_a_terabyte_is_refused_naming_what_its_header_declares(tmp_path):
    """B: an .npy of a 128-byte header declaring (10**12, 8) float32 is refused from its header: the
    message gives the declared shape and bytes against what the file holds."""
    folder = tmp_path / "arrays"
    folder.mkdir()
    for key, array in npz_arrays().items():
        np.save(folder / f"{key}.npy", array)
    (folder / "x_train.npy").write_bytes(npy_header((10**12, 8)))
    with pytest.raises(DataError, match=r"x_train.npy: its header declares shape \(1000000000000, 8\) of float32 "
                                        r"\(32,000,000,000,000 bytes\) but only 0 bytes follow"):
        data.load(data_config({"name": "npz", "path": str(folder)}))


def test_a_compressed_npz_member_declaring_a_terabyte_is_refused_before_allocating(tmp_path):
    """B: a deflated .npz member whose .npy header declares (10**12, 8) is refused from that header,
    naming the limit (it was a 29 TiB allocation and an _ArrayMemoryError traceback)."""
    path = tmp_path / "a.npz"
    np.savez_compressed(path, **{k: v for k, v in npz_arrays().items() if k != "x_train"})
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x_train.npy", npy_header((10**12, 8)) + bytes(1000))
    with pytest.raises(DataError, match=rf"member 'x_train.npy' \(shape \(1000000000000, 8\) of float32, as its "
                                        rf".npy header says\) takes 32,000,000,000,000 bytes .*{BYTES_ENV}"):
        data.load(data_config({"name": "npz", "path": str(path)}))


def test_a_zip_bomb_member_is_refused_from_its_declared_size_without_inflating_it(tmp_path, monkeypatch):
    """B: an .npz member of 32 MB of zeros (32 KB on disk) over a 1 MB limit is refused from the size
    its zip header declares, before any of it is inflated."""
    path = tmp_path / "a.npz"
    np.savez_compressed(path, **npz_arrays(), x_extra=np.zeros((32 << 20) // 4, np.float32))
    assert path.stat().st_size < 300_000
    monkeypatch.setenv(BYTES_ENV, str(1 << 20))
    with pytest.raises(DataError, match=r"member 'x_extra.npy' \(inflated, as its zip header says\) takes "):
        data.load(data_config({"name": "npz", "path": str(path)}))
    assert peak_bytes(lambda: data.load(data_config({"name": "npz", "path": str(path)}))) < 8 << 20


def test_a_12000_by_12000_png_is_refused_from_its_header_naming_the_pixel_limit(tmp_path):
    """B: a PNG of one colour, 12000 x 12000 (144 M pixels, ~18 KB on disk), is refused when the folder
    is opened, before any decoding, naming zoo's pixel limit and how to raise it."""
    root = write_png_folder(tmp_path / "p", n_train=20, n_test=10)
    huge = png_of_one_colour(root / "train" / "class_0" / "huge.png", 12000, 12000)
    with pytest.raises(DataError, match=rf"image {huge} is 12000x12000 = 144,000,000 pixels, over zoo's limit "
                                        rf"of 67,108,864 per image: .*{PIXELS_ENV}=144000000"):
        data.load(data_config({"name": "image_folder", "path": str(root), "image_size": [8, 8]}))


def test_a_20000_by_20000_png_is_refused_as_too_many_pixels_not_as_a_damaged_file(tmp_path, refused_train):
    """B: a 20000 x 20000 PNG (beyond Pillow's own decompression-bomb cap) is refused in one line that
    says it has too many pixels, not that it is truncated."""
    root = write_png_folder(tmp_path / "p", n_train=20, n_test=10)
    png_of_one_colour(root / "train" / "class_0" / "huge.png", 20000, 20000)
    err = refused_train({"data": {"name": "image_folder", "path": str(root), "image_size": [8, 8]}},
                  "huge.png is over zoo's limit of 67,108,864 pixels per image", "(400000000 pixels)",
                  "shrink the image")
    assert "truncated" not in err


def test_an_image_size_beyond_the_pixel_limit_is_refused_before_any_image_is_read(tmp_path):
    """B: data.image_size [100000, 100000] would make every decoded image 10**10 pixels: refused."""
    root = write_png_folder(tmp_path / "p", n_train=20, n_test=10)
    with pytest.raises(DataError, match=r"data.image_size is 100000x100000 = 10,000,000,000 pixels, over"):
        data.load(data_config({"name": "image_folder", "path": str(root), "image_size": [100000, 100000]}))


def test_cifar_files_larger_than_the_limit_are_refused_before_reading(tmp_path, monkeypatch):
    """B: the CIFAR records are read into memory: files over the byte limit are refused from their size."""
    root = write_cifar10(tmp_path / "c")
    monkeypatch.setenv(BYTES_ENV, "100000")
    with pytest.raises(DataError, match=rf"the 3 .bin files of {root} takes {280 * 3073:,} bytes in memory, over zoo's "
                                        r"limit of 100,000"):
        data.load(data_config({"name": "cifar10", "path": str(root)}))


def test_a_csv_larger_than_the_limit_is_refused_before_parsing(tmp_path, monkeypatch):
    """B: a CSV file over the byte limit is refused from its size, naming the variable to raise."""
    path = write_csv(tmp_path / "a.csv")
    monkeypatch.setenv(BYTES_ENV, "1000")
    with pytest.raises(DataError, match=rf"CSV file {path} takes .* over zoo's limit of 1,000 .*"
                                        rf"{BYTES_ENV}="):
        data.load(data_config({"name": "csv", "path": str(path), "label": "species", "test": 0.2}))


def test_a_limit_set_to_something_other_than_a_number_is_refused_naming_the_variable(tmp_path, monkeypatch):
    """B: ZOO_MAX_DATA_BYTES=lots is refused in one line saying what it must be."""
    monkeypatch.setenv(BYTES_ENV, "lots")
    with pytest.raises(DataError, match=rf"{BYTES_ENV}='lots' must be a whole number of bytes"):
        data.load(data_config({"name": "npz", "path": str(write_npz(tmp_path / "a.npz", compressed=True))}))


# C. Out-of-range config values and hyperparameters: refused before training ---------------------------


def test_model_num_classes_in_a_config_is_refused_saying_the_data_gives_it(refused_train):
    """C: model.num_classes=0 (a TypeError traceback) is refused: the class count comes from the data."""
    refused_train({"model": {"num_classes": 0}}, "model.num_classes is not a hyperparameter", "comes from the data")


def test_a_negative_hidden_size_is_refused_as_a_model_error(refused_train):
    """C: model.hidden_sizes [-5] (a TypeError traceback from the Dense layer) is refused naming it."""
    refused_train({"model": {"hidden_sizes": [-5]}}, "model 'mlp': model.hidden_sizes [-5] must be positive")


def test_a_dropout_rate_outside_0_to_1_is_refused_as_a_model_error(refused_train):
    """C: model.dropout 1.5 is refused: a rate is a fraction in [0, 1)."""
    refused_train({"model": {"dropout": 1.5}}, "model.dropout 1.5 must be in [0, 1)")


def test_a_seed_beyond_32_bits_is_refused(refused_train):
    """C: seed 2**70 (an OverflowError traceback from the PRNG key) is out of range."""
    refused_train({"seed": 2**70}, f"seed: {2**70} is out of range; it must be an integer from 0 to 4294967295")


def test_an_eval_batch_size_of_a_billion_is_refused_before_training(refused_train):
    """C: data.eval_batch_size 10**9 (a 238 GiB padded batch: MemoryError after training) is refused."""
    refused_train({"data": {"eval_batch_size": 10**9}}, "data.eval_batch_size: 1000000000 is out of range",
            "from 1 to 1048576")


def test_an_eval_batch_over_the_memory_limit_for_its_inputs_is_refused(refused_train, monkeypatch):
    """C: within the config's bound, an evaluation batch whose inputs exceed the byte limit is refused
    from the data's shape, before training, saying to lower it."""
    monkeypatch.setenv(BYTES_ENV, str(1 << 20))
    refused_train({"data": {"eval_batch_size": 8192}}, "data.eval_batch_size 8192: a batch of inputs of shape (8, 8, 1) "
            "takes 2,097,152 bytes", "lower data.eval_batch_size")


def test_a_crop_padding_as_large_as_the_inputs_is_refused(refused_train):
    """C: data.shift 2**40 (a ValueError traceback padding the first batch), now data.augment.crop_pad
    (issue 25), is refused from the inputs' size."""
    refused_train({"data": {"augment": {"crop_pad": 2**40}}},
                  f"data.augment.crop_pad {2**40} is not smaller than the inputs' size (8, 8)", "use at most 7")


def test_a_label_of_2_to_the_40_makes_one_more_class_not_a_petabyte_head(tmp_path):
    """C: a label 2**40 among 0..3 sized a head of 2**40 + 1 classes (a 70 TB allocation); labels that are
    not 0..K-1 are remapped, so it is a fifth class named by its value."""
    arrays = npz_arrays()
    arrays["y_train"][0] = 2**40
    path = write_npz(tmp_path / "a.npz", y_train=arrays["y_train"])
    spec = data.load(data_config({"name": "npz", "path": str(path)})).spec
    assert (spec.num_classes, spec.class_names) == (5, ("0", "1", "2", "3", str(2**40)))


def test_an_empty_test_split_is_refused_before_training(tmp_path, refused_train):
    """C: an npz whose x_test has no rows (StopIteration after training) is refused before any step."""
    arrays = npz_arrays()
    path = write_npz(tmp_path / "a.npz", x_test=arrays["x_test"][:0], y_test=arrays["y_test"][:0])
    refused_train({"data": {"name": "npz", "path": str(path)}}, "has an empty test split", "give test examples")


def test_a_csv_of_100000_columns_gives_an_error_line_listing_only_the_first_few(tmp_path, refused_train):
    """C: the missing-label message of a CSV with 100,000 columns lists the first ten and how many more
    (with 10M columns the line was 98 MB)."""
    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"c{i}" for i in range(100_000)) + "\n" + ",".join(["1"] * 100_000) + "\n")
    err = refused_train({"data": {"name": "csv", "path": str(path), "label": "kind", "test": 0.2}},
                  "its columns are c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, ... and 99,990 more")
    assert len(err) < 400


def test_every_error_line_is_one_line_of_bounded_length():
    """C: any ZooError's message is one line of about 2000 characters at most, its end (the fix) kept."""
    message = str(ZooError("a\nb " + "x" * 10**6 + " do this"))
    assert len(message) <= 2100 and "\n" not in message
    assert message.startswith("a b xxx") and message.endswith("x do this")


def test_every_range_rule_is_field_metadata_of_the_schema():
    """C: one range mechanism: every rule lives on its schema field (metadata "range"), none in a table."""
    assert not hasattr(config_lib, "_RANGES")
    rule = {f.name: f for f in config_lib.dataclasses.fields(config_lib.DataConfig)}["batch_size"].metadata["range"]
    assert rule[1] == "at least 1" and rule[0](1) and not rule[0](0)


# The rules of the former _RANGES table, each with a value it refuses.
FORMER_RULES = [
    ("name", "../x"), ("seed", -1), ("data.batch_size", 0), ("data.eval_batch_size", 0), ("data.augment.crop_pad", -1),
    ("data.validation", 1.0), ("data.seed", -1), ("data.test", 0.0), ("data.image_size", [8]),
    ("data.channels", 2), ("data.vocab_size", 1), ("data.workers", -1), ("optimizer.learning_rate", 0.0),
    ("optimizer.momentum", 1.0), ("optimizer.weight_decay", -0.1), ("optimizer.warmup_steps", -1),
    ("optimizer.decay_boundaries", [1.5]), ("optimizer.decay_factor", 0.0), ("optimizer.clip_norm", 0.0),
    ("train.steps", 0), ("train.eval_every", -1), ("train.log_every", 0), ("train.label_smoothing", 1.0),
    ("train.steps_per_call", 0), ("train.accumulate", 0), ("train.xla_options", {"x": 1.5}),
    ("train.early_stopping.patience", -1), ("train.early_stopping.min_delta", -1.0), ("data.classes", [3]),
    ("init_from.step", "first"), ("checkpoint.every", 0), ("checkpoint.keep", 0), ("checkpoint.keep_best", -1),
]


@pytest.mark.parametrize("key, value", FORMER_RULES, ids=[key for key, _ in FORMER_RULES])
def test_every_former_range_rule_still_refuses_its_values(key, value):
    """C: merging the two range mechanisms kept every rule of the former table."""
    raw = {"train": {"steps": 1}}
    node = raw
    *sections, last = key.split(".")
    for section in sections:
        node = node.setdefault(section, {})
    node[last] = value
    with pytest.raises(config_lib.ConfigError, match=rf"^{key}: .* is out of range; it must be "):
        from_dict(raw)


def test_build_section_is_public_and_the_private_name_is_gone():
    """C: the schema builder other schemas use is `build_section(cls, raw, path)`; `_build` is no more."""
    assert not hasattr(config_lib, "_build")
    section = config_lib.build_section(config_lib.CheckpointConfig, {"keep": 3}, "checkpoint")
    assert section == config_lib.CheckpointConfig(keep=3)


# D. Nothing of a file that is not a config is shown -------------------------------------------------


def test_a_base_that_is_not_a_config_is_refused_without_showing_its_content(tmp_path, refused_train):
    """D: `base: <a shadow-like file>` (YAML reads its first line as a key) printed that line as an
    unknown key; now the file is refused as not a config, quoting none of it."""
    secret = "root:$6$Zx8Qk1c9$hashedsecret:19837:0:99999:7:::"
    (tmp_path / "shadow").write_text(f"{secret}\ndaemon:*:19837:0:99999:7:::\n")
    err = refused_train(None, "shadow is not a config", "check the path", text=f"base: {tmp_path / 'shadow'}\n")
    assert "hashedsecret" not in err and "root:" not in err
