"""The jitted functions of a population: N members of one architecture stacked on a leading axis.

Every leaf of the stacked `TrainState` (parameters, optimizer state, BatchNorm statistics, the RNG key,
the step counter) has the population axis in front: [N, ...]. The train step is `jax.vmap` of the
ordinary `step.train_step_fn` (a black box: whatever the task, EMA or augmentation it holds), so each
member computes exactly what it computes alone, from its own state and its own batch. The evaluation
is `jax.vmap` of `step.eval_step_fn` over the members' parameters, on one copy of the evaluation data.

Layout on the device mesh: the population axis is replicated and the batch axis is split over the
mesh's 'data' axis, as in a run alone. Each member's gradients are then reduced over the devices
exactly as its run alone reduces them (its numbers do not depend on the population it trains in),
and a member's slice of the state is already a checkpoint of the shape and sharding a run alone
saves and restores. Sharding the population axis instead would save the gradient all-reduce, but
make a member's numbers depend on how many members share a device (docs/population.md).

Hyperparameters that differ between members (learning rate, weight decay) are per-member constants
of the program: each member's schedule is computed as alone, and a member picks its own by its index
on the population axis. optax.inject_hyperparams would have put them into the optimizer state, whose
structure every checkpoint records: a member's checkpoint would no longer be a run's, and every run
directory written before would stop restoring.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from zoo.data import eval_batches
from zoo.training import optim, state as state_lib, step as step_lib
from zoo.training.setup import Evaluator, RunSetup, auto_steps_per_call, xla_options_of


COPY_ONLY = {"xla_backend_optimization_level": 0}


def _same(values) -> bool:
    return len(set(values)) == 1


class Program:
    """The population's jitted functions: init, stack and unstack, the train step for 1 and K steps
    per call (inactive members masked), the evaluation; compiled once each for the population."""

    def __init__(self, setups: list[RunSetup]):
        first = setups[0]
        self.setups, self.size, self.first, self.mesh = setups, len(setups), first, first.mesh
        self.k = first.config.train.steps_per_call or auto_steps_per_call(first.model.info.family)
        self.options = xla_options_of(first) or None
        self.replicated = step_lib.replicated(self.mesh)
        self.compile_seconds = 0.0
        self.memory_bytes = None  # XLA's memory analysis of the 1-step train program, when it gives one
        self._train, self._fresh, self._unstacker = {}, None, None
        self._evaluator = Evaluator(first)  # its batch size and task; its jitted step is never compiled
        # Copies only (no arithmetic), so LLVM's optimisations change nothing in them: compiled at -O0,
        # 3-5x faster to compile.
        self._unstack = jax.jit(lambda state: [jax.tree.map(lambda a: a[i], state) for i in range(self.size)],
                                out_shardings=self.replicated, compiler_options=COPY_ONLY)
        self._stack = jax.jit(lambda states: jax.tree.map(lambda *leaves: jnp.stack(leaves), *states),
                              out_shardings=self.replicated, compiler_options=COPY_ONLY)
        self._add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b), donate_argnums=0)
        self._eval = self._jit_eval()

    # The members' optimizers ---------------------------------------------------------------------

    def member_tx(self, index):
        """The optimizer of member `index` (traced under vmap). A hyperparameter all members share is
        the config's constant; one that differs is each member's own value, picked by `index`."""
        configs = [s.config for s in self.setups]
        total = self.first.total_steps
        overrides = {}
        if not _same(c.optimizer.learning_rate for c in configs):
            schedules = [optim.make_schedule(c.optimizer, total) for c in configs]
            overrides["schedule"] = lambda count: jnp.stack(
                [jnp.asarray(schedule(count), jnp.float32) for schedule in schedules])[index]
        if not _same(c.optimizer.weight_decay for c in configs):
            overrides["weight_decay"] = jnp.asarray([c.optimizer.weight_decay for c in configs], jnp.float32)[index]
        return optim.build(self.first.config, total, **overrides) if overrides else self.first.tx

    def member_step(self, index, count: int):
        """The ordinary train step of member `index` (`count` steps per call: a scan)."""
        step = self.first.train_step(self.member_tx(index))
        return step if count == 1 else step_lib.multi_step_fn(step)

    # States ---------------------------------------------------------------------------------------

    def init(self):
        """Every member's fresh state, each from its own seed as `state.create` makes it alone: one
        member after another in one program (`lax.map`; a vmapped init compiled 3x slower for 8)."""
        spec = self.first.spec
        sample = np.zeros((1, *spec.input_shape), spec.dtype)
        seeds = np.asarray([s.config.seed for s in self.setups], np.uint32)

        def create(member):
            index, seed = member
            return state_lib.create(self.first.model, self.member_tx(index), seed, sample, self.first.ema)

        make = step_lib.jit_init(lambda members: jax.lax.map(create, members), self.mesh)
        return make((jnp.arange(self.size), seeds))

    def fresh(self, index: int):
        """Member `index`'s fresh state (every member's is made at once, the first time one is asked)."""
        if self._fresh is None:
            self._fresh = self.unstack(self.init())
        return self._fresh[index]

    def stack(self, states: list):
        return self._stack(states)

    def unstack(self, state) -> list:
        """The members' states (each replicated, of the shape a run alone has)."""
        self._compile_unstack(state)
        return self._unstacker(state)

    def _compile_unstack(self, state) -> None:
        """Compiles `unstack` ahead, timed as compilation (its first call would else count as training)."""
        if self._unstacker is None:
            start = time.perf_counter()
            self._unstacker = self._unstack.lower(state).compile()
            self.compile_seconds += time.perf_counter() - start

    # Training -------------------------------------------------------------------------------------

    def train(self, count: int, state, x, y, active):
        """The compiled population step for `count` steps per call: (state, x [N, (count,) B, ...], y,
        active [N]) -> (state, metrics [N, ...]); an inactive member's state comes back unchanged.
        Returns (compiled, seconds spent compiling it now)."""
        if count in self._train:
            return self._train[count], 0.0
        data = step_lib.batch_sharding(self.mesh, 1 if count == 1 else 2)

        def population(state, x, y, active):
            new, metrics = jax.vmap(lambda i, s, xs, ys: self.member_step(i, count)(s, xs, ys))(
                jnp.arange(self.size), state, x, y)
            keep = lambda a, b: jnp.where(active.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)  # noqa: E731
            return jax.tree.map(keep, new, state), metrics

        jitted = jax.jit(population, in_shardings=(self.replicated, data, data, self.replicated),
                         out_shardings=(self.replicated, self.replicated), donate_argnums=0,
                         compiler_options=self.options)
        before, start = self.compile_seconds, time.perf_counter()
        compiled = jitted.lower(state, x, y, active).compile()
        self.compile_seconds += time.perf_counter() - start
        self._compile_unstack(state)
        seconds = self.compile_seconds - before
        if count == 1 or self.memory_bytes is None:
            self.memory_bytes = _memory_bytes(compiled)
        self._train[count] = compiled
        return compiled, seconds

    # Evaluation -----------------------------------------------------------------------------------

    def _jit_eval(self):
        data = step_lib.batch_sharding(self.mesh)
        step = jax.vmap(step_lib.eval_step_fn(self.first.model, self.first.task), in_axes=(0, 0, None, None, None))
        return jax.jit(step, in_shardings=(self.replicated, self.replicated, data, data, data),
                       out_shardings=self.replicated, compiler_options=self.options)

    def evaluate(self, state, x, y, weights: str | None = None) -> list[dict]:
        """Each member's task metrics on (x, y), with the weights `Evaluator.split` would take
        (`state.weights`): one pass over the data for all members, finished per member as
        `step.evaluate_arrays` finishes a run's."""
        params, model_state = state_lib.weights(state, weights)
        totals = None
        for batch in eval_batches(x, y, self._evaluator.batch_size, jax.process_index(), jax.process_count()):
            sums = self._eval(params, model_state, *(step_lib.put_local_rows(self.mesh, array) for array in batch))
            totals = sums if totals is None else self._add(totals, sums)
        totals = jax.device_get(totals)
        task = self._evaluator.task
        return [task.finish({key: float(value[i]) if np.ndim(value[i]) == 0 else np.asarray(value[i], np.float64)
                             for key, value in totals.items()}) for i in range(self.size)]


def _memory_bytes(compiled) -> int | None:
    """Arguments + temporaries + outputs not written over donated arguments (XLA's memory analysis)."""
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes)
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None
