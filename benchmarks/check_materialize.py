"""Does the fast conv's materialized-input trick still pay? A check to run after a jax/jaxlib upgrade.

The fast conv (zoo.models.layers.Conv) reads its input from a buffer XLA cannot fuse into the
kernel-gradient transpose (`_materialize`); that relies on XLA-CPU's fusion choices, which a jaxlib
upgrade may change. This times one ResNet-20 training step (forward + backward + Adam, float32) with
`fast_layers=True` and with stock `nn.Conv` (`fast_layers=False`), interleaved rounds, medians, and
prints both and their ratio. Not a test: it prints numbers, it asserts nothing.

    python benchmarks/check_materialize.py [--batch 128] [--rounds 5] [--steps 5] [--ynn]

(the project installed, e.g. `pip install -e .`, or with PYTHONPATH=. from the repository root)
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from zoo import models


def train_step_runner(fast_layers: bool, batch: int, options: dict | None = None):
    model = models.build("resnet20", 10, fast_layers=fast_layers)
    x = jax.random.normal(jax.random.key(0), (batch, 32, 32, 3), jnp.float32)
    y = jnp.arange(batch) % 10
    variables = model.init(jax.random.key(1), x[:1])
    tx = optax.adam(1e-3)
    carry = (variables["params"], {k: v for k, v in variables.items() if k != "params"})
    carry = (*carry, tx.init(carry[0]))

    def step(carry):
        params, state, opt_state = carry

        def loss(params):
            logits, new_state = model.apply({"params": params, **state}, x, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_state

        grads, state = jax.grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state

    step = jax.jit(step, compiler_options=options or None)
    holder = [jax.block_until_ready(step(carry))]  # compile outside the timing

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            holder[0] = step(holder[0])
        jax.block_until_ready(holder[0])
        return (time.perf_counter() - start) / steps * 1e3

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=5, help="train steps per round")
    parser.add_argument("--ynn", action="store_true",
                        help="both with XLA's YNNPACK dot fusions (xla_cpu_experimental_ynn_fusion_type)")
    args = parser.parse_args()
    options = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"} if args.ynn else None
    runners = {"fast": train_step_runner(True, args.batch, options),
               "stock": train_step_runner(False, args.batch, options)}
    times = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            times[name].append(run(args.steps))
    fast, stock = statistics.median(times["fast"]), statistics.median(times["stock"])
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, ResNet-20 train step, 32x32x3, "
          f"batch {args.batch}, XLA options {options or '{}'}, median of {args.rounds} rounds x {args.steps} steps")
    print(f"  fast conv (materialized input): {fast:8.1f} ms")
    print(f"  stock nn.Conv:                  {stock:8.1f} ms")
    print(f"  stock / fast: {stock / fast:.2f}  -> the trick {'still pays' if stock / fast > 1.05 else 'NO LONGER PAYS'}")


if __name__ == "__main__":
    main()
