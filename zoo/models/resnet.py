"""ResNet family: CIFAR-style resnet20..110 and ImageNet-style resnet18..152 (torchvision v1.5 layout).

Both are rank-generic: 1-D convs for signals (and embedded tokens), 2-D for images. A shortcut that
changes shape is, by default, a 1x1 conv + BatchNorm projection (option B of He et al. 2016), also in
the CIFAR nets; `shortcut: identity_pad` gives the paper's parameter-free option A of its CIFAR nets
(stride-2 subsampling, channels zero-padded): resnet20 has 272,474 parameters with projections and
269,722 with option A (the paper's "0.27M"), at 32x32x3 and 10 classes. Blocks take their conv and
BatchNorm as attributes (Flax's `examples/imagenet` pattern); `fast_layers` picks zoo's fast ones
(layers.Conv, layers.BatchNorm) or `nn.Conv` and `nn.BatchNorm`.
"""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax.numpy as jnp

from zoo.models import layers
from zoo.models.common import Entry, Precision, TestSettings, as_features, compute_dtype

FAMILY = "resnet"  # the family name every entry of this file carries

ModuleDef = Any

# torchvision's kaiming_normal_(mode="fan_out", nonlinearity="relu") for every conv.
CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv_bn(conv: ModuleDef, norm: ModuleDef, x, features: int, kernel: int, train: bool, strides: int = 1,
            zero_scale: bool = False, dtype=jnp.float32):
    """Bias-free conv ('same'-style symmetric padding, like torchvision) then BatchNorm, computing in
    `dtype` (BatchNorm's statistics stay float32)."""
    nd = x.ndim - 2
    pad = kernel // 2
    x = conv(
        features, (kernel,) * nd, (strides,) * nd, padding=((pad, pad),) * nd,
        use_bias=False, kernel_init=CONV_INIT, dtype=dtype,
    )(x)
    # Zero-init of a block's last BN scale makes each block start as the identity (Goyal et al. 2017).
    scale_init = nn.initializers.zeros if zero_scale else nn.initializers.ones
    return norm(use_running_average=not train, momentum=0.9, scale_init=scale_init, dtype=dtype)(x)


Shortcut = Literal["projection", "identity_pad"]  # option B / option A of He et al. 2016


def shortcut(conv: ModuleDef, norm: ModuleDef, x, features: int, strides: int, train: bool, dtype=jnp.float32,
             kind: Shortcut = "projection"):
    """Identity, or, when the block changes channels or resolution, a 1x1 conv + BN projection
    ("projection") or the parameter-free `identity_pad`."""
    if strides == 1 and x.shape[-1] == features:
        return x
    if kind == "identity_pad":
        return identity_pad(x, features, strides)
    return conv_bn(conv, norm, x, features, 1, train, strides, dtype=dtype)


def identity_pad(x, features: int, strides: int):
    """Option A: every `strides`-th position along each spatial axis, its channels zero-padded to
    `features`, half before and half after (as the common PyTorch reproduction, akamaster's, does)."""
    x = x[(slice(None), *[slice(None, None, strides)] * (x.ndim - 2), slice(None))]
    extra = features - x.shape[-1]
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(extra // 2, extra - extra // 2)])


class Block(nn.Module):
    """What both blocks take: width, stride of the first strided conv, the conv and BatchNorm layers
    to use and the compute dtype."""

    features: int
    strides: int = 1
    conv: ModuleDef = nn.Conv
    dtype: Any = jnp.float32
    norm: ModuleDef = nn.BatchNorm
    shortcut: Shortcut = "projection"


class BasicBlock(Block):
    """Two 3x3 convs; output channels = features."""

    @nn.compact
    def __call__(self, x, train: bool):
        dtype = self.dtype
        conv, norm = self.conv, self.norm
        y = nn.relu(conv_bn(conv, norm, x, self.features, 3, train, self.strides, dtype=dtype))
        y = conv_bn(conv, norm, y, self.features, 3, train, zero_scale=True, dtype=dtype)
        return nn.relu(y + shortcut(conv, norm, x, self.features, self.strides, train, dtype, self.shortcut))


class BottleneckBlock(Block):
    """1x1 reduce, 3x3 (carrying the stride, as in torchvision v1.5), 1x1 expand by 4."""

    @nn.compact
    def __call__(self, x, train: bool):
        out, dtype = self.features * 4, self.dtype
        conv, norm = self.conv, self.norm
        y = nn.relu(conv_bn(conv, norm, x, self.features, 1, train, dtype=dtype))
        y = nn.relu(conv_bn(conv, norm, y, self.features, 3, train, self.strides, dtype=dtype))
        y = conv_bn(conv, norm, y, out, 1, train, zero_scale=True, dtype=dtype)
        return nn.relu(y + shortcut(conv, norm, x, out, self.strides, train, dtype, self.shortcut))


def stages(x, stage_sizes, width: int, block_cls, conv: ModuleDef, norm: ModuleDef, train: bool,
           dtype=jnp.float32, shortcut_kind: Shortcut = "projection"):
    """Stage i has width * 2**i channels; every stage but the first halves the resolution."""
    for i, size in enumerate(stage_sizes):
        for j in range(size):
            strides = 2 if i > 0 and j == 0 else 1
            x = block_cls(width * 2**i, strides, conv, dtype, norm, shortcut_kind)(x, train)
    return x.mean(axis=tuple(range(1, x.ndim - 1)))  # global average pooling


class CifarResNet(nn.Module):
    """He et al. 2016, section 4.2: 3x3 stem, 3 stages of basic blocks at 16/32/64 channels."""

    num_classes: int
    vocab_size: int | None = None
    model_name: str = "resnet20"
    stage_sizes: tuple[int, ...] = (3, 3, 3)
    width: int = 16
    embed_dim: int = 64
    fast_layers: bool = True
    precision: Precision = "float32"
    # projection: 1x1 conv + BN where a block changes shape (option B); identity_pad: the paper's
    # parameter-free option A for its CIFAR nets (subsampling, zero-padded channels)
    shortcut: Shortcut = "projection"

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv, norm = (layers.Conv, layers.BatchNorm) if self.fast_layers else (nn.Conv, nn.BatchNorm)
        dtype = compute_dtype(self.precision)
        x = as_features(x, self.vocab_size, self.embed_dim, self.model_name, dtype)
        x = self._stem(conv, norm, x, train, dtype)
        x = stages(x, self.stage_sizes, self.width, self._block(), conv, norm, train, dtype, self.shortcut)
        return nn.Dense(self.num_classes, dtype=dtype)(x)

    def _stem(self, conv: ModuleDef, norm: ModuleDef, x, train: bool, dtype):
        return nn.relu(conv_bn(conv, norm, x, self.width, 3, train, dtype=dtype))

    def _block(self):
        return BasicBlock


class ResNet(CifarResNet):
    """ImageNet ResNet: 7x7/2 stem + 3x3/2 max-pool (or the 3x3/1 stem with small_input), 4 stages of
    basic or bottleneck blocks at 64..512 channels (x4 for bottlenecks)."""

    model_name: str = "resnet18"
    stage_sizes: tuple[int, ...] = (2, 2, 2, 2)
    width: int = 64
    bottleneck: bool = False
    small_input: bool = False

    def _stem(self, conv: ModuleDef, norm: ModuleDef, x, train: bool, dtype):
        if self.small_input:
            return super()._stem(conv, norm, x, train, dtype)
        nd = x.ndim - 2
        x = nn.relu(conv_bn(conv, norm, x, self.width, 7, train, strides=2, dtype=dtype))
        return nn.max_pool(x, (3,) * nd, (2,) * nd, padding=((1, 1),) * nd)

    def _block(self):
        return BottleneckBlock if self.bottleneck else BasicBlock


def _tested(**settings) -> TestSettings:
    """A ResNet's test settings: 4 channels wide (the number of layers, not their width, sets the cost)."""
    return TestSettings({"width": 4}, **settings)


def _cifar(depth: int, test: TestSettings) -> Entry:
    blocks = (depth - 2) // 6
    description = f"CIFAR ResNet-{depth} (3 stages x {blocks} basic blocks, 16/32/64 channels)"
    return Entry(f"resnet{depth}", FAMILY, description, CifarResNet, {"stage_sizes": (blocks,) * 3}, test=test)


def _imagenet(depth: int, stage_sizes: tuple, bottleneck: bool, test: TestSettings) -> Entry:
    block = "bottleneck" if bottleneck else "basic"
    description = f"ImageNet ResNet-{depth} ({block} blocks {stage_sizes}; small_input for tiny images)"
    defaults = {"stage_sizes": stage_sizes, "bottleneck": bottleneck}
    return Entry(f"resnet{depth}", FAMILY, description, ResNet, defaults, test=test)


# resnet20, resnet18 and resnet50 are computed in the tests; the others are more of their blocks.
ENTRIES = [
    _cifar(20, _tested(representative=True)),
    _cifar(32, TestSettings({"width": 4, "shortcut": "identity_pad"}, traced_only=True)),  # option A traced
    _cifar(44, _tested(traced_only=True)),
    _cifar(56, _tested(traced_only=True, deep=True)),
    _cifar(110, _tested(traced_only=True, deep=True)),
    _imagenet(18, (2, 2, 2, 2), False, _tested()),
    _imagenet(34, (3, 4, 6, 3), False, _tested(traced_only=True)),
    _imagenet(50, (3, 4, 6, 3), True, _tested()),
    _imagenet(101, (3, 4, 23, 3), True, _tested(traced_only=True, deep=True)),
    _imagenet(152, (3, 8, 36, 3), True, _tested(traced_only=True, deep=True)),
]
