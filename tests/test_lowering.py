"""Every registered model lowers for GPU and TPU without either: its apply, its train step (one step
and K steps per call) and its eval step go through `jax.export` for ("cuda", "tpu") over an abstract
mesh of 8 devices (the sharded, data-parallel step as 8 accelerators would run it), and the CPU-only
branch of the fast convolution (zoo/models/layers.py) is absent from those modules.

Lowering needs no device of the target platform: it is tracing plus StableHLO emission, a few
seconds per model on CPU. What it cannot show (numerics, speed) the GPU tests and the benchmark do.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AbstractMesh

from zoo import models
from zoo.config import OptimizerConfig
from zoo.models.layers import CPU_ONLY_SCOPE
from zoo.training import optim, state as state_lib, step as step_lib
from zoo.training.setup import auto_steps_per_call

PLATFORMS = ("cuda", "tpu")
DEVICES = 8
BATCH = DEVICES  # one example per device
NUM_CLASSES = 3
FUNCTIONS = ("apply", "train_step", "train_steps_per_call", "eval_step")
# Each entry is lowered at its test settings (lowering cost is set by the number of ops, not their
# width). Entries whose settings say `deep` are more of blocks lowered in resnet20's and resnet50's
# cases and take 5-25 s each to trace on a 2-core machine: they are traced once, as the full K-step
# train step (forward, backward, update), in `make test-all` (the same blocks as resnet20's and
# resnet50's, which `make test` lowers for every function).
# Entries that are only traced elsewhere (more of resnet20's and resnet18/50's blocks) lower their
# K-step train step alone in `make test`.
CASES = [pytest.param(name, function, id=f"{name}-{function}",
                      marks=[pytest.mark.exhaustive] if models.get_entry(name).test.deep else [])
         for name in models.list_models() for function in FUNCTIONS
         if not models.get_entry(name).test.traced_only or function == "train_steps_per_call"]


def mesh() -> AbstractMesh:
    return AbstractMesh((DEVICES,), ("data",))


def is_lm(name: str) -> bool:
    """A language model (issue 24): token windows in, next-token logits and targets at every position."""
    return "lm" in models.get_entry(name).tasks


def task_of(name: str):
    """What the train and eval steps are built for: a class count, or the lm task over NUM_CLASSES tokens."""
    from zoo import tasks

    return tasks.LanguageModel(NUM_CLASSES) if is_lm(name) else NUM_CLASSES


@functools.lru_cache(maxsize=None)
def setup(name: str):
    """The model, optimizer, abstract train state and example shape (an image; a language model's
    token window) of a registry entry."""
    test = models.get_entry(name).test
    model = models.build(name, NUM_CLASSES, vocab_size=NUM_CLASSES, **test.hparams)
    tx = optim.make_optimizer(OptimizerConfig(name="adam"), 100)
    example = test.shapes["tokens" if is_lm(name) else "image"]
    sample = batch(example, lm=is_lm(name))[0].update(shape=(1, *example))
    state = jax.eval_shape(lambda x: state_lib.create(model, tx, 0, x), sample)
    return model, tx, state, example


def batch(example, steps: int = 1, lm: bool = False):
    """Abstract (x, y): float inputs and a label per example, or token windows and a token per position."""
    lead = (steps,) if steps > 1 else ()
    return (jax.ShapeDtypeStruct((*lead, BATCH, *example), jnp.int32 if lm else jnp.float32),
            jax.ShapeDtypeStruct((*lead, BATCH, *example[:1]) if lm else (*lead, BATCH), jnp.int32))


def lowered(name: str, function: str, platforms=PLATFORMS) -> jax.export.Exported:
    """`function` of registry entry `name`, exported for `platforms`."""
    model, tx, state, example = setup(name)
    lm = is_lm(name)
    if function == "apply":
        variables = {"params": state.params, **state.model_state}
        apply = jax.jit(lambda variables, x: model.apply(variables, x, train=False)[0])
        return jax.export.export(apply, platforms=platforms)(variables, batch(example, lm=lm)[0])
    if function in ("train_step", "train_steps_per_call"):
        steps = 1 if function == "train_step" else max(2, auto_steps_per_call(model.info.family, "gpu"))
        jitted = step_lib.jit_train_step(model, tx, task_of(name), 0.1, mesh(), steps)
        return jax.export.export(jitted, platforms=platforms)(state, *batch(example, steps, lm))
    x, y = batch(example, lm=lm)
    mask = jax.ShapeDtypeStruct((BATCH,), jnp.float32)
    jitted = step_lib.jit_eval_step(model, task_of(name), mesh())
    return jax.export.export(jitted, platforms=platforms)(state.params, state.model_state, x, y, mask)


@pytest.mark.slow
@pytest.mark.parametrize("name, function", CASES)
def test_lowers_for_gpu_and_tpu_without_cpu_only_branches(name, function):
    exported = lowered(name, function)
    assert exported.platforms == PLATFORMS
    assert exported.nr_devices == (1 if function == "apply" else DEVICES)
    assert CPU_ONLY_SCOPE not in exported.mlir_module()


def test_cpu_lowering_carries_the_cpu_only_branch_the_check_looks_for():
    """The control: the fast conv's materialising branch is found where it belongs (on CPU), so its
    absence above means something."""
    text = lowered("cnn", "train_step", platforms=("cpu",)).mlir_module()
    assert CPU_ONLY_SCOPE in text
    assert CPU_ONLY_SCOPE not in lowered("cnn", "eval_step", platforms=("cpu",)).mlir_module()
