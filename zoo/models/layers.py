"""Fast drop-in layers: the same maths and the same variables as the Flax layer each one replaces.

Each is measured faster on CPU for the zoo's benchmark workloads (benchmarks/RESULTS.md), and
tests/test_fast_layers.py checks outputs and gradients against the Flax formulation.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

# ---------------------------------------------------------------------------------------------------
# Pooling


def _windowed(x, window: int, fill: float):
    """x reshaped to (N, s1 // w1, w1, s2 // w2, w2, ..., C) for non-overlapping windows, and the
    window axes; axes of size 1 get no window, and sizes are padded at the end with `fill` (what
    padding='SAME' of nn.max_pool/avg_pool does for stride == window)."""
    spatial = x.shape[1:-1]
    windows = [window if size > 1 else 1 for size in spatial]
    pads = [(0, -size % w) for size, w in zip(spatial, windows)]
    if any(after for _, after in pads):
        x = jnp.pad(x, [(0, 0), *pads, (0, 0)], constant_values=fill)
    shape, axes = [x.shape[0]], []
    for size, w in zip(x.shape[1:-1], windows):
        shape += [size // w, w]
        axes.append(len(shape) - 1)
    return x.reshape(*shape, x.shape[-1]), tuple(axes)


def _pool(x, window: int, reduce, fill: float):
    """Non-overlapping pooling over the spatial axes by reshape."""
    view, axes = _windowed(x, window, fill)
    return reduce(view, axis=axes)


def max_pool(x, window: int = 2):
    """nn.max_pool with stride == window: reshape + max, because nn.max_pool's backward
    (select-and-scatter) costs about a third of a small CNN's step on CPU. Ties in a window share
    the gradient equally (jnp.max's rule), where nn.max_pool gives it all to the first."""
    return _pool(x, window, jnp.max, -jnp.inf)


def avg_pool(x, window: int = 2):
    """nn.avg_pool with stride == window (zero padding counts, like nn.avg_pool)."""
    return _pool(x, window, jnp.mean, 0.0)


# ---------------------------------------------------------------------------------------------------
# Convolution


def _channels_last(ndim: int) -> jax.lax.ConvDimensionNumbers:
    """The dimension numbers flax.linen.Conv uses: (N, *spatial, C) inputs, (*spatial, in, out) kernels."""
    lhs = (0, ndim - 1, *range(1, ndim - 1))
    return jax.lax.ConvDimensionNumbers(lhs, (ndim - 1, ndim - 2, *range(ndim - 2)), lhs)


# The name the CPU-only branch carries in lowered modules (tests/test_lowering.py looks for it).
CPU_ONLY_SCOPE = "zoo_cpu_only_materialize"


# The branches of the conditionals below, named once: JAX reuses a branch's trace for the same
# function and shapes, where a new lambda at every call is traced again.
def _same(x):
    return x


def _first(t, primal):
    return t


def _plus_zero(x):
    return x + 0


def _times_one(t):
    return t * 1.0


def _transposed(r):
    return r.T


def _transposed_plus_zero(r):
    return r.T + 0


def _kept(x):
    """A predicate that is always true (x's first element is not NaN) but unknown at compile time, so
    XLA keeps the conditional it selects a branch of and its output buffer."""
    return jnp.logical_not(jnp.isnan(x.reshape(-1)[0]))


def _materialize(x):
    """x, read from a buffer XLA cannot fuse x's producers into (the output of a conditional)."""
    with jax.named_scope(CPU_ONLY_SCOPE):
        return jax.lax.cond(_kept(x), _same, _plus_zero, x)


def _materialize_tangent(t, primal):
    """t, unchanged; in reverse mode the cotangent flowing back through this point is read from a
    buffer (the transpose of a conditional is a conditional), so XLA cannot fuse its producers into
    each of its consumers. The predicate comes from `primal`: a tangent's must stay linear."""
    with jax.named_scope(CPU_ONLY_SCOPE):
        return jax.lax.cond(_kept(primal), _same, _times_one, t)


_MATERIALIZE_COTANGENT = True


def _plain_conv(x, kernel, strides, padding):
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_channels_last(x.ndim))


# A stride-1 convolution with at most this many products per output (input channels x kernel taps:
# a 3x3 kernel over one channel, the first layer of a grayscale image or signal model) is computed as
# a sum of shifted, broadcast products, one loop fusion (`_shifted_conv`): on this CPU XLA's
# convolution spent ~7x longer on one input channel, and the CNN's train step took 0.74x the time.
# Over 3 channels (27 products, ResNet-20's first layer) it measured no gain in the step
# (benchmarks/NOTES.md, round five). Its gradients stay XLA's convolutions (`_conv_jvp`). On GPUs and
# TPUs the same loop fusion is as good as a library convolution this thin, and it exports to ONNX
# as pads, slices, products and sums.
SHIFTED_MAX_PRODUCTS = 9
_SHIFTED_CONV = True


def _shifted_conv(x, kernel, padding):
    """The stride-1, undilated convolution of channels-last x (N, *spatial, C) by kernel (*taps, C, F)
    with explicit, non-negative `padding`: the sum over taps and input channels of x's shifted window
    times that tap's (F,) weights, in taps-then-channels order."""
    spatial = len(padding)
    x = jnp.pad(x, [(0, 0), *padding, (0, 0)])
    taps = kernel.shape[:spatial]
    out_shape = [size - tap + 1 for size, tap in zip(x.shape[1:-1], taps)]
    out = None
    for tap in itertools.product(*(range(t) for t in taps)):
        window = x[(slice(None), *(slice(t, t + size) for t, size in zip(tap, out_shape)))]
        for channel in range(x.shape[-1]):
            term = window[..., channel:channel + 1] * kernel[(*tap, channel)]
            out = term if out is None else out + term
    return out


def _forward_conv(x, kernel, strides, padding):
    """The convolution's value: `_shifted_conv` where it pays (see SHIFTED_MAX_PRODUCTS), else XLA's."""
    products = x.shape[-1] * math.prod(kernel.shape[:-2])
    if (_SHIFTED_CONV and products <= SHIFTED_MAX_PRODUCTS and all(s == 1 for s in strides)
            and all(lo >= 0 and hi >= 0 for lo, hi in padding)):
        return _shifted_conv(x, kernel, padding)
    return _plain_conv(x, kernel, strides, padding)


def _is_zero(tangent) -> bool:
    return isinstance(tangent, SymbolicZero)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _conv(x, kernel, strides, padding):
    return _forward_conv(x, kernel, strides, padding)


def _conv_jvp(strides, padding, primals, tangents):
    """The convolution's tangent map, linear in (d_x, d_kernel); reverse mode is its transpose.

    XLA computes the kernel's gradient (the transpose of `conv(x, d_kernel)`) as a convolution over
    activations transposed to (C, *spatial, N). Left to itself, it fuses the ops that produced x
    (BatchNorm, residual add, ReLU) into that transpose and recomputes them in a cache-hostile order,
    which cost more than the convolutions in ResNet-20; reading x from a materialized buffer makes it
    a plain transpose. (optimization_barrier does not do it: XLA's CPU pipeline removes barriers
    before fusion.) Other backends keep XLA's own choice: a conditional there would cost a
    device-to-host sync. benchmarks/check_materialize.py measures whether this still pays.
    """
    x, kernel = primals
    d_x, d_kernel = tangents
    y = _forward_conv(x, kernel, strides, padding)
    terms = []
    if not _is_zero(d_x):
        terms.append(_plain_conv(d_x, kernel, strides, padding))
    if not _is_zero(d_kernel):
        x_read = jax.lax.platform_dependent(x, cpu=_materialize, default=_same)
        terms.append(_plain_conv(x_read, d_kernel, strides, padding))
    if not terms:
        return y, jnp.zeros_like(y)
    d_y = sum(terms[1:], terms[0])
    if _MATERIALIZE_COTANGENT and not _is_zero(d_kernel):
        d_y = jax.lax.platform_dependent(d_y, y, cpu=_materialize_tangent, default=_first)
    return y, d_y


_conv.defjvp(_conv_jvp, symbolic_zeros=True)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """`jax.lax.conv_general_dilated` with a faster backward pass on CPU; for `nn.Conv(conv_general_dilated=...)`.

    Forward mode (jvp, jacfwd, Hessian-vector products) works too: the fast path is a custom JVP.

    Channels-last, undilated, ungrouped convolutions (what nn.Conv builds) take the fast path (see
    `_conv_jvp`); anything else goes to lax unchanged. The forward pass is XLA's own convolution,
    or for a stride-1 convolution over one input channel a sum of shifted products (`_shifted_conv`).
    """
    ndim = lhs.ndim
    plain = (
        all(d == 1 for d in (lhs_dilation or (1,))) and all(d == 1 for d in (rhs_dilation or (1,)))
        and feature_group_count == 1 and not kwargs and precision is None
        and tuple(dimension_numbers or ()) == tuple(_channels_last(ndim))
    )
    if not plain:
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                            dimension_numbers, feature_group_count, precision=precision,
                                            **kwargs)
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(lhs.shape[1:-1], rhs.shape[:-2], window_strides, padding)
    return _conv(lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding))


# nn.Conv with the faster backward pass: same variables, same names (Conv_0, ...), same maths.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)


class ConvMaxPool(nn.Module):
    """`max_pool(Conv(features, kernel_size, padding='SAME')(x), window)`: the same variables as that
    Conv (kernel, bias) and the same values, with the bias added after the pooling.

    max(z_i + b) == max(z_i) + b exactly (rounding is monotone), so the bias is added to a quarter
    of the values and its gradient sums a quarter of them (a 2x2 window). A ReLU applied by the
    caller commutes with the pool too: the CNN's conv -> bias -> ReLU -> pool becomes conv -> pool ->
    bias -> ReLU, on a quarter of the values. Name it as the Conv it replaces (`name="Conv_0"`).
    """

    features: int
    kernel_size: tuple[int, ...]
    window: int = 2
    dtype: Any = None
    bias_init: Any = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x):
        conv = Conv(self.features, self.kernel_size, padding="SAME", use_bias=False, dtype=self.dtype)
        nn.share_scope(self, conv)  # the kernel lives in this module's scope, beside the bias
        y = max_pool(conv(x), self.window)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        return y + bias.astype(y.dtype)


# ---------------------------------------------------------------------------------------------------
# Dense


def _plain_matmul(x, kernel):
    return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def _materialize_transposed(rows):
    """rows.T, read from a buffer (the output of a conditional): see `_matmul_jvp`."""
    with jax.named_scope(CPU_ONLY_SCOPE):
        return jax.lax.cond(_kept(rows), _transposed, _transposed_plus_zero, rows)


def _kernel_tangent(rows, d_kernel):
    """rows (M, n) @ d_kernel (n, m), written so that its transpose, the kernel's gradient rows^T @ dy,
    is a plain product on rows^T read from a buffer on CPU (see `_matmul_jvp`)."""
    if not _MATERIALIZE_TRANSPOSED:
        return rows @ d_kernel
    rows_t = jax.lax.platform_dependent(rows, cpu=_materialize_transposed, default=_transposed)
    return rows_t.T @ d_kernel


_MATERIALIZE_TRANSPOSED = True


@jax.custom_jvp
def matmul(x, kernel):
    """x (..., n) @ kernel (n, m), with a faster kernel gradient on CPU (see `_matmul_jvp`)."""
    return _plain_matmul(x, kernel)


def _matmul_jvp(primals, tangents):
    """The product's tangent map, linear in (d_x, d_kernel); reverse mode is its transpose.

    XLA's CPU backend computes the kernel's gradient x^T dy of an (M, n) x (n, m) product by copying
    dy into a transposed layout and running a transposed-operand product outside its YNNPACK path: in
    a Transformer's MLP block (M = 4096 rows, n, m = 256, 1024) that cost ~15% of the block's forward
    and backward. Written as rows_t.T @ d_kernel with rows_t = x^T read from a buffer, the transpose
    is the plain product rows_t @ dy, which XLA runs in YNNPACK: the block 0.84x (benchmarks/NOTES.md).
    Other backends keep XLA's own choice (the conditional would cost a device-to-host sync).
    """
    x, kernel = primals
    d_x, d_kernel = tangents
    y = _plain_matmul(x, kernel)
    terms = []
    if not _is_zero(d_x):
        terms.append(_plain_matmul(d_x, kernel))
    if not _is_zero(d_kernel):
        terms.append(_kernel_tangent(x.reshape(-1, x.shape[-1]), d_kernel).reshape(y.shape))
    if not terms:
        return y, jnp.zeros_like(y)
    return y, sum(terms[1:], terms[0])


matmul.defjvp(_matmul_jvp, symbolic_zeros=True)


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs):
    """`jax.lax.dot_general` with a faster kernel gradient on CPU; for `nn.Dense(dot_general=...)`.

    The product nn.Dense builds (the inputs' last axis against a 2-D kernel's first) takes the fast
    path (`matmul`); anything else goes to lax unchanged."""
    (contract_lhs, contract_rhs), (batch_lhs, batch_rhs) = dimension_numbers
    plain = (rhs.ndim == 2 and tuple(contract_lhs) == (lhs.ndim - 1,) and tuple(contract_rhs) == (0,)
             and not batch_lhs and not batch_rhs and precision is None and preferred_element_type is None
             and not kwargs)
    if not plain:
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision,
                                   preferred_element_type=preferred_element_type, **kwargs)
    return matmul(lhs, rhs)


# nn.Dense with the faster kernel gradient: same variables, same names (Dense_0, ...), same forward.
Dense = functools.partial(nn.Dense, dot_general=dense_dot_general)


# ---------------------------------------------------------------------------------------------------
# BatchNorm


_PRECISION = jax.lax.Precision.HIGHEST  # float32 on TPUs too; on CPU no slower than the default


def _channel_mean(rows):
    """(M, C) -> (C,): the mean over rows as a (1, M) x (M, C) matmul (HIGHEST: float32 on TPUs too)."""
    weights = jnp.full((1, rows.shape[0]), 1.0 / rows.shape[0], jnp.float32)
    return jnp.matmul(weights, rows, precision=_PRECISION)[0]


class BatchNorm(nn.Module):
    """nn.BatchNorm over the last axis (the same variables, statistics and running averages) whose
    batch statistics are matmuls against a ones vector.

    XLA's CPU backend splits a per-channel sum over a (N, H, W, C) activation into a reduce-window
    and a reduce, slow for 16-64 channels: BatchNorm's reductions took ~40% of ResNet-20's op time.
    The statistics as (1, M) x (M, C) matmuls, and so their gradients as matmuls too, made the
    ResNet-20 step 0.90-0.93x as long (benchmarks/NOTES.md). Writing the per-channel broadcasts as
    (M, 1) x (1, C) matmuls too (so that the gradients of scale and bias are matmuls) gained
    another ~2.5% but cost ~1 s more compile time: not done. In training mode the output is
    x * mul + (bias - mean * mul) with mul = scale / sqrt(var + eps); in inference mode it is
    nn.BatchNorm's (x - mean) * mul + bias.
    """

    use_running_average: bool | None = None
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Any = None
    scale_init: Any = nn.initializers.ones
    bias_init: Any = nn.initializers.zeros

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None):
        use_running_average = nn.merge_param("use_running_average", self.use_running_average,
                                             use_running_average)
        channels = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), (channels,))
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), (channels,))
        scale = self.param("scale", self.scale_init, (channels,), jnp.float32)
        bias = self.param("bias", self.bias_init, (channels,), jnp.float32)
        dtype = self.dtype or x.dtype
        if use_running_average:
            mul = jax.lax.rsqrt(ra_var.value + self.epsilon) * scale
            return ((x.astype(jnp.float32) - ra_mean.value) * mul + bias).astype(dtype)
        rows = x.reshape(-1, channels).astype(jnp.float32)
        mean = _channel_mean(rows)
        var = jnp.maximum(0.0, _channel_mean(rows * rows) - mean * mean)  # nn.BatchNorm's fast variance
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        mul = jax.lax.rsqrt(var + self.epsilon) * scale
        return (rows * mul + (bias - mean * mul)).reshape(x.shape).astype(dtype)


# ---------------------------------------------------------------------------------------------------
# LSTM


def _kernel_init(init, shape):
    return lambda key: {"kernel": init(key, shape)}


def _kernel_bias_init(init, shape):
    return lambda key: {"kernel": init(key, shape), "bias": jnp.zeros(shape[-1:])}


def _lstm_cell(z, c):
    """Gates from pre-activations z (B, 4H) in the order i, f, g, o; returns (c, h, activations)."""
    i, f, g, o = jnp.split(z, 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = f * c + i * g
    return c, o * jnp.tanh(c), jnp.concatenate([i, f, g, o], axis=-1)


@functools.partial(jax.custom_jvp, nondiff_argnums=(6,))
def lstm_recurrence(x, w_x, w_h, bias, c0, h0, unroll: int = 1):
    """The LSTM over time-major inputs x (T, B, C); gates i, f, g, o side by side in w_x, w_h, bias.

    Returns (hs (T, B, H), c_T, h_T). The custom JVP (see `_lstm_jvp`) keeps only the recurrent part
    of the tangent inside a scan, so reverse mode, its transpose, runs the backward recurrence for
    the gate pre-activation gradients only; the gradients of both kernels, the bias and the inputs
    then come from single (T*B)-row matmuls outside the scan, instead of T small products
    accumulated through the scan's carry. (Hoisting the forward's input projection out of the scan
    measured slower: XLA fuses x_t W_x + h W_h + b inside the loop better than it reads a slice of a
    precomputed projection.) The forward step computes it as one product, [x_t, h] @ [W_x; W_h]: the
    LSTM workload's step 0.91-0.94x of two products (benchmarks/NOTES.md, round five).
    """
    (c, h), hs = _lstm_forward(x, w_x, w_h, bias, c0, h0, unroll)
    return hs, c, h


_LSTM_ONE_PRODUCT = True


def _lstm_forward(x, w_x, w_h, bias, c0, h0, unroll, derivatives=False):
    """The forward scan: ((c_T, h_T), hs), or with `derivatives` ((c_T, h_T), (hs, dz_coef, f, dh_dc)),
    the cell's derivatives at each step: d_c_t = f_t d_c_{t-1} + the sum of the first three blocks
    of dz_coef_t * d_z_t, d_h_t = its last block + dh_dc_t * d_c_t."""
    w = jnp.concatenate([w_x, w_h]) if _LSTM_ONE_PRODUCT else None

    def step(carry, x_t):
        c_prev, h = carry
        z = jnp.concatenate([x_t, h], axis=-1) @ w + bias if _LSTM_ONE_PRODUCT else x_t @ w_x + h @ w_h + bias
        c, h, gates = _lstm_cell(z, c_prev)
        if not derivatives:
            return (c, h), h
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        tanh_c = jnp.tanh(c)
        dz_coef = jnp.concatenate([g * i * (1.0 - i), c_prev * f * (1.0 - f), i * (1.0 - g * g),
                                   tanh_c * o * (1.0 - o)], axis=-1)
        return (c, h), (h, dz_coef, f, o * (1.0 - tanh_c * tanh_c))

    return jax.lax.scan(step, (c0, h0), x, unroll=unroll)


def _rows(a):
    """(T, B, n) -> (T*B, n). XLA's CPU dot contracts a 2-D operand over its leading dimension in
    place, but copies a (T, B, n) operand contracted over (T, B) into a transposed layout first."""
    return a.reshape(-1, a.shape[-1])


def _lstm_jvp(unroll, primals, tangents):
    """Reverse mode is JAX's transpose of this, as fast as the hand-written custom_vjp backward it
    replaced because the forward scan emits the cell's derivatives (a separate pass over the saved
    gates made the layer's gradient ~10% slower) and the matmuls take (T*B)-row operands (`_rows`).
    (`jax.custom_derivatives.linear_call` with that backward as the transpose does not do: it has
    no vmap rule and cannot be differentiated w.r.t. its residuals, which Hessian-vector products need.)
    """
    x, w_x, w_h, bias, c0, h0 = primals
    d_x, d_w_x, d_w_h, d_bias, d_c0, d_h0 = tangents
    (c, h), (hs, dz_coef, f, dh_dc) = _lstm_forward(x, w_x, w_h, bias, c0, h0, unroll, derivatives=True)
    h_prev = jnp.concatenate([h0[None], hs[:-1]])
    # Tangents of the pre-activations z_t = x_t W_x + h_{t-1} W_h + b that do not flow through the
    # recurrence: one (T*B)-row matmul each (transposed, the kernels' gradients).
    d_z_in = [_rows(d_x) @ w_x if not _is_zero(d_x) else None,
              _rows(x) @ d_w_x if not _is_zero(d_w_x) else None,
              _rows(h_prev) @ d_w_h if not _is_zero(d_w_h) else None,
              d_bias if not _is_zero(d_bias) else None]
    d_z_in = functools.reduce(jnp.add, [t for t in d_z_in if t is not None], jnp.zeros_like(_rows(dz_coef)))
    d_z_in = d_z_in.reshape(dz_coef.shape)

    def step(carry, inputs):
        d_c, d_h = carry
        d_z_t, coef, f_t, dh_dc_t = inputs
        parts = jnp.split(coef * (d_z_t + d_h @ w_h), 4, axis=-1)
        d_c = f_t * d_c + parts[0] + parts[1] + parts[2]
        d_h = parts[3] + dh_dc_t * d_c
        return (d_c, d_h), d_h

    d_c0 = jnp.zeros_like(c0) if _is_zero(d_c0) else d_c0
    d_h0 = jnp.zeros_like(h0) if _is_zero(d_h0) else d_h0
    (d_c, d_h), d_hs = jax.lax.scan(step, (d_c0, d_h0), (d_z_in, dz_coef, f, dh_dc), unroll=unroll)
    return (hs, c, h), (d_hs, d_c, d_h)


lstm_recurrence.defjvp(_lstm_jvp, symbolic_zeros=True)


class LSTM(nn.Module):
    """`nn.RNN(nn.LSTMCell(features), return_carry=True)` over (B, T, C), with the cell's variables.

    Faster: one matmul per step for all four gates, and a backward pass that computes the kernels'
    gradients in one matmul each after the scan (see `lstm_recurrence`).
    Accepts the keyword arguments nn.Bidirectional passes (`reverse`, `keep_order`, ...). `dtype` is
    the compute dtype (like nn.LSTMCell's): inputs, kernels and the carry are cast to it; the
    variables stay float32.
    """

    features: int
    reverse: bool = False
    keep_order: bool = False
    unroll: int = 1
    kernel_init: object = nn.initializers.lecun_normal()
    recurrent_kernel_init: object = nn.initializers.orthogonal()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs, *, initial_carry=None, init_key=None, seq_lengths=None,
                 return_carry=True, time_major=False, reverse=None, keep_order=None):
        if seq_lengths is not None:
            raise NotImplementedError("zoo.models.layers.LSTM does not take seq_lengths")
        reverse = self.reverse if reverse is None else reverse
        keep_order = self.keep_order if keep_order is None else keep_order
        # nn.LSTMCell's variables, one Dense per gate: input kernels ii..io, recurrent hi..ho + bias.
        shape_x, shape_h = (inputs.shape[-1], self.features), (self.features, self.features)
        dense_x = [self.param(f"i{g}", _kernel_init(self.kernel_init, shape_x)) for g in "ifgo"]
        dense_h = [self.param(f"h{g}", _kernel_bias_init(self.recurrent_kernel_init, shape_h)) for g in "ifgo"]
        w_x = jnp.concatenate([d["kernel"] for d in dense_x], axis=1).astype(self.dtype)
        w_h = jnp.concatenate([d["kernel"] for d in dense_h], axis=1).astype(self.dtype)
        bias = jnp.concatenate([d["bias"] for d in dense_h]).astype(self.dtype)
        x = (inputs if time_major else jnp.swapaxes(inputs, 0, 1)).astype(self.dtype)  # (T, B, C)
        if reverse:
            x = x[::-1]
        if initial_carry is None:
            c0 = h0 = jnp.zeros((*x.shape[1:-1], self.features), x.dtype)
        else:
            c0, h0 = (a.astype(self.dtype) for a in initial_carry)
        hs, c, h = lstm_recurrence(x, w_x, w_h, bias, c0, h0, self.unroll)
        if reverse and keep_order:
            hs = hs[::-1]
        outputs = hs if time_major else jnp.swapaxes(hs, 0, 1)
        return ((c, h), outputs) if return_carry else outputs
