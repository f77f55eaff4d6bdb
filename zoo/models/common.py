"""What several model families share: the entry type, input kinds, token embedding, activations."""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import flax.linen as nn
import jax.numpy as jnp

from zoo.errors import ModelError

# timm and torch default to the exact GELU; flax's nn.gelu (zoo's "gelu") is the tanh approximation.
ACTIVATIONS = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "tanh": nn.tanh,
    "silu": nn.silu,
    "gelu_exact": functools.partial(nn.gelu, approximate=False),
}

# model.precision: the dtype layers compute in. Parameters stay float32 (Flax's `param_dtype`), so the
# optimizer updates float32 weights; BatchNorm and LayerNorm reduce in float32 (Flax's
# `force_float32_reductions`), attention takes its softmax in float32, the loss casts logits to float32.
Precision = Literal["float32", "bfloat16"]
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(precision: str):
    """The dtype for Flax's `dtype=` of every layer of a model of this precision."""
    return _DTYPES[precision]


KIND_HELP = "image (B, H, W, C) float, signal (B, L, C) float or tokens (B, L) int"


# One example's shape (no batch axis) per input kind in the registry-wide tests, where an entry's
# TestSettings names no other: small enough that every family compiles in a few seconds.
TEST_SHAPES = {"image": (8, 8, 1), "signal": (16, 1), "tokens": (16,)}


@dataclasses.dataclass(frozen=True)
class TestSettings:
    """How the registry-wide tests (tests/test_models.py, test_autodiff.py, test_lowering.py,
    test_properties.py, test_xla_options.py) exercise an entry; the defaults test a new entry at its
    own hyperparameters on TEST_SHAPES, in `make test` but not `make test-fast`.

    hparams: what every such test builds it with: a narrow copy, and switches that reach more code
        paths (BatchNorm, dropout, a class token).
    shapes: one example's shape for each of its `input_kinds`; a test that takes one kind per entry
        takes the first.
    representative: stands for its family in `make test-fast` and in the transform checks of
        `make test`; exactly one entry per family is.
    traced_only: more of the blocks of an entry that is computed: tests trace and lower it, and
        compute no numbers with it (each compile would take seconds).
    deep: so deep that lowering a function takes 10-25 s: only its K-step train step is lowered.
    """

    __test__ = False  # not a test class, in the test modules that import it

    hparams: dict = dataclasses.field(default_factory=dict)
    shapes: dict = dataclasses.field(default_factory=lambda: dict(TEST_SHAPES))
    representative: bool = False
    traced_only: bool = False
    deep: bool = False


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered name: its family, a one-line description, the module and what the name fixes.

    The module takes `num_classes`, `model_name` (for its error messages) and its hyperparameters;
    `defaults` are the hyperparameters this name fixes (e.g. the stage sizes of resnet50).
    """

    name: str
    family: str
    description: str
    module_cls: type
    defaults: dict
    input_kinds: tuple = ("image", "signal", "tokens")
    test: TestSettings = dataclasses.field(default_factory=TestSettings)  # how the registry-wide tests run it
    # The tasks (zoo/tasks.py) it can be trained for: classify and regress take (B, num_classes) outputs;
    # lm takes next-token logits (B, T, num_classes) at every position of a token window.
    tasks: tuple = ("classify", "regress")


def describe(x) -> str:
    """The dtype and shape of an array, for error messages."""
    return f"{x.dtype} of shape {tuple(x.shape)}"


def input_kind(x, model: str) -> str:
    """'tokens', 'signal' or 'image', from the dtype and rank of a batch."""
    if jnp.issubdtype(x.dtype, jnp.integer) and x.ndim == 2:
        return "tokens"
    if jnp.issubdtype(x.dtype, jnp.floating) and x.ndim in (3, 4):
        return "signal" if x.ndim == 3 else "image"
    raise ModelError(
        f"model '{model}' takes {KIND_HELP} inputs, got {describe(x)}; reshape the data to one of these"
    )


def check_token_ids(x, model: str) -> None:
    """Refuses anything but token ids (B, T) int: what a language model takes."""
    if input_kind(x, model) != "tokens":
        raise ModelError(f"model '{model}' is a language model: it takes token ids (B, T) int, got {describe(x)}")


def embed_tokens(x, vocab_size: int | None, features: int, model: str, dtype=jnp.float32):
    """Token ids (B, L) -> embeddings (B, L, features); call inside a compact method."""
    return token_embedding(x, vocab_size, features, model, dtype)(x)


def token_embedding(x, vocab_size: int | None, features: int, model: str, dtype=jnp.float32, **kwargs) -> nn.Embed:
    """The `nn.Embed` named "embed" for token ids `x` (a language model ties its output layer to it);
    call inside a compact method. Refuses token ids without a vocab_size."""
    if vocab_size is None:
        raise ModelError(
            f"model '{model}' got token ids {describe(x)} but no vocab_size; "
            "pass vocab_size to build() (the dataset spec holds it)"
        )
    return nn.Embed(vocab_size, features, dtype=dtype, name="embed", **kwargs)


def as_features(x, vocab_size: int | None, embed_dim: int, model: str, dtype=jnp.float32):
    """Images and signals pass through; token ids become an embedded 1-D sequence (B, L, embed_dim)."""
    if input_kind(x, model) == "tokens":
        return embed_tokens(x, vocab_size, embed_dim, model, dtype)
    return x


# Integer hyperparameters (and the entries of integer lists) are sizes and counts: at least 1, except
# these, where 0 means "none" (the CNN's hidden dense layer, a transformer without blocks).
ZERO_MEANS_NONE = frozenset({"hidden", "depth"})


def check_hparam_range(model: str, key: str, value) -> None:
    """Raises ModelError when a size or count is out of range, or a dropout rate is not in [0, 1)."""
    numbers = value if isinstance(value, tuple) else (value,)
    sizes = [v for v in numbers if isinstance(v, int) and not isinstance(v, bool)]
    low = 0 if key in ZERO_MEANS_NONE else 1
    if any(v < low for v in sizes):
        raise ModelError(f"model '{model}': model.{key} {list(value) if isinstance(value, tuple) else value} must be "
                         f"{'at least 0 (0: none)' if low == 0 else 'positive'}: it is a size or count")
    if key == "dropout" and not 0 <= value < 1:
        raise ModelError(f"model '{model}': model.dropout {value} must be in [0, 1): the fraction of units dropped")


def check_choice(field: str, value, choices) -> None:
    """Raises ValueError (build() turns it into ModelError) when value is not a valid choice."""
    if value not in choices:
        raise ValueError(f"{field} must be one of {', '.join(map(str, choices))}, got {value!r}")
