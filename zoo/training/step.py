"""The jitted train and eval steps, data-parallel over a mesh of all devices (params replicated)."""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from zoo import tasks
from zoo.config import KNOWN_XLA_OPTIONS, check_xla_options  # noqa: F401 - the allowlist, checked here too
from zoo.errors import ConfigError
from zoo.models import cnn, resnet
from zoo.training import augment as augment_lib, optim, state as state_lib
from zoo.training.state import TrainState


def make_mesh() -> Mesh:
    """A 1-D mesh over every device of every process; batches are split along its 'data' axis.

    `jax.make_mesh` orders the devices for the platform's topology (TPU slices, NVLink islands),
    which `jax.devices()` order does not. Axis type Auto: the jitted steps place data by their
    in/out shardings, as with a plain `Mesh`."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, leading_axes: int = 0) -> NamedSharding:
    """Shards the batch axis; `leading_axes` stacked step axes in front of it stay whole."""
    return NamedSharding(mesh, P(*([None] * leading_axes), "data"))


def put_batch(mesh: Mesh, array: np.ndarray, leading_axes: int = 0) -> jax.Array:
    """Places a global batch (identical on every process) on the mesh; each process gives its rows."""
    sharding = batch_sharding(mesh, leading_axes)
    if jax.process_count() == 1:
        return jax.device_put(array, sharding)
    rows = array.shape[leading_axes] // jax.process_count()
    start = jax.process_index() * rows
    local = np.take(array, np.arange(start, start + rows), axis=leading_axes)
    return jax.make_array_from_process_local_data(sharding, local, array.shape)


def put_local_rows(mesh: Mesh, rows: np.ndarray, leading_axes: int = 0) -> jax.Array:
    """Places this process's rows (its block of a global batch, the same size on every process)."""
    if jax.process_count() == 1:
        return jax.device_put(rows, batch_sharding(mesh, leading_axes))
    global_shape = list(rows.shape)
    global_shape[leading_axes] *= jax.process_count()
    return jax.make_array_from_process_local_data(batch_sharding(mesh, leading_axes), rows, tuple(global_shape))


def cross_entropy(logits, labels, num_classes: int, label_smoothing: float = 0.0):
    """Per-example softmax cross-entropy (the classify task's) against class ids or distributions."""
    return tasks.Classify(num_classes).cross_entropy(logits, labels, label_smoothing)


def train_step_fn(model, tx, task, label_smoothing: float = 0.0, augment=None, ema=None):
    """One step: forward, backward, optimizer update. Pure; returns (state, metrics).

    `augment` (a config.AugmentConfig) augments the batch first, on the device, keyed by the step
    (zoo.training.augment); `ema` (a config.EmaConfig with a decay) updates the moving average an
    EmaTrainState keeps. Neither given (or both off): the step of a run without them, unchanged.

    `task` (zoo.tasks) gives the loss and the batch metrics; a class count stands for classification
    with `label_smoothing` (the older call).

    With an accumulating `tx` (optim.accumulate: K micro-batches) the batch is split into K
    micro-batches, run one after another; the K-th applies the optimizer to their mean gradient, so
    one step is still one optimizer step on the whole batch."""

    task = tasks.as_task(task, label_smoothing)

    def loss_fn(params, model_state, rng, x, y):
        logits, model_state = model.apply({"params": params, **model_state}, x, train=True, rng=rng)
        loss = task.loss(logits, y).mean()
        return loss, (logits, model_state)

    def update(carry, rng, x, y):
        """Forward, backward and `tx`'s update on one batch; carry = (params, model_state, opt_state)."""
        params, model_state, opt_state = carry
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (logits, model_state)), grads = grad_fn(params, model_state, rng, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = task.batch_metrics(logits, y, loss)
        return (params, model_state, opt_state), metrics

    micro_batches = optim.micro_batches(tx)
    augmenting = augment is not None and augment != type(augment)()
    averaging = ema is not None and ema.decay > 0

    def step(state: TrainState, x, y):
        rng = jax.random.fold_in(state.rng, state.step)
        if augmenting:
            x, y = augment_lib.augment(augment_lib.augment_key(rng), x, y, augment, getattr(task, "num_classes", 0))
        carry = (state.params, state.model_state, state.opt_state)
        if micro_batches == 1:
            carry, metrics = update(carry, rng, x, y)
        else:
            carry, metrics = _over_micro_batches(update, carry, rng, x, y, micro_batches)
        params, model_state, opt_state = carry
        new_state = state.replace(step=state.step + 1, params=params, model_state=model_state,
                                  opt_state=opt_state)
        if averaging:
            new_state = state_lib.update_ema(new_state, ema.decay, ema.every)
        return new_state, metrics

    return step


def _over_micro_batches(update, carry, rng, x, y, k: int):
    """`update` on K micro-batches in a scan (one at a time: activations of one micro-batch live at
    once); dropout keys fold in the micro-batch index; metrics are the micro-batches' mean."""

    def split(a):  # micro-batch i: rows i, i+K, i+2K...: each device's rows of a sharded batch split evenly
        return jnp.swapaxes(a.reshape(a.shape[0] // k, k, *a.shape[1:]), 0, 1)

    def micro(carry, batch):
        index, x, y = batch
        return update(carry, jax.random.fold_in(rng, index), x, y)

    carry, metrics = jax.lax.scan(micro, carry, (jnp.arange(k), split(x), split(y)))
    return carry, jax.tree.map(jnp.mean, metrics)


def multi_step_fn(step):
    """K steps in one call: `lax.scan` over batches stacked on a leading axis; metrics are stacked."""

    def multi(state, xs, ys):
        return jax.lax.scan(lambda carry, batch: step(carry, *batch), state, (xs, ys))

    return multi


# XLA's experimental YNNPACK fusions for the CPU backend (jaxlib 0.10.2): per CPU vector ISA and
# model family, chosen by paired, interleaved A/B timings of each family's benchmark train step
# (benchmarks/ab_xla_options.py; numbers in benchmarks/NOTES.md). A family absent from its ISA's
# table measured no better with any option tried there. The option takes one fusion type; setting
# it replaces XLA's default set, which runs convolutions in YNNPACK, slower here than XLA's own
# (a 14x14x32->64 3x3 convolution's gradient: 43 ms in YNNPACK, 25 ms in XLA's).
YNN_DOT = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
YNN_INDIVIDUAL_DOT = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
CPU_FAMILY_OPTIONS_BY_ISA: dict[str, dict[str, dict]] = {
    # 2-core AMD EPYC with AVX-512 (+BF16), median of paired per-round ratios. YNN dot / none, quiet
    # (load < 1.5): CNN 0.77 (0.63-0.89), ResNet-20 0.80 (0.76-1.03); under load 5-7 the gain
    # vanished (CNN 0.95-1.00, ResNet-20 0.96-1.13). Individual dots / YNN dot (2026-12-03, load ~1):
    # CNN 0.93 (0.82-1.15) and 0.94 (0.84-1.15), ResNet-20 1.00 (0.87-1.17) with compile 3.2 vs 3.8 s.
    # The other families were never faster with any (MLP 1.01, LSTM 1.12, Transformer 1.05 with YNN dot).
    "avx512": {cnn.FAMILY: YNN_INDIVIDUAL_DOT, resnet.FAMILY: YNN_INDIVIDUAL_DOT},
    # 2-core AVX2-only machine, issue 13's measurements (not re-measured on this one): ResNet-20 step
    # 765 -> 459 ms; process-wide CNN 1.84 -> 1.29, ResNet-20 1.94 -> 1.18 (x PyTorch), while the
    # LSTM, Transformer and MLP got slower.
    "avx2": {cnn.FAMILY: YNN_DOT, resnet.FAMILY: YNN_DOT},
}


@functools.cache
def cpu_isa() -> str:
    """'avx512', 'avx2' or 'other': the widest x86 vector extension of this machine (/proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "other"


def cpu_family_options(family: str | None, isa: str | None = None) -> dict:
    """The measured CPU defaults for `family` on this machine's ISA (or `isa`)."""
    return dict(CPU_FAMILY_OPTIONS_BY_ISA.get(isa or cpu_isa(), {}).get(family, {}))


def family_of(model) -> str | None:
    """The registry family of a `zoo.models.Model` (None for anything else)."""
    return getattr(getattr(model, "info", None), "family", None)


def compiler_options(deterministic: bool = True, backend: str | None = None, family: str | None = None,
                     options: dict | None = None) -> dict:
    """XLA options for the jitted train, eval and predict functions, from this one place.

    `options` (a config's `train.xla_options`: KNOWN_XLA_OPTIONS only, else a ConfigError) replaces the
    defaults when given ({}: none); otherwise the CPU backend gets `family`'s measured defaults for its
    ISA (cpu_family_options) and other backends none.
    On GPU `deterministic` adds deterministic ops (CPU and TPU steps are deterministic already)."""
    backend = backend or jax.default_backend()
    check_xla_options(options)
    if options is not None:
        chosen = dict(options)
        if chosen and backend == jax.default_backend():  # XLA on this machine checks its own backend's
            _check_with_xla(tuple(sorted(chosen.items())))
    else:
        chosen = cpu_family_options(family) if backend == "cpu" else {}
    if deterministic and backend == "gpu":
        chosen.setdefault("xla_gpu_deterministic_ops", True)
    return chosen


# The train state's initialization runs once a run: threefry's integer rounds and the initializers'
# polynomials, one set per parameter. LLVM's default optimization level spends about twice the compile
# time of level 1 on that program for the same bits (no fast math at either level: nothing reassociates).
# Measured on every registered model at its test settings (benchmarks/NOTES.md, round seven): states bit
# for bit equal, 157.5 -> 84.8 s of compile in all, resnet20 8.8 -> 2.2 s, cnn 2.4 -> 0.6 s.
INIT_CPU_OPTIONS = {"xla_backend_optimization_level": 1}


def init_compiler_options(backend: str | None = None) -> dict | None:
    """XLA options for the jitted state initialization: INIT_CPU_OPTIONS on CPU, none elsewhere, nor
    where XLA_FLAGS sets the level itself (a config's train.xla_options are the train, eval and predict
    functions', not these)."""
    if (backend or jax.default_backend()) != "cpu" or "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", ""):
        return None
    return dict(INIT_CPU_OPTIONS)


def jit_init(fn, mesh: Mesh):
    """`fn` (making a train state, or part of one) jitted with the init options, its outputs replicated."""
    return jax.jit(fn, out_shardings=replicated(mesh), compiler_options=init_compiler_options())


@functools.cache
def _check_with_xla(options: tuple) -> None:
    """Compiles a one-op function with a config's `options`: an option this jaxlib does not know, or a
    value it cannot parse, is a one-line ConfigError before anything is trained or written."""
    try:
        jax.jit(lambda x: x + 1).lower(np.float32(0)).compile(compiler_options=dict(options))
    except jax.errors.JaxRuntimeError as error:
        reason = (str(error).splitlines() or [""])[0].removeprefix("INVALID_ARGUMENT: ").rstrip(". ")[:200]
        raise ConfigError(f"train.xla_options: this jaxlib ({jax.__version__}) refuses them: {reason}: "
                          "correct or remove that option") from None


def _options_for(model, deterministic: bool, xla_options: dict | None) -> dict | None:
    return compiler_options(deterministic, family=family_of(model), options=xla_options) or None


def jit_train_step(model, tx, task, label_smoothing, mesh: Mesh, steps_per_call: int = 1,
                   deterministic: bool = True, xla_options: dict | None = None, augment=None, ema=None):
    """The jitted step (K > 1: K steps per call); the state is donated and stays replicated.
    `task`, `augment`, `ema`: see `train_step_fn`; `xla_options`: see `compiler_options` (None: the
    family's defaults)."""
    step = train_step_fn(model, tx, task, label_smoothing, augment, ema)
    fn, leading = (step, 0) if steps_per_call == 1 else (multi_step_fn(step), 1)
    data = batch_sharding(mesh, leading)
    return jax.jit(fn, in_shardings=(replicated(mesh), data, data),
                   out_shardings=(replicated(mesh), replicated(mesh)), donate_argnums=0,
                   compiler_options=_options_for(model, deterministic, xla_options))


def eval_step_fn(model, task):
    """The task's sums (`eval_sums`: loss, correct predictions, errors...) over the real (mask 1) rows
    of a padded batch; `task` may be a class count (classification)."""
    task = tasks.as_task(task)

    def step(params, model_state, x, y, mask):
        logits, _ = model.apply({"params": params, **model_state}, x, train=False)
        return task.eval_sums(logits, y, mask)

    return step


def jit_eval_step(model, task, mesh: Mesh, deterministic: bool = True, xla_options: dict | None = None):
    data = batch_sharding(mesh)
    return jax.jit(eval_step_fn(model, task),
                   in_shardings=(replicated(mesh), replicated(mesh), data, data, data),
                   out_shardings=replicated(mesh), compiler_options=_options_for(model, deterministic, xla_options))


@functools.partial(jax.jit, donate_argnums=0)
def _accumulate(totals, sums):
    return jax.tree.map(jnp.add, totals, sums)


def evaluate_arrays(eval_step, mesh, params, model_state, x, y, batch_size: int, task=None) -> dict:
    """The task's metrics (`finish`; None: classification's loss and accuracy) over all of (x, y), batch
    by batch, split across processes. The sums stay on the devices and are fetched once; each batch is
    put on the devices while the one before it is evaluated."""
    from zoo.data import eval_batches

    # Each process reads only its rows of every batch; the jitted step's sums are global (replicated).
    batches = (tuple(put_local_rows(mesh, array) for array in batch)
               for batch in eval_batches(x, y, batch_size, jax.process_index(), jax.process_count()))
    totals, upcoming = None, next(batches)
    while upcoming is not None:
        sums = eval_step(params, model_state, *upcoming)
        upcoming = next(batches, None)  # put on the devices while `sums` is computed
        totals = sums if totals is None else _accumulate(totals, sums)
    totals = {key: float(value) if np.ndim(value) == 0 else np.asarray(value, np.float64)
              for key, value in jax.device_get(totals).items()}
    return (task if task is not None else tasks.Classify(num_classes=0)).finish(totals)
