"""Micro-benchmarks behind the CNN's layer choices (benchmarks/NOTES.md, round three).

1. `--part ynn`: which YNNPACK fusion type to give a convolution's gradient (a 14x14x32 -> 64 3x3
   convolution, batch 128, followed by a dense layer): XLA's default set, which runs convolutions
   in YNNPACK, or one type (the option replaces the default set).
2. `--part pool`: bias, ReLU and a 2x2 max-pool over a 128x28x28x32 convolution output, forward +
   backward, in several orders, and with a pool whose custom JVP sends each window's gradient to
   its first maximum (nn.max_pool's tie rule), measured and not kept (see NOTES.md).

    python benchmarks/micro_cnn_layers.py --part ynn,pool --rounds 15

Each function is jitted; rounds alternate the variants; the median time per call is printed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

YNN = "xla_cpu_experimental_ynn_fusion_type"


def timed(fns: dict, args, rounds: int, calls: int = 5) -> dict[str, float]:
    times = {name: [] for name in fns}
    for fn in fns.values():
        jax.block_until_ready(fn(*args))
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                jax.block_until_ready(fn(*args))
            times[name].append((time.perf_counter() - start) / calls * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def ynn_part(rounds: int) -> None:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((128, 14, 14, 32)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((3, 3, 32, 64)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((14 * 14 * 64, 64)) * 0.01, jnp.float32)
    dn = jax.lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))

    def loss(x, k):
        y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dn)
        return jnp.sum(jnp.tanh(y.reshape(128, -1) @ w))

    variants = {"XLA's default": {}, **{t: {YNN: f"LIBRARY_FUSION_TYPE_{t}"}
                                        for t in ("DOT", "INDIVIDUAL_DOT", "INVALID")}}
    fns = {}
    for name, options in variants.items():
        fn = jax.jit(jax.grad(loss, argnums=(0, 1)), compiler_options=options or None)
        text = fn.lower(x, k).compile().as_text()
        convs = sum(1 for line in text.splitlines() if "__ynn_fusion" in line and "conv_general" in line)
        print(f"  {name}: {convs} convolutions in YNN fusions")
        fns[name] = fn
    for name, ms in timed(fns, (x, k), rounds).items():
        print(f"ynn   {name:16s} conv + dense gradient {ms:7.2f} ms")


def _windows(x):
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c)


def plain_pool(x):
    return jnp.max(_windows(x), axis=(2, 4))


@jax.custom_jvp
def first_max_pool(x):
    return plain_pool(x)


@first_max_pool.defjvp
def _first_max_pool_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    view, d_view = _windows(x), _windows(dx)
    y = jnp.max(view, axis=(2, 4))
    taken, dy = None, jnp.zeros_like(y)
    for a in range(2):
        for b in range(2):
            is_max = view[:, :, a, :, b, :] == y
            first = is_max if taken is None else is_max & ~taken
            taken = is_max if taken is None else taken | is_max
            dy = dy + jnp.where(first, d_view[:, :, a, :, b, :], 0.0)
    return y, dy


def pool_part(rounds: int) -> None:
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.standard_normal((128, 28, 28, 32)), jnp.float32)
    b = jnp.asarray(rng.standard_normal((32,)), jnp.float32)
    weights = jnp.asarray(rng.standard_normal((128, 14, 14, 32)), jnp.float32)
    relu = jax.nn.relu
    variants = {
        "pool(relu(z + b))": lambda z, b: plain_pool(relu(z + b)),
        "relu(pool(z) + b)": lambda z, b: relu(plain_pool(z) + b),
        "relu(first_max_pool(z) + b)": lambda z, b: relu(first_max_pool(z) + b),
        "relu(first_max_pool(z + b))": lambda z, b: relu(first_max_pool(z + b)),
        "relu(first_max_pool(z * b))": lambda z, b: relu(first_max_pool(z * b)),
    }
    options = {YNN: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
    fns = {name: jax.jit(jax.grad(lambda z, b, f=f: jnp.sum(f(z, b) * weights), argnums=(0, 1)),
                         compiler_options=options)
           for name, f in variants.items()}
    for name, ms in timed(fns, (z, b), rounds).items():
        print(f"pool  {name:28s} forward + backward {ms:7.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="ynn,pool")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, devices {jax.devices()}")
    parts = {"ynn": ynn_part, "pool": pool_part}
    for part in args.part.split(","):
        parts[part](args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
