"""Issue 28 (speed, round three): the Transformer's fast forms compute what the stock Flax layers do,
from the same variables (items 2 and 4), and the benchmark's committed record is refused on a loaded
machine and carries the torch.compile column (item 1). No timings here: benchmarks/NOTES.md has them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import CHEAP_COMPILE, all_equations, tolerance
from zoo.models import layers
from zoo.models.transformer import SelfAttention

RTOL, ATOL = tolerance(1e-5, 1e-5).values()
REPO = Path(__file__).resolve().parent.parent


def normal(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def outputs_and_grads(module, variables, x, **kwargs):
    """Outputs, and gradients wrt the variables and the input of sum(sin(outputs)), one jitted call."""
    def loss(variables, x):
        out = module.apply(variables, x, **kwargs)
        return jnp.sum(jnp.sin(out)), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True),
                              compiler_options=CHEAP_COMPILE)(variables, x)
    return out, grads


def assert_trees_close(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL)


# --- layers.Dense --------------------------------------------------------------------------------


@pytest.mark.slow
def test_fast_dense_matches_nn_dense_outputs_and_gradients():
    """Item 2: layers.Dense (the kernel gradient through layers.matmul) has nn.Dense's variables and
    gives its outputs and gradients (on token sequences: the rows are flattened and restored)."""
    x = normal((3, 5, 8))
    variables = nn.Dense(7).init(jax.random.key(1), x)
    fast_shapes = jax.eval_shape(layers.Dense(7).init, jax.random.key(1), x)
    assert jax.tree.structure(fast_shapes) == jax.tree.structure(variables)
    assert_trees_close(outputs_and_grads(layers.Dense(7), variables, x),
                       outputs_and_grads(nn.Dense(7), variables, x))


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the conditional is CPU-only")
def test_fast_dense_kernel_gradient_reads_the_transposed_input_from_a_buffer_on_cpu():
    """Item 2: the kernel's gradient reads x^T from a conditional's output (so XLA runs it as a plain
    product, not a transposed one); inference has no conditional."""
    x = normal((4, 6, 8))
    dense = layers.Dense(5)
    variables = dense.init(jax.random.key(1), x)
    grad = jax.grad(lambda v, x: jnp.sum(jnp.sin(dense.apply(v, x))))
    assert jax.jit(grad).lower(variables, x).compile().as_text().count("conditional(") == 1
    assert "conditional(" not in jax.jit(dense.apply).lower(variables, x).compile().as_text()


def test_fast_dense_falls_back_to_lax_for_a_product_it_does_not_handle():
    """Item 2: an explicit precision goes to jax.lax.dot_general unchanged (no custom derivative)."""
    x, kernel = normal((3, 4)), normal((4, 2), seed=1)
    numbers = (((1,), (0,)), ((), ()))
    jaxpr = str(jax.make_jaxpr(lambda x: layers.dense_dot_general(x, kernel, numbers, jax.lax.Precision.HIGHEST))(x))
    assert "custom_jvp" not in jaxpr
    assert "custom_jvp" in str(jax.make_jaxpr(lambda x: layers.dense_dot_general(x, kernel, numbers))(x))


@pytest.mark.slow
def test_fast_matmul_forward_mode_matches_the_plain_product():
    """Item 2: jax.jvp through layers.matmul (the fast path is a custom JVP) gives the product's tangent."""
    x, kernel = normal((2, 3, 4)), normal((4, 5), seed=1)
    d_x, d_kernel = normal((2, 3, 4), seed=2), normal((4, 5), seed=3)
    jvp = jax.jit(lambda f, *args: jax.jvp(f, args[:2], args[2:]), static_argnums=0, compiler_options=CHEAP_COMPILE)
    assert_trees_close(jvp(layers.matmul, x, kernel, d_x, d_kernel), jvp(jnp.matmul, x, kernel, d_x, d_kernel))


# --- SelfAttention -------------------------------------------------------------------------------


class Stock(nn.Module):
    """The stock attention as the Transformer's blocks call it (self-attention)."""
    heads: int
    dropout: float = 0.0
    deterministic: bool = True

    @nn.compact
    def __call__(self, x):
        return nn.MultiHeadDotProductAttention(num_heads=self.heads, dropout_rate=self.dropout,
                                               deterministic=self.deterministic, force_fp32_for_softmax=True)(x, x)


class Fast(Stock):
    @nn.compact
    def __call__(self, x):
        return SelfAttention(self.heads, self.dropout, self.deterministic,
                             name="MultiHeadDotProductAttention_0")(x)


@pytest.mark.slow
def test_self_attention_has_flax_attentions_variables_and_initial_values():
    """Item 2: SelfAttention's variables (query, key, value, out: kernel and bias) are
    nn.MultiHeadDotProductAttention's, with the same initial values from the same key."""
    x = normal((2, 5, 12))
    init = jax.jit(lambda x: (Fast(3).init(jax.random.key(4), x), Stock(3).init(jax.random.key(4), x)),
                   compiler_options=CHEAP_COMPILE)
    fast, stock = init(x)
    assert jax.tree.structure(fast) == jax.tree.structure(stock)
    for a, e in zip(jax.tree.leaves(fast), jax.tree.leaves(stock)):
        np.testing.assert_array_equal(a, e)


@pytest.mark.slow
def test_self_attention_matches_flax_attention_outputs_and_gradients_with_dropout():
    """Item 2: the same outputs and gradients as nn.MultiHeadDotProductAttention(x, x) in training with
    dropout (the same draws of the attention-weight dropout from the same key). Without dropout, the
    Transformer's fast and stock forms are compared by tests/test_autodiff.py."""
    dropout, deterministic = 0.3, False
    x = normal((2, 6, 8))
    variables = jax.jit(Stock(2).init, compiler_options=CHEAP_COMPILE)(jax.random.key(1), x)
    rngs = {"dropout": jax.random.key(7)}
    assert_trees_close(outputs_and_grads(Fast(2, dropout, deterministic), variables, x, rngs=rngs),
                       outputs_and_grads(Stock(2, dropout, deterministic), variables, x, rngs=rngs))


# --- the benchmark's record ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench():
    """benchmarks/bench.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_script_28", REPO / "benchmarks" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_script_28"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_script_28", None)


def report(ceilings=(300.0, 295.0), other=0.02, load=(0.3, 1.8)):
    """A finished run's record, as run_benchmark returns it (one workload, every column)."""
    columns = {f: {"median_ms": ms, "compile_s": c, "gflops_per_s": None, "fraction_of_matmul": None}
               for f, ms, c in (("zoo", 4.0, 0.5), ("flax", 4.1, 0.4), ("torch", 8.0, None), ("compile", 5.0, 21.0))}
    return {"date": "2026-12-05T00:00:00+00:00", "rounds": 9, "load_average": {"start": load, "end": load},
            "machine": {"cpu": "AMD EPYC", "cores": 2, "isa": "AVX-512"}, "other_cpu_share": other,
            "matmul_ceiling_gflops": ceilings[0], "matmul_ceiling_gflops_start_end": list(ceilings),
            "workloads": [{"workload": "mlp", "flops_per_step": 8e8, "frameworks": columns}]}


@pytest.fixture(scope="module")
def compile_time(bench):
    """benchmarks/compile_time.py as a module, on the bench module already loaded."""
    spec = importlib.util.spec_from_file_location("compile_time_script_28", REPO / "benchmarks" / "compile_time.py")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get("bench")
    sys.modules["bench"] = bench
    try:
        spec.loader.exec_module(module)
    finally:
        if previous is None:
            sys.modules.pop("bench", None)
        else:
            sys.modules["bench"] = previous
    return module


def test_fused_kernels_counts_identical_fusions_once_and_other_shapes_apart(compile_time):
    """compile_time.py's kernel count (what a step's compile grows with): the same elementwise chain on
    two arrays of one shape is two fusions but one distinct kernel; on a third shape, a second one."""
    def chains(a, b, c):
        return tuple(jnp.tanh(x) * 3.0 + 1.0 for x in (a, b, c))

    same, other = jnp.ones((16, 8)), jnp.ones((4, 8))
    text = jax.jit(chains).lower(same, same + 1, other).compile().as_text()
    assert compile_time.fused_kernels(text) == (3, 2)


def test_the_committed_record_is_refused_at_once_on_a_loaded_machine(bench, monkeypatch, capsys):
    """Item 1: `--out benchmarks` with a 1-minute load average above 0.75 per core stops before
    measuring, in one line naming the load and the limit, status 2; nothing is written."""
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (2.4, 2.0, 1.0))
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(bench, "run_benchmark", lambda *a, **k: pytest.fail("measured on a loaded machine"))
    assert bench.main(["--workloads", "mlp", "--out", str(bench.COMMITTED)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1-minute load average is 2.40 on 2 cores (at most 1.50)" in err


@pytest.mark.parametrize("run,problem", [(report(other=0.3), "other processes used 30% of the CPU"),
                                         (report(ceilings=(300.0, 200.0)), "fell from 300 to 200 GFLOP/s"),
                                         (report(), None)])
def test_a_run_disturbed_by_other_processes_is_unfit_for_the_record(bench, run, problem):
    """Item 1: other processes' CPU share while timing above 10%, or a matmul ceiling that fell below
    85% of the start's, makes a finished run unfit for the committed record; a quiet run is fit."""
    found = bench.quiet_machine_problem([run])
    assert (found is None) if problem is None else (problem in found)


def test_a_disturbed_run_writes_its_results_elsewhere_and_says_so(bench, monkeypatch, tmp_path, capsys):
    """Item 1: asked for the committed record, a disturbed run writes to a new runs/bench/<time>/
    folder instead, says so in one line and returns 2; the committed files are untouched."""
    monkeypatch.setattr(bench, "COMMITTED", tmp_path / "committed")
    monkeypatch.setattr(bench, "default_out_dir", lambda: tmp_path / "elsewhere")
    written = []
    monkeypatch.setattr(bench, "write_outputs", lambda reports, command, out: written.append(out) or (out, out))
    assert bench.write_results([report(other=0.4)], "zoo bench", tmp_path / "committed") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not writing the committed record" in err and "elsewhere" in err
    assert written == [tmp_path / "elsewhere"]


def test_the_speed_doc_table_is_rewritten_between_its_markers(bench, tmp_path):
    """Item 1: the committed record rewrites docs/speed.md's table between its markers, with the
    torch.compile columns, and leaves the text around it alone."""
    start, end = bench.TABLE_MARKERS
    doc = tmp_path / "speed.md"
    doc.write_text(f"before\n{start}\nold table\n{end}\nafter\n")
    assert bench.write_speed_doc(report(), "zoo bench --out benchmarks", doc)
    text = doc.read_text()
    assert text.startswith(f"before\n{start}\n") and text.endswith(f"{end}\nafter\n") and "old table" not in text
    assert "| torch.compile ms |" in text and "| 5.00 |" in text and "| 21.00 |" in text
    assert (REPO / "docs" / "speed.md").read_text().count(start) == 1  # the real page has its markers


# --- the first layer's convolution ---------------------------------------------------------------


def _primitives(jaxpr) -> list[str]:
    return [eqn.primitive.name for eqn in all_equations(jaxpr)]


@pytest.mark.parametrize("channels,convolutions", [(1, 0), (2, 1)])
def test_a_one_channel_convolution_is_computed_as_shifted_products_and_its_gradient_by_xla(channels, convolutions):
    """layers.Conv over one input channel (stride 1, 3x3: 9 products per output) computes its value
    without a convolution op (layers._shifted_conv); over two channels, with XLA's. The kernel's
    gradient is XLA's convolution either way."""
    x = jnp.ones((2, 6, 6, channels))
    conv = layers.Conv(4, (3, 3))
    variables = jax.eval_shape(conv.init, jax.random.key(0), x)
    forward = _primitives(jax.make_jaxpr(conv.apply)(variables, x).jaxpr)
    assert forward.count("conv_general_dilated") == convolutions
    gradient = jax.make_jaxpr(jax.grad(lambda v: jnp.sum(conv.apply(v, x))))(variables)
    assert "conv_general_dilated" in _primitives(gradient.jaxpr)
