"""What a training step costs: forward FLOPs from the jaxpr (scans unrolled), measured seconds and
FLOPs per step behind `{seconds: S}` and `{flops: F}` budgets."""

from __future__ import annotations

import time

import jax
import numpy as np

from zoo import models
from zoo.config import Config
from zoo.data import Dataset, DataSpec

CALIBRATION_STEPS = 20  # timed steps (after one warm-up call) behind a {seconds: S} budget
PROBE_STEPS = 100_000  # the schedule length of the config that is measured (step cost does not depend on it)


def _unroll_scans(jaxpr):
    """The jaxpr with every scan fully unrolled (XLA's cost analysis counts a loop body once)."""
    from jax.extend import core

    eqns = []
    for eqn in jaxpr.eqns:
        params = dict(eqn.params)
        if eqn.primitive.name == "scan":
            params["unroll"] = params["length"]
        for key, value in params.items():
            if isinstance(value, core.ClosedJaxpr):
                params[key] = value.replace(jaxpr=_unroll_scans(value.jaxpr))
            elif isinstance(value, core.Jaxpr):
                params[key] = _unroll_scans(value)
        eqns.append(eqn.replace(params=params))
    return jaxpr.replace(eqns=eqns)


def _cost_flops(fn, *args) -> float | None:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops >= 0 else None


def _unrolled_flops(fn, *args) -> float | None:
    """XLA's FLOPs of the compiled `fn`, scans unrolled first so their bodies count once per step."""
    from jax.extend import core

    try:
        closed = jax.make_jaxpr(fn)(*args)
        unrolled = core.jaxpr_as_fun(closed.replace(jaxpr=_unroll_scans(closed.jaxpr)))
        return _cost_flops(unrolled, *jax.tree.leaves(args))
    except Exception:  # noqa: BLE001 - jaxpr internals may change; the plain count is still a count
        return _cost_flops(fn, *args)


def forward_flops(config: Config, spec: DataSpec) -> float | None:
    """FLOPs per example of the compiled inference forward pass, from XLA's cost analysis (None when
    the backend gives none); RNN time steps count once each."""
    model = models.build(config.model.name, spec.num_classes, spec.vocab_size, **config.model.hparams)
    dtype = np.dtype(spec.dtype)
    batch = config.data.batch_size
    variables = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, *spec.input_shape), dtype))
    x = jax.ShapeDtypeStruct((batch, *spec.input_shape), dtype)
    flops = _unrolled_flops(lambda v, inputs: model.apply(v, inputs)[0], variables, x)
    return flops / batch if flops is not None else None


def measure_step(config: Config, dataset: Dataset, timed_steps: int = CALIBRATION_STEPS) -> dict:
    """{"flops_per_step": XLA FLOPs of one compiled train step (forward, backward, update), "seconds_per_step":
    measured step time excluding compilation (None when `timed_steps` is 0)}.

    The step is timed as the run will call it (`train.steps_per_call` steps per call), after one
    untimed warm-up call."""
    from zoo.training import step as step_lib
    from zoo.training.setup import auto_steps_per_call, build_setup

    run = build_setup(config, dataset)
    state = run.abstract_state()
    x, y = batch_structs(run)
    flops = _unrolled_flops(run.train_step(), state, x, y)
    seconds = None
    if timed_steps:
        from zoo.data import BatchIterator

        k = config.train.steps_per_call or auto_steps_per_call(run.model.info.family)
        calls = max(1, -(-timed_steps // k))
        jitted = step_lib.jit_train_step(run.model, run.tx, run.task, 0.0, run.mesh, k, config.train.deterministic,
                                         config.train.xla_options, config.data.augment, config.train.ema)
        batches = BatchIterator(run.dataset.x_train, run.dataset.y_train, config.data.batch_size, config.seed)
        leading = 1 if k > 1 else 0

        def put(batch):
            xs, ys = batch
            return step_lib.put_batch(run.mesh, xs, leading), step_lib.put_batch(run.mesh, ys, leading)

        take = (lambda: batches.take(k)) if k > 1 else (lambda: next(batches))
        train_state = run.init_state()
        data = [put(take()) for _ in range(calls + 1)]
        compiled = jitted.lower(train_state, *data[0]).compile()
        train_state, metrics = compiled(train_state, *data[0])  # warm-up
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for xs, ys in data[1:]:
            train_state, metrics = compiled(train_state, xs, ys)
        jax.block_until_ready(metrics)
        seconds = (time.perf_counter() - start) / (calls * k)
    return {"flops_per_step": flops, "seconds_per_step": seconds}



def batch_structs(run) -> tuple:
    """The shapes and dtypes of one training batch (inputs, the task's targets) of a `RunSetup`."""
    batch = run.config.data.batch_size
    x = jax.ShapeDtypeStruct((batch, *run.spec.input_shape), np.dtype(run.spec.dtype))
    shape, dtype = run.task.targets_of(batch, tuple(run.spec.input_shape))
    return x, jax.ShapeDtypeStruct(shape, np.dtype(dtype))


def train_step_memory(config: Config, spec: DataSpec) -> dict:
    """XLA's memory analysis of the compiled train step (one step per call, `data.batch_size`, this
    backend): bytes of its arguments (train state and batch), temporaries and outputs, and of the
    outputs aliased to the donated arguments (the new state written over the old)."""
    from zoo.training import step as step_lib
    from zoo.training.setup import assemble_setup

    run = assemble_setup(config, spec)
    jitted = step_lib.jit_train_step(run.model, run.tx, run.task, 0.0, run.mesh, 1, config.train.deterministic,
                                     config.train.xla_options, config.data.augment, config.train.ema)
    stats = jitted.lower(run.abstract_state(), *batch_structs(run)).compile().memory_analysis()
    fields = {"arguments": "argument_size_in_bytes", "temporaries": "temp_size_in_bytes",
              "outputs": "output_size_in_bytes", "aliased": "alias_size_in_bytes"}
    return {name: int(getattr(stats, field)) if stats is not None else None for name, field in fields.items()}
