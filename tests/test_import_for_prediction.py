"""Issue 25, "smaller gaps": `zoo import` without --dataset makes a run for prediction alone, which
records the weights' own preprocessing (timm's ViTs: 0.5/0.5, "inception"; torchvision's ResNets:
ImageNet's mean/std) and predicts with it.

The weights file is written with NumPy in timm's ViT naming (no torch needed): one block 8 wide, 4x4
patches of 16x16 RGB images, a class token, 5 classes (a ViT imports in a third of a ResNet-18's time)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import CHEAP_COMPILE

WIDTH, PATCH, SIDE, MLP, CLASSES = 8, 4, 16, 16, 5
HEADS = ["--set", "model.num_heads=2"]  # timm's files do not say; zoo's transformer needs it


def _timm_vit(path, rng) -> None:
    """A timm-named ViT state dict of random float32 tensors, saved as safetensors."""
    from safetensors.numpy import save_file

    normal = lambda *shape: rng.normal(0, 0.3, shape)  # noqa: E731
    tensors = {"patch_embed.proj.weight": normal(WIDTH, 3, PATCH, PATCH), "patch_embed.proj.bias": normal(WIDTH),
               "pos_embed": normal(1, (SIDE // PATCH) ** 2 + 1, WIDTH), "cls_token": normal(1, 1, WIDTH),
               "norm.weight": 1 + normal(WIDTH), "norm.bias": normal(WIDTH), "head.weight": normal(CLASSES, WIDTH),
               "head.bias": normal(CLASSES)}
    for name, shape in {"norm1.weight": (WIDTH,), "norm1.bias": (WIDTH,), "attn.qkv.weight": (3 * WIDTH, WIDTH),
                        "attn.qkv.bias": (3 * WIDTH,), "attn.proj.weight": (WIDTH, WIDTH), "attn.proj.bias": (WIDTH,),
                        "norm2.weight": (WIDTH,), "norm2.bias": (WIDTH,), "mlp.fc1.weight": (MLP, WIDTH),
                        "mlp.fc1.bias": (MLP,), "mlp.fc2.weight": (WIDTH, MLP), "mlp.fc2.bias": (WIDTH,)}.items():
        tensors[f"blocks.0.{name}"] = normal(*shape) + (1 if name.startswith("norm") and "weight" in name else 0)
    save_file({k: np.asarray(v, np.float32) for k, v in tensors.items()}, str(path))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "vit.safetensors"
    _timm_vit(path, np.random.default_rng(0))
    return path


@pytest.mark.slow
def test_import_without_dataset_predicts_with_the_weights_own_preprocessing(weights, tmp_path, zoo_main):
    """A timm ViT: the run records timm's 0.5/0.5 normalisation and `zoo predict` on uint8 pixels gives
    the imported model's probabilities of (pixels / 255 - 0.5) / 0.5."""
    import jax

    from zoo import models
    from zoo.interop.importer import import_weights

    status, out, err = zoo_main("import", "transformer", weights, "--out", tmp_path / "run", *HEADS)
    assert status == 0, err
    assert f"shape ({SIDE}, {SIDE}, 3), preprocessing 'inception'" in out
    pixels = np.random.default_rng(1).integers(0, 256, (3, SIDE, SIDE, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", pixels)
    status, out, err = zoo_main("predict", tmp_path / "run", tmp_path / "images.npy", "--json")
    assert status == 0, err
    predicted = np.array([row["probabilities"] for row in json.loads(out)])
    imported = import_weights("transformer", weights, hparams={"num_heads": 2})
    model = models.build("transformer", CLASSES, **imported.hparams)
    logits, _ = jax.jit(model.apply, compiler_options=CHEAP_COMPILE)(imported.variables,
                                                                     (pixels / np.float32(255) - 0.5) / 0.5)
    np.testing.assert_allclose(predicted, jax.nn.softmax(logits), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_import_without_dataset_records_imagenet_statistics_when_asked(weights, tmp_path, zoo_main):
    """--preprocess imagenet (torchvision's ResNets' default): ImageNet's mean and std in the run's spec."""
    import zoo

    status, _, err = zoo_main("import", "transformer", weights, "--out", tmp_path / "run", *HEADS,
                              "--preprocess", "imagenet")
    assert status == 0, err
    normalization = zoo.load_run(tmp_path / "run").spec.normalization
    assert normalization["mean"] == [0.485, 0.456, 0.406] and normalization["std"] == [0.229, 0.224, 0.225]
    assert normalization["scale"] == pytest.approx(1 / 255)


def test_eval_of_a_run_imported_for_prediction_is_refused_in_one_line(weights, tmp_path, zoo_main, one_line_error):
    """Nothing to evaluate on: `zoo eval` says how to predict, or to import again with a dataset."""
    from zoo.interop.importer import import_run

    import_run("transformer", weights, tmp_path / "run", overrides=["model.num_heads=2"])
    status, out, err = zoo_main("eval", tmp_path / "run")
    assert status == 2 and out == ""
    one_line_error(err, "imported for prediction alone", "--dataset")
