"""Behaviour the mutation run (scripts/mutation.py, benchmarks/MUTATION.md) found unpinned: each test
here kills at least one mutant that survived the rest of the suite (named in its docstring). Kept
fast: every test runs in well under a second, so that `make test-fast` and the retest of the
survivors include them."""

from __future__ import annotations

import json
import mmap

import jax
import numpy as np
import optax
import pytest

from zoo import data, models, report
from zoo.config import OptimizerConfig
from zoo.data import arrays, cifar, source, split as split_lib
from zoo.errors import ConfigError, DataError
from zoo.training import optim, state as state_lib, step as step_lib

NUM_CLASSES = 10


def small_run(model_name: str = "mlp", **hparams):
    """(model, tx, mesh, replicated state, x, y) for a 12-feature batch of 8."""
    model = models.build(model_name, NUM_CLASSES, **({"hidden_sizes": (8,)} | hparams))
    tx = optim.make_optimizer(OptimizerConfig(name="adam", learning_rate=1e-3, schedule="constant"), 10)
    mesh = step_lib.make_mesh()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 12)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, size=8).astype(np.int32)
    state = jax.jit(lambda x: state_lib.create(model, tx, 0, x), out_shardings=step_lib.replicated(mesh))(x[:1])
    return model, tx, mesh, state, x, y


# zoo/training/step.py ------------------------------------------------------------------------------


def test_the_jitted_train_step_donates_the_state_it_was_given():
    """zoo.training.step.x_jit_train_step__mutmut_33 (donate_argnums dropped: two copies of the state
    and optimizer moments live at once)."""
    model, tx, mesh, state, x, y = small_run()
    step = step_lib.jit_train_step(model, tx, NUM_CLASSES, 0.0, mesh)
    new_state, _ = step(state, step_lib.put_batch(mesh, x), step_lib.put_batch(mesh, y))
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(state))
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(new_state))


@pytest.mark.parametrize("leading_axes", [0, 1])
def test_with_two_processes_put_batch_hands_jax_this_processs_rows_of_the_global_batch(monkeypatch, leading_axes):
    """zoo.training.step.x_put_batch__mutmut_20, _23 and _24 (the rows were taken from the flattened batch,
    or from its start): process 1 of 2 gives the second half of the batch axis, K steps stacked or not."""
    given = {}
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    monkeypatch.setattr(jax, "make_array_from_process_local_data",
                        lambda sharding, local, shape: given.update(local=local, shape=shape))
    batch = np.arange(3 * 8 * 2).reshape(3, 8, 2) if leading_axes else np.arange(8 * 2).reshape(8, 2)
    step_lib.put_batch(step_lib.make_mesh(), batch, leading_axes)
    want = batch[:, 4:] if leading_axes else batch[4:]
    np.testing.assert_array_equal(given["local"], want)
    assert given["shape"] == batch.shape


def test_a_train_step_carries_the_batchnorm_running_statistics_forward():
    """zoo.training.step.x_train_step_fn__mutmut_106 (the step dropped the updated model state: BatchNorm's
    running mean and variance stayed at their initial 0 and 1, so eval used the wrong statistics)."""
    model, tx, mesh, state, x, y = small_run("mlp", norm="batch")
    step = jax.jit(step_lib.train_step_fn(model, tx, NUM_CLASSES))
    new_state, _ = step(state, x * 3.0 + 1.0, y)
    _, expected = model.apply({"params": state.params, **state.model_state}, x * 3.0 + 1.0, train=True,
                              rng=jax.random.key(0))
    for got, want in zip(jax.tree.leaves(new_state.model_state), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not np.allclose(jax.tree.leaves(new_state.model_state)[0], jax.tree.leaves(state.model_state)[0])


def test_the_family_of_a_built_model_picks_its_xla_options():
    """zoo.training.step.x_family_of__mutmut_12 (no model had a family: CNNs and ResNets lost their options)."""
    assert [step_lib.family_of(models.build(name, NUM_CLASSES)) for name in ("mlp", "cnn", "resnet20", "lstm")] == [
        "dnn", "cnn", "resnet", "rnn"]
    assert step_lib.family_of(object()) is None


def test_a_new_train_state_counts_steps_in_int32_from_zero():
    """zoo.training.state.x_create__mutmut_24 (a float32 step count: exact only up to 2**24 steps)."""
    _, _, _, state, _, _ = small_run()
    assert state.step.dtype == np.int32 and int(state.step) == 0


# zoo/training/optim.py -----------------------------------------------------------------------------


def test_clip_norm_scales_the_gradient_to_that_global_norm_before_the_update_rule():
    """zoo.training.optim.x_make_optimizer__mutmut_45 (the chain lost its update rule)."""
    tx = optim.make_optimizer(OptimizerConfig(name="sgd", learning_rate=0.5, momentum=0.0, schedule="constant",
                                              clip_norm=1.0), 10)
    params = {"a": np.zeros(3, np.float32), "b": np.zeros(4, np.float32)}
    grads = {"a": np.full(3, 3.0, np.float32), "b": np.full(4, 4.0, np.float32)}  # global norm 10
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["a"], -0.5 * grads["a"] / np.sqrt(3 * 9 + 4 * 16), rtol=1e-6)
    np.testing.assert_allclose(updates["b"], -0.5 * grads["b"] / np.sqrt(3 * 9 + 4 * 16), rtol=1e-6)


def test_a_parameter_path_names_list_positions_by_their_index():
    """zoo.training.optim.x_param_path__mutmut_18 (a list position printed as '[0]', so 'layers/0/*'
    patterns matched nothing)."""
    paths = [optim.param_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(
        {"layers": [{"kernel": 1}, {"kernel": 2}], "head": (3,)})]
    assert paths == ["head/0", "layers/0/kernel", "layers/1/kernel"]


def test_a_frozen_pattern_keeps_its_parameters_and_trains_the_rest():
    """zoo.training.optim.x_with_frozen__mutmut_14 (the labels ignored the patterns)."""
    params = {"Dense_0": {"kernel": np.ones((2, 2), np.float32)}, "Dense_1": {"kernel": np.ones((2, 2), np.float32)}}
    grads = jax.tree.map(np.ones_like, params)
    tx = optim.with_frozen(optax.sgd(0.1), ["Dense_0"])
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(updates["Dense_0"]["kernel"], 0.0)
    np.testing.assert_allclose(updates["Dense_1"]["kernel"], -0.1)


def test_a_pattern_that_matches_no_parameter_is_refused_naming_the_models_modules():
    """zoo.training.optim.x_check_patterns__mutmut_6 (every pattern was checked against nothing)."""
    params = {"Dense_0": {"kernel": 0}, "Conv_0": {"bias": 0}}
    optim.check_patterns(params, ["Dense_0", "Conv_*/bias"], "train.freeze")
    with pytest.raises(ConfigError, match=r"train.freeze: pattern 'Dense_9' matches no parameter .* Conv_0, Dense_0"):
        optim.check_patterns(params, ["Dense_9"], "train.freeze")



@pytest.mark.slow
def test_init_from_a_batchnorm_run_starts_from_its_running_statistics(tmp_path, tiny_config):
    """zoo.training.restore.x_init_from__mutmut_27 and _66 (the model state, BatchNorm's running mean and
    variance, was not taken from the source run)."""
    from zoo.training import build_run, fit
    from zoo.training.restore import init_from, restore

    model = {"model": {"name": "mlp", "hidden_sizes": [16], "norm": "batch"}}
    fit(tiny_config(model | {"train": {"steps": 10}, "checkpoint": {"every": 10}}), tmp_path / "source")
    config = tiny_config(model | {"init_from": {"run": str(tmp_path / "source")}})
    run = build_run(config)
    started = init_from(run, config.init_from)(run.init_state())
    source = restore(tmp_path / "source").state
    for got, want in zip(jax.tree.leaves(started.model_state), jax.tree.leaves(source.model_state), strict=True):
        np.testing.assert_array_equal(got, want)
    assert not np.allclose(jax.tree.leaves(source.model_state)[0], 0.0)  # the statistics did move


# zoo/report.py -------------------------------------------------------------------------------------


def test_the_learning_curves_read_train_loss_and_val_and_test_accuracy_by_step(tmp_path):
    """zoo.report.x__curves__mutmut_53 (the train-loss curve kept only records without a loss: empty)."""
    records = [{"split": "train", "step": 5, "loss": 2.0}, {"split": "train", "step": 10, "loss": 1.5},
               {"split": "train", "step": 10, "learning_rate": 0.1},
               {"split": "val", "step": 10, "accuracy": 0.7, "loss": 0.9}, {"split": "test", "step": 10, "accuracy": 0.6}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert report._curves(tmp_path) == ({10: 0.7}, {10: 0.6}, {5: 2.0, 10: 1.5})


def test_a_flops_budget_line_says_how_the_steps_follow_from_each_models_flops():
    """zoo.report.x__budget_line__mutmut_41 (the explanation of the steps was garbled)."""
    models_ = [{"label": "MLP", "steps": 1000, "flops_per_step": 2e6}, {"label": "CNN", "steps": 40, "flops_per_step": 5e7}]
    line = report._budget_line(models_, {"budget_kind": "flops", "budget": "2e9 FLOPs"})
    assert line.startswith("Budget: 2e9 FLOPs per run, the same for every model; steps = FLOPs / XLA's count for "
                           "one compiled train step: MLP 1,000 steps (") and "CNN 40 steps (" in line



def test_numbers_in_reports_read_with_si_prefixes_and_missing_ones_as_a_dash():
    """zoo.report.x__si__mutmut_6 (a missing number printed as 'XX-XX')."""
    assert [report._si(v) for v in (None, float("nan"), 0.5, 2500, 3.2e6, 4e9, 1.5e12)] == [
        "-", "-", "0.5", "2.5 k", "3.2 M", "4 G", "1.5 T"]


def test_the_summary_of_a_sweep_choice_keeps_its_setting():
    """zoo.report.x_summarize__mutmut_80 (the chosen setting of a tuned model was dropped from its row)."""
    base = {key: 1.0 for key in report.COLUMNS} | {"config": "a", "model": "mlp", "family": "dnn",
                                                   "setting": "lr=0.01"}
    (row,) = report.summarize([base | {"seed": 0}, base | {"seed": 1}])
    assert row["setting"] == "lr=0.01"



def test_the_sweep_section_lists_each_setting_with_its_mean_validation_scores_and_marks_the_choice():
    """zoo.report.x__sweep_section__mutmut_83 (the table's separator row was garbled: no markdown table)."""
    sweep = {"dataset": "digits", "config": "cnn", "label": "CNN", "settings": 2, "metric": "val_accuracy",
             "grid": {"optimizer.learning_rate": [0.01, 0.1]}, "tuning_seeds": [0],
             "chosen": {"optimizer.learning_rate": 0.1}}
    trial = {"dataset": "digits", "config": "cnn"}
    trials = [trial | {"tag": "a", "setting": {"optimizer.learning_rate": 0.01}, "chosen": False,
                       "val_accuracy": 0.5, "val_loss": 1.5},
              trial | {"tag": "b", "setting": {"optimizer.learning_rate": 0.1}, "chosen": True,
                       "val_accuracy": 0.9, "val_loss": 0.3},
              trial | {"tag": "b", "setting": {"optimizer.learning_rate": 0.1}, "chosen": True,
                       "val_accuracy": 0.8, "val_loss": 0.5}]
    lines = report._sweep_section([sweep], trials, "digits")
    table = lines[lines.index("| model | setting | val accuracy | val loss | chosen |"):]
    assert table[:4] == ["| model | setting | val accuracy | val loss | chosen |", "|---|---|---:|---:|:---:|",
                         "| CNN | learning_rate=0.01 | 0.5000 | 1.5000 |  |",
                         "| CNN | **learning_rate=0.1** | 0.8500 | 0.4000 | ← |"]
    assert "- **CNN**: 2 settings of optimizer.learning_rate [0.01, 0.1]; tuned on seed(s) 0 by val_accuracy; " \
           "chose learning_rate=0.1." in lines


# zoo/data ------------------------------------------------------------------------------------------


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
                                        r"zoo\.evaluate_run\(run_dir, dataset=\.\.\.\)"):
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


# zoo/training/loop.py ------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_checkpoint_records_the_model_its_family_size_devices_and_platform(tmp_path, tiny_config):
    """zoo.training.loop.x__train__mutmut_166 (the meta's "family" key was misspelt)."""
    from zoo import checkpoint as ckpt
    from zoo.training import loop

    config = tiny_config({"train": {"steps": 10}, "checkpoint": {"every": 10, "keep": 1}})
    loop.fit(config, tmp_path / "run")
    meta = ckpt.Checkpoints(tmp_path / "run" / "checkpoints", read_only=True).read_meta(10)
    assert {key: meta[key] for key in ("model", "family", "devices", "platform")} == {
        "model": "mlp", "family": "dnn", "devices": jax.device_count(), "platform": "cpu"}
    assert meta["param_count"] == models.count_params(meta_params(config))


def meta_params(config):
    model = models.build(config.model.name, NUM_CLASSES, **config.model.hparams)
    return model.init(jax.random.key(0), np.zeros((1, 8, 8, 1), np.float32))["params"]


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


# zoo/checkpoint.py ---------------------------------------------------------------------------------


def test_opening_checkpoints_for_writing_removes_what_a_killed_save_left_and_nothing_else(tmp_path):
    """zoo.checkpoint.xǁCheckpointsǁ_clean_stale__mutmut_6 (the leftovers were kept)."""
    from zoo import checkpoint as ckpt

    root = tmp_path / "checkpoints"
    for name in ("20.orbax-checkpoint-tmp-1764", ckpt.TRASH, "10"):
        (root / name).mkdir(parents=True)
        (root / name / "file").write_text("x")
    ckpt.Checkpoints(root)
    assert sorted(p.name for p in root.iterdir()) == ["10"]


# zoo/models ----------------------------------------------------------------------------------------


def test_an_mlp_with_layer_norm_normalises_each_hidden_layer():
    """zoo.models.mlp.xǁMLPǁ_normalize__mutmut_2 (norm: layer silently built no LayerNorm)."""
    model = models.build("mlp", NUM_CLASSES, hidden_sizes=(8, 8), norm="layer")
    params = model.init(jax.random.key(0), np.zeros((1, 12), np.float32))["params"]
    assert sorted(name for name in params if name.startswith("LayerNorm")) == ["LayerNorm_0", "LayerNorm_1"]


def test_stock_flax_pooling_on_a_signal_leaves_the_unit_axis_unpooled():
    """zoo.models.cnn.x__flax_pool__mutmut_8 (a window of 2 over a size-1 axis: avg-pool halves the values)."""
    import flax.linen as nn

    from zoo.models import cnn

    x = jax.random.normal(jax.random.key(0), (2, 8, 1, 3))
    np.testing.assert_allclose(cnn._flax_pool(nn.avg_pool, x), x.reshape(2, 4, 2, 1, 3).mean(2), rtol=1e-6)
    np.testing.assert_allclose(cnn._flax_pool(nn.max_pool, x), x.reshape(2, 4, 2, 1, 3).max(2), rtol=1e-6)


@pytest.mark.parametrize("lhs, rhs", [((2, 2), (1, 1)), ((1, 1), (2, 2)), (None, (2, 1))])
def test_a_dilated_convolution_bypasses_the_fast_path_and_equals_lax(lhs, rhs):
    """zoo.models.layers.x_conv_general_dilated__mutmut_12 (an input-dilated convolution took the fast path,
    which has no dilation, and came out wrong)."""
    from zoo.models import layers

    x = jax.random.normal(jax.random.key(0), (2, 7, 7, 3))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
    numbers = ("NHWC", "HWIO", "NHWC")
    pads = ((1, 1), (1, 1))
    want = jax.lax.conv_general_dilated(x, kernel, (1, 1), pads, lhs, rhs, numbers)
    got = layers.conv_general_dilated(x, kernel, (1, 1), pads, lhs, rhs,
                                      jax.lax.conv_dimension_numbers(x.shape, kernel.shape, numbers))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_token_models_embedding_is_named_embed():
    """zoo.models.common.x_embed_tokens__mutmut_10 (the table was auto-named Embed_0: imported and saved
    weights look it up as 'embed')."""
    model = models.build("transformer", NUM_CLASSES, vocab_size=50)
    params = model.init(jax.random.key(0), np.zeros((1, 6), np.int32))["params"]
    assert params["embed"]["embedding"].shape[0] == 50 and "Embed_0" not in params


def test_token_ids_without_a_vocabulary_size_are_refused_saying_where_it_comes_from():
    """zoo.models.common.x_embed_tokens__mutmut_5 (the advice of the message was garbled)."""
    from zoo.errors import ModelError

    model = models.build("transformer", NUM_CLASSES)
    with pytest.raises(ModelError, match=r"got token ids .* but no vocab_size; pass vocab_size to build\(\) "
                                         r"\(the dataset spec holds it\)"):
        model.init(jax.random.key(0), np.zeros((1, 6), np.int32))


def test_image_patches_do_not_overlap_and_a_remainder_is_left_out():
    """zoo.models.transformer.xǁTransformerǁ_tokens__mutmut_40 ('SAME' padding made a 9x9 image 5x5 patches)."""
    model = models.build("transformer", NUM_CLASSES, patch_size=2)
    params = model.init(jax.random.key(0), np.zeros((1, 9, 9, 1), np.float32))["params"]
    assert params["pos_embedding"].shape[1] in (16, 17)  # 4x4 patches (+ a class token)
    same = models.build("transformer", NUM_CLASSES, patch_size=2).init(
        jax.random.key(0), np.zeros((1, 8, 8, 1), np.float32))["params"]["pos_embedding"].shape
    assert params["pos_embedding"].shape == same


def test_batchnorm_running_statistics_move_a_tenth_of_the_way_to_the_batch_statistics_each_step():
    """zoo.models.mlp.xǁMLPǁ_normalize__mutmut_17 (momentum 1.9: the running statistics ran away)."""
    model = models.build("mlp", NUM_CLASSES, hidden_sizes=(4,), norm="batch")
    x = np.random.default_rng(0).normal(size=(16, 12)).astype(np.float32)
    variables = model.init(jax.random.key(0), x)
    _, state = model.apply(variables, x, train=True, rng=jax.random.key(1))
    hidden = x @ np.asarray(variables["params"]["Dense_0"]["kernel"]) + np.asarray(variables["params"]["Dense_0"]["bias"])
    stats = state["batch_stats"]["BatchNorm_0"]
    np.testing.assert_allclose(stats["mean"], 0.1 * hidden.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * hidden.var(0), rtol=1e-4)


def layer_outputs(module, x):
    """{layer path: output dtype} of a linen module's forward pass (train=False)."""
    variables = module.init(jax.random.key(0), x)
    _, state = module.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    return {"/".join(str(getattr(k, "key", k)) for k in path[:-2]): leaf.dtype
            for path, leaf in jax.tree_util.tree_leaves_with_path(state["intermediates"])}


def test_in_bfloat16_batchnorm_and_the_token_embedding_compute_in_bfloat16():
    """zoo.models.mlp.xǁMLPǁ_normalize__mutmut_12 and zoo.models.transformer.xǁTransformerǁ_tokens__mutmut_17
    (BatchNorm / the embedding fell back to float32 outputs in a bfloat16 model)."""
    import jax.numpy as jnp

    from zoo.models.mlp import MLP
    from zoo.models.transformer import Transformer

    mlp = layer_outputs(MLP(NUM_CLASSES, hidden_sizes=(8,), norm="batch", precision="bfloat16"), np.ones((2, 12)))
    assert mlp["BatchNorm_0"] == jnp.bfloat16
    vit = layer_outputs(Transformer(NUM_CLASSES, vocab_size=20, precision="bfloat16"), np.ones((2, 6), np.int32))
    assert vit["embed"] == jnp.bfloat16


@pytest.mark.slow
def test_restoring_a_run_at_a_step_gives_that_steps_state(tmp_path, tiny_config):
    """zoo.training.restore.x_restore__mutmut_7 (the step asked for was ignored: always the latest)."""
    from zoo.training import fit
    from zoo.training.restore import restore

    fit(tiny_config({"train": {"steps": 20}, "checkpoint": {"every": 10, "keep": 2, "keep_best": 0}}), tmp_path)
    earlier, latest = restore(tmp_path, 10), restore(tmp_path)
    assert (earlier.step, int(earlier.state.step), latest.step, int(latest.state.step)) == (10, 10, 20, 20)
    assert not np.array_equal(jax.tree.leaves(earlier.state.params)[0], jax.tree.leaves(latest.state.params)[0])


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


@pytest.mark.slow
def test_the_imagenet_resnet_stem_halves_the_resolution_before_its_max_pool():
    """zoo.models.resnet.xǁResNetǁ_stem__mutmut_26 (the 7x7 stem conv lost its stride 2: four times the
    activations, and torchvision's weights no longer match)."""
    from zoo.models import registry

    entry = registry.get_entry("resnet18")
    module = entry.module_cls(**{**entry.defaults, "num_classes": NUM_CLASSES, "model_name": "resnet18"})
    x = np.zeros((1, 32, 32, 3), np.float32)
    variables = module.init(jax.random.key(0), x, train=False)
    _, state = module.apply(variables, x, train=False, capture_intermediates=True, mutable=["intermediates"])
    assert state["intermediates"]["BatchNorm_0"]["__call__"][0].shape == (1, 16, 16, 64)
