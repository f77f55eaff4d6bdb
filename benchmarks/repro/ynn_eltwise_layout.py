"""jaxlib 0.10.2 (CPU, AVX-512 machine): XLA's experimental YNNPACK eltwise/reduce fusions crash the
zoo's LSTM gradient. Run from the repository root:

    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce PYTHONPATH=. python benchmarks/repro/ynn_eltwise_layout.py
    -> INTERNAL: Error dispatching computation: Instruction with unsupported layout in YNN fusion:
       %param_0.77 = f32[256,256]{0,1} parameter(0)
Without the flag (or with only `dot`) it prints a number. Re-check on every jaxlib upgrade."""
import jax, jax.numpy as jnp
from zoo import models

model = models.build("lstm", 10, hidden_size=256)
x = jnp.ones((64, 64, 32))
variables = model.init(jax.random.key(0), x[:1])
loss = lambda params: model.apply({"params": params}, x, train=True)[0].sum()
print(jax.__version__, jax.tree.leaves(jax.jit(jax.grad(loss))(variables["params"]))[0].sum())
