"""ONNX export through jax2onnx (the optional `onnx` extra), checked in onnxruntime before it is kept.

The function is traced to a jaxpr first and jax2onnx converts that: its Flax-level rewrites (of
nn.Conv, nn.BatchNorm, nn.max_pool) are then bypassed, which is what lets ResNet-20 (an Add whose
shapes onnxruntime refused) and recurrent nets with a symbolic batch (a tracing error) convert.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from zoo.errors import ZooError
from zoo.util import atomic_write

TOLERANCE = 1e-5  # max |onnxruntime - JAX| over the probabilities of a check batch
CHECK_BATCH = 3


def _require():
    try:
        import jax.extend.core  # noqa: F401
        import onnxruntime  # noqa: F401
        from jax2onnx import to_onnx
    except ImportError as error:
        raise ZooError(f"ONNX export needs the onnx extra ({error.name} is missing): "
                       "pip install --no-deps jax2onnx onnx-ir && pip install onnx onnxruntime") from None
    return to_onnx


def convert(probabilities, input_shape, dtype, batch):
    """An ONNX ModelProto of `probabilities` for inputs (batch, *input_shape); batch 'B' is symbolic."""
    import jax.extend.core

    to_onnx = _require()
    if batch == "B":
        (dim,) = jax.export.symbolic_shape("B")
    else:
        dim = batch
    closed = jax.make_jaxpr(probabilities)(jax.ShapeDtypeStruct((dim, *input_shape), np.dtype(dtype)))
    as_fun = jax.extend.core.jaxpr_as_fun(closed)
    return to_onnx(lambda x: as_fun(x)[0], [jax.ShapeDtypeStruct((batch, *input_shape), np.dtype(dtype))
                                            if batch != "B" else (batch, *input_shape)],
                   model_name="zoo", input_names=["x"], output_names=["probabilities"])


def run_onnx(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime's shape-merge warnings are not ours to show
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def write(probabilities, spec, meta: dict, out: str | Path) -> str:
    """Writes an ONNX model that matches JAX to TOLERANCE in onnxruntime: a symbolic batch where that
    works, else a batch of 1; refuses in one line naming the cause when neither does."""
    rng = np.random.default_rng(0)
    if spec.dtype == "int32":
        x = rng.integers(0, spec.vocab_size or 2, size=(CHECK_BATCH, *spec.input_shape)).astype(np.int32)
    else:
        x = rng.normal(size=(CHECK_BATCH, *spec.input_shape)).astype(np.float32)
    expected = np.asarray(jax.jit(probabilities)(x))
    causes = []
    for batch in ("B", 1):
        sample = x if batch == "B" else x[:1]
        try:
            data = convert(probabilities, spec.input_shape, spec.dtype, batch).SerializeToString()
            got = run_onnx(data, sample)
        except ZooError:
            raise
        except Exception as error:  # noqa: BLE001 - converter and runtime failures of many kinds
            causes.append(f"batch {batch}: {type(error).__name__}: {_first_line(error)}")
            continue
        diff = float(np.abs(got - expected[:len(sample)]).max())
        if diff > TOLERANCE:
            causes.append(f"batch {batch}: onnxruntime differs from JAX by {diff:.2e}")
            continue
        atomic_write(out, data)  # a uniquely named temporary file: a link planted beside `out` is never followed
        return "symbolic" if batch == "B" else str(batch)
    raise ZooError(f"{meta.get('model')} cannot be exported to ONNX with this jax2onnx/onnxruntime "
                   f"({'; '.join(causes)}); use the default jax.export format")


def _first_line(error: Exception, limit: int = 140) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = text.split("Status Message: ")[-1]
    return text if len(text) <= limit else text[:limit] + "..."
