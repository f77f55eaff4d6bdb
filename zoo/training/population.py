"""`fit_population(configs, workdirs)`: many members of one architecture — seeds, learning rates, weight
decays — trained by one vmapped, jitted step (zoo/training/population_step.py), each member ending as
an ordinary run directory.

Each member is a run as `fit` makes it: its own run directory, claimed and checked the same way
(zoo/rundir.py), its own checkpoints, metrics log, early stopping, data order (its seed's
BatchIterator) and hooks (zoo/training/hooks.py: the logger, the evaluation, the checkpointer), all
reused per member. Only the step is shared: one call advances every member.

A member that is done (trained to its last step, or stopped early) stops updating: its slice of the
population's state is masked in the step (the program may keep computing it). The same mask lets
members resume from different steps after a kill: the members behind train alone (the others masked)
until all stand at the same step, so a resumed population ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
import types
from pathlib import Path

import jax
import numpy as np

from zoo import distributed, models, rundir
from zoo.config import Config
from zoo.data import Dataset, check_inputs
from zoo.errors import ConfigError, ZooError
from zoo.metrics import Progress, Silent, Tee
from zoo.training import hooks as hooks_lib, loop
from zoo.training.population_step import Program
from zoo.training.restore import init_from
from zoo.training.setup import Evaluator, RunSetup, build_setup, checkpoints_for

# What may differ between the members of one population: everything else is one program's.
VARYING = ("name", "seed", "optimizer.learning_rate", "optimizer.weight_decay")
DEFAULT_MAX_MIB = 4096  # a population estimated above this trains in chunks (`chunk_size`)


# Which configs can share a population --------------------------------------------------------------


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def shared_part(config: Config) -> dict:
    """The config's keys that every member of its population must share (dotted key -> value).
    sgd, adam and rmsprop add their (coupled) weight decay to the chain only where it is not zero: a
    zero and a non-zero decay are two optimizer structures, never one program."""
    flat = {key: value for key, value in _flat(config.to_dict()).items() if key not in VARYING}
    if config.optimizer.name != "adamw":
        flat["optimizer.weight_decay (zero or not)"] = config.optimizer.weight_decay == 0
    return flat


def population_key(config: Config) -> str:
    """Configs with the same key train as one population."""
    return json.dumps(shared_part(config), sort_keys=True, default=str)


def check_members(configs: list[Config]) -> None:
    """Refuses, in one line, a member that differs from the first in anything but VARYING."""
    first = shared_part(configs[0])
    for index, config in enumerate(configs[1:], start=1):
        other = shared_part(config)
        keys = sorted(key for key in set(first) | set(other) if first.get(key) != other.get(key))
        if keys:
            raise ConfigError(f"population member {index} ({config.name}, seed {config.seed}) differs from member 0 "
                              f"in {keys[0]}: the members of one population differ only in seed, "
                              "optimizer.learning_rate and optimizer.weight_decay; train it apart")


def groups(configs: list[Config]) -> list[list[int]]:
    """The indices of `configs` grouped into populations (first appearance order)."""
    found: dict[str, list[int]] = {}
    for index, config in enumerate(configs):
        found.setdefault(population_key(config), []).append(index)
    return list(found.values())


# How many members fit in memory at once -------------------------------------------------------------


def _peak_live_bytes(jaxpr) -> int:
    """The most bytes held at once by the values of `jaxpr`, run in order (its inputs held throughout;
    what happens inside a nested call is counted by that call's outputs)."""
    from jax.extend import core

    def size(var) -> int:
        aval = var.aval
        itemsize = getattr(getattr(aval, "dtype", None), "itemsize", 8)  # a PRNG key's dtype: two words
        return int(np.prod(aval.shape)) * itemsize if hasattr(aval, "shape") else 0

    last_use = {}
    for index, eqn in enumerate(jaxpr.eqns):
        for var in eqn.invars:
            if not isinstance(var, core.Literal):
                last_use[var] = index
    for var in jaxpr.outvars:
        if not isinstance(var, core.Literal):
            last_use[var] = len(jaxpr.eqns)
    inputs = set(jaxpr.invars)
    live = peak = sum(size(var) for var in jaxpr.invars)
    for index, eqn in enumerate(jaxpr.eqns):
        live += sum(size(var) for var in eqn.outvars)
        peak = max(peak, live)
        dead = {var for var in (*eqn.invars, *eqn.outvars) if not isinstance(var, core.Literal)
                and last_use.get(var, index) == index and var not in inputs}
        live -= sum(size(var) for var in dead)
    return peak


def member_bytes(setup: RunSetup) -> int:
    """An estimate of one member's training memory: the peak of the values live at once in its train
    step's jaxpr (state, batch, activations kept for the backward pass, gradients, updates)."""
    batch = setup.config.data.batch_size
    x_train, y_train = setup.dataset.x_train, setup.dataset.y_train
    x = jax.ShapeDtypeStruct((batch, *x_train.shape[1:]), x_train.dtype)
    y = jax.ShapeDtypeStruct((batch, *np.shape(y_train)[1:]), np.asarray(y_train[:1]).dtype)
    return _peak_live_bytes(jax.make_jaxpr(setup.train_step())(setup.abstract_state(), x, y).jaxpr)


def chunk_size(setup: RunSetup, members: int, max_mib: float | None) -> int:
    """How many members train at once under `max_mib` MiB (None: all); at least one."""
    if max_mib is None or members == 1:
        return members
    return max(1, min(members, int(max_mib * 2**20 // max(member_bytes(setup), 1))))


# Training ------------------------------------------------------------------------------------------


def fit_population(configs: list, workdirs: list, progress: Progress | None = None, dataset: Dataset | None = None,
                   max_mib: float | None = DEFAULT_MAX_MIB) -> list[dict]:
    """Trains `configs` (members of one population: they differ only in VARYING) in `workdirs`, one run
    directory each, every member resuming from its own latest good step; returns the members'
    summaries (as `fit` returns a run's), in order. A population estimated above `max_mib` MiB trains
    in chunks, one after another. A stop request ends it: the members stopped carry {"stopped": signal}."""
    from zoo.config import as_config

    configs = [as_config(config, where="zoo.fit_population") for config in configs]
    workdirs = [Path(workdir) for workdir in workdirs]
    if not configs or len(configs) != len(workdirs):
        raise ConfigError(f"zoo.fit_population: give one run directory per config ({len(configs)} configs, "
                          f"{len(workdirs)} run directories)")
    if len({workdir.resolve() for workdir in workdirs}) != len(workdirs):
        raise ConfigError("zoo.fit_population: two members share a run directory: give each its own")
    check_members(configs)
    progress = progress if progress is not None and distributed.is_primary() else Silent()
    first = distributed.agreed(lambda: build_setup(configs[0], dataset))
    setups = [member_setup(first, config) for config in configs]
    # Every member's directory and fine-tuning source checked before any chunk writes anything.
    stored = [distributed.agreed(lambda: rundir.check_same_config(w, s.config)) for s, w in zip(setups, workdirs)]
    initial = [distributed.agreed(lambda: init_from(s, s.config.init_from))
               if s.config.init_from.run and not rundir.has_started(w) else None for s, w in zip(setups, workdirs)]
    in_memory = [loop._in_memory(config, dataset) for config in configs]
    size, results = chunk_size(first, len(setups), max_mib), []
    for begin in range(0, len(setups), size):
        part = slice(begin, begin + size)
        if results and results[-1].get("stopped"):  # a stop request ended the chunk before: not started
            results += [{"run_dir": str(w), "stopped": results[-1]["stopped"], "step": None} for w in workdirs[part]]
            continue
        results += _fit_chunk(setups[part], workdirs[part], progress, stored[part], initial[part], in_memory[part])
    return results


def member_setup(first: RunSetup, config: Config) -> RunSetup:
    """The member's RunSetup: the first member's model, data and mesh, with its own config and optimizer."""
    from zoo.training import optim

    return dataclasses.replace(first, config=config, tx=optim.build(config, first.total_steps))


def _fit_chunk(setups: list[RunSetup], workdirs: list[Path], progress: Progress, stored: list, initial: list,
               in_memory: list) -> list[dict]:
    """One chunk's members claimed, started (restored or fresh) and trained together."""
    with contextlib.ExitStack() as claims:
        for workdir in workdirs:
            claims.enter_context(rundir.claim_run_dir(workdir))
        program = Program(setups)
        shared = _SharedEvaluation(program)
        members = [_Member.start(program, shared, index, w, _MemberProgress(progress, _tag(s.config), index == 0),
                                 stored[index], initial[index], in_memory[index])
                   for index, (s, w) in enumerate(zip(setups, workdirs))]
        return _train(program, shared, members)


def _tag(config: Config) -> str:
    return f"[seed {config.seed}, lr {config.optimizer.learning_rate:g}, wd {config.optimizer.weight_decay:g}]"


class _MemberProgress(Progress):
    """One member's view of the population's progress: its log lines, tagged; the bar (or the periodic
    line off a terminal) for the first member only."""

    def __init__(self, parent: Progress, tag: str, shows_bar: bool):
        super().__init__(stream=parent.stream, interactive=False)
        self.parent, self.tag, self.shows_bar = parent, tag, shows_bar

    def start(self, total: int, initial: int = 0) -> None:
        if self.shows_bar:
            self.parent.start(total, initial)

    def due(self) -> bool:
        return self.shows_bar and self.parent.due()

    def update(self, step: int, metrics=None, examples_per_sec=None, eta_seconds=None) -> None:
        if self.shows_bar:
            self.parent.update(step, metrics, examples_per_sec, eta_seconds)

    def log(self, message: str) -> None:
        self.parent.log(f"{self.tag} {message}")

    def close(self) -> None:
        if self.shows_bar:
            self.parent.close()


class _SharedEvaluation:
    """Evaluates every member at once (the vmapped eval step), a split the first time a member asks for
    it at a step."""

    def __init__(self, program: Program):
        self.program, self.state, self.cached = program, None, {}

    def set(self, state) -> None:
        self.state, self.cached = state, {}

    def split(self, x, y, weights) -> list[dict]:
        key = (id(x), weights)
        if key not in self.cached:
            self.cached[key] = self.program.evaluate(self.state, x, y, weights)
        return self.cached[key]


class _MemberEvaluator(Evaluator):
    """A member's evaluator: `Evaluator.splits` as for a run alone (its splits, moving average and raw
    weights), each split's metrics taken from the evaluation of every member at once."""

    def __init__(self, setup: RunSetup, shared: _SharedEvaluation, index: int):
        super().__init__(setup)
        self.shared, self.index = shared, index

    def split(self, state, x, y, weights: str | None = None) -> dict:
        return self.shared.split(x, y, weights)[self.index]


@dataclasses.dataclass
class _Member:
    """One member's run: its setup, run directory, checkpoints, start, metrics log, batches and hooks."""

    index: int
    setup: RunSetup
    run_dir: Path
    checkpoints: object
    start_step: int
    step: int
    state: object  # its state at the start (stacked into the population's, then dropped)
    watch: object
    metrics_log: object
    batches: object
    logger: object
    hooks: list
    progress: Progress
    in_memory: bool
    param_count: int
    done: bool = False

    @classmethod
    def start(cls, program: Program, shared: _SharedEvaluation, index: int, run_dir: Path, progress: Progress,
              stored, initial, in_memory: bool) -> "_Member":
        setup = program.setups[index]
        checkpoints = checkpoints_for(run_dir, setup.config, has_validation=setup.dataset.has_validation)
        start = loop._start(setup, checkpoints, run_dir, progress, stored, initial, fresh=lambda: program.fresh(index))
        metrics_log = loop._metrics_log(setup, run_dir, start.step, stored, progress)
        param_count = models.count_params(start.state.params)
        batches = loop.train_batches(setup, start.position)
        evaluator = _MemberEvaluator(setup, shared, index)
        meta = {**loop.run_meta(setup, param_count, in_memory), "population": {"size": program.size, "index": index}}
        logger, hooks = hooks_lib.make_hooks(setup, evaluator, checkpoints, metrics_log, progress, meta,
                                             lambda: dataclasses.asdict(batches.position), start.early_stopping)
        watch = start.early_stopping
        done = start.step >= setup.total_steps or (watch is not None and watch.stopped_at is not None)
        progress.start(setup.total_steps, start.step)
        return cls(index, setup, run_dir, checkpoints, start.step, start.step, start.state, watch, metrics_log,
                   batches, logger, hooks, progress, in_memory, param_count, done)

    def next_batches(self, count: int):
        return next(self.batches) if count == 1 else self.batches.take(count)

    def close(self) -> None:
        self.batches.close()
        self.checkpoints.wait()
        self.progress.close()
        if isinstance(self.metrics_log, Tee):
            self.metrics_log.close()


def _train(program: Program, shared: _SharedEvaluation, members: list[_Member]) -> list[dict]:
    state = program.stack([member.state for member in members])
    for member in members:
        member.state = None
        member.logger.resync()  # training time starts now, after every member's start
    stopped = None
    try:
        with hooks_lib.stop_requests() as stop:
            while not stopped and not all(member.done for member in members):
                state, stopped = _call(program, shared, members, state, stop)
    finally:
        for member in members:
            member.close()
    if stopped:
        for member in members:
            member.checkpoints.close()
        return [{"run_dir": str(m.run_dir), "stopped": stopped, "step": m.step} for m in members]
    return [_finish(program, member) for member in members]


def _call(program: Program, shared: _SharedEvaluation, members: list[_Member], state, stop: dict):
    """One call of the population step for the members at the earliest step (the others masked), then
    their hooks; returns (state, the agreed stop request or None)."""
    clock = min(member.step for member in members if not member.done)
    active = [not member.done and member.step == clock for member in members]
    lead = members[active.index(True)]
    count = loop.steps_in_call(clock, lead.setup.total_steps, lead.hooks, program.k)
    x, y = _batches(members, active, count)
    check_inputs(lead.setup.spec, x[active.index(True), 0] if count > 1 else x[active.index(True)])
    x, y = (loop._put_rows(program.mesh, array, 1 if count == 1 else 2) for array in (x, y))
    compiled, compile_seconds = program.train(count, state, x, y, np.asarray(active))
    state, metrics = compiled(state, x, y, np.asarray(active))
    host = {}  # the call's metrics, fetched once when a logger first reads them
    for member, is_active in zip(members, active):
        if not is_active:  # waiting (ahead, or done): no metrics pending, and this call is not its time
            member.logger.resync()
        else:
            member.logger.add(member.step, count, _MemberMetrics(metrics, member.index, host), compile_seconds)
            member.step += count
    signal = hooks_lib.agreed_stop(stop["signal"])
    ends = {m.index: hooks_lib.StepEnd(m.step, m.setup.total_steps, None, stop=signal)
            for m, is_active in zip(members, active) if is_active}
    _run_hooks(program, shared, members, state, ends)
    return state, signal


class _MemberMetrics:
    """One member's train metrics of one call, read from the population's when a logger reads them
    (the step runs on meanwhile; the population's are fetched once for all members)."""

    def __init__(self, metrics: dict, index: int, host: dict):
        self.metrics, self.index, self.host = metrics, index, host

    def __getitem__(self, name: str):
        if name not in self.host:
            self.host[name] = np.asarray(self.metrics[name])
        return self.host[name][self.index]


def _batches(members: list[_Member], active: list[bool], count: int):
    """Every member's next batches stacked on a leading population axis; a masked member gets zeros of
    the same shape and its data position stays where it is."""
    taken = {member.index: member.next_batches(count) for member, on in zip(members, active) if on}
    filler = tuple(np.zeros_like(array) for array in next(iter(taken.values())))
    rows = [taken.get(member.index, filler) for member in members]
    return np.stack([row[0] for row in rows]), np.stack([row[1] for row in rows])


def _run_hooks(program: Program, shared: _SharedEvaluation, members: list[_Member], state, ends: dict) -> None:
    """The hooks of every member that stepped, on its own StepEnd; the state is split per member only
    when some hook is due. A member trained to its end or stopped early is done."""
    due = any(hook.due(end) for index, end in ends.items() for hook in members[index].hooks)
    if due:
        jax.block_until_ready(state)  # the wait for the step is every member's training time, not one's hooks'
        states = program.unstack(state)
        shared.set(state)
        for index, end in ends.items():
            end.state = states[index]
    for index, end in ends.items():
        member, began = members[index], time.perf_counter()
        try:
            hooks_lib.run_due(member.hooks, end)
        except ZooError as error:  # a diverged member names itself
            raise type(error)(f"{_tag(member.setup.config)} {error}") from None
        member.done = end.final or end.early_stop
        for later in members[index + 1:]:  # another member's hooks are no training time of theirs
            later.logger.last_sync += time.perf_counter() - began
    if due:  # every member that stepped ran its hooks: its next interval starts after all of them
        for index in ends:
            members[index].logger.resync()


def _finish(program: Program, member: _Member) -> dict:
    """The member's result.json, as a run's, its time the population's divided by its size."""
    shares = program.size
    steps = types.SimpleNamespace(compile_seconds=program.compile_seconds / shares)
    logger = types.SimpleNamespace(train_seconds=member.logger.train_seconds / shares,
                                   timed_steps=member.logger.timed_steps)
    extra = {"population": {"size": program.size, "index": member.index,
                            "compile_seconds": program.compile_seconds,
                            "train_seconds": member.logger.train_seconds,
                            "memory_bytes_per_member": (math.ceil(program.memory_bytes / program.size)
                                                        if program.memory_bytes else None)}}
    return loop._finish(member.setup, member.run_dir, member.checkpoints, member.param_count, steps, logger,
                        member.start_step, member.watch, member.in_memory, extra)
