"""Layer-level behaviour of the models: normalisation, pooling, dilated convolutions, token
embeddings, image patches, BatchNorm momentum, bfloat16 compute, the ImageNet stem.
Each test names the mutant it kills in its docstring (found by tools/mutation.py)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from zoo import models


NUM_CLASSES = 10


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
def test_the_imagenet_resnet_stem_halves_the_resolution_before_its_max_pool():
    """zoo.models.resnet.xǁResNetǁ_stem__mutmut_26 (the 7x7 stem conv lost its stride 2: four times the
    activations, and torchvision's weights no longer match)."""
    from zoo.models import registry

    entry = registry.get_entry("resnet18")
    module = entry.module_cls(**{**entry.defaults, "num_classes": NUM_CLASSES, "model_name": "resnet18"})
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32)  # shapes only: traced, not run
    variables = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), x)
    _, state = jax.eval_shape(lambda v, x: module.apply(v, x, train=False, capture_intermediates=True,
                                                         mutable=["intermediates"]), variables, x)
    assert state["intermediates"]["BatchNorm_0"]["__call__"][0].shape == (1, 16, 16, 64)


def test_a_resnet_conv_bn_in_bfloat16_hands_on_bfloat16_activations():
    """zoo.models.resnet.x_conv_bn__mutmut_40 (its BatchNorm fell back to float32 outputs in a bfloat16 model)."""
    import flax.linen as nn
    import jax.numpy as jnp

    from zoo.models import resnet

    class ConvBN(nn.Module):
        @nn.compact
        def __call__(self, x):
            return resnet.conv_bn(nn.Conv, nn.BatchNorm, x, 4, 3, train=False, dtype=jnp.bfloat16)

    module = ConvBN()
    x = np.ones((1, 6, 6, 2), np.float32)
    assert module.apply(module.init(jax.random.key(0), x), x).dtype == jnp.bfloat16


def test_token_ids_become_bfloat16_embeddings_in_a_bfloat16_model():
    """zoo.models.common.x_as_features__mutmut_12 (the embedding lost the model's dtype: float32 outputs)."""
    import flax.linen as nn
    import jax.numpy as jnp

    from zoo.models import common

    class Features(nn.Module):
        @nn.compact
        def __call__(self, x):
            return common.as_features(x, 20, 8, "toy", jnp.bfloat16)

    module = Features()
    x = np.ones((2, 6), np.int32)
    out = module.apply(module.init(jax.random.key(0), x), x)
    assert (out.shape, out.dtype) == ((2, 6, 8), jnp.bfloat16)


def test_float_batches_of_rank_3_are_signals_and_of_rank_4_images():
    """zoo.models.common.x_input_kind__mutmut_18 (a signal (B, L, C) was taken for an image)."""
    from zoo.models import common

    assert common.input_kind(np.zeros((2, 40, 1), np.float32), "toy") == "signal"
    assert common.input_kind(np.zeros((2, 8, 8, 1), np.float32), "toy") == "image"
    assert common.input_kind(np.zeros((2, 6), np.int32), "toy") == "tokens"
