"""Export a run's model as "preprocess -> model -> the task's predictions" (softmax probabilities for a
classification; values in the targets' original units for a regression, the standardisation undone):
a jax.export file (.zoo) or ONNX."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from zoo.errors import ZooError
from zoo.interop import artifact

FORMATS = ("zoo", "onnx")
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def preprocess_fn(spec):
    """The run's preprocessing (`zoo.data.preprocess`: scale, then the training split's mean and
    std, as recorded in `spec`) as a jittable function, so an export takes raw inputs as training did."""
    from zoo.data.source import preprocessor

    return preprocessor(spec.normalization, spec.dtype, xp=jnp)


def load_inference(run_dir: str | Path, step: int | str = "latest", weights: str | None = None):
    """(the task's predictions of a batch of raw inputs: class probabilities, or a regression's values
    in original units; the LoadedRun) for one checkpoint of a run. A language model is refused."""
    from zoo.inference.loaded import load_run

    run = load_run(run_dir, step, weights=weights)
    if run.config.task == "lm":
        raise ZooError(f"'{run_dir}' is a language model (task: lm), which zoo does not export: generate text "
                       f"with `zoo sample {run_dir} --prompt TEXT`")
    model, variables, preprocess, task = run.model, run.variables, preprocess_fn(run.spec), run.task

    def predictions(x):
        logits, _ = model.apply(variables, preprocess(x), train=False)
        return task.predictions(logits)

    return predictions, run


def _header(run, fmt: str, platforms, batch) -> dict:
    import zoo as zoo_package

    spec = run.spec
    # what the function returns: "probabilities" with the class names, or a regression's "values" with
    # its targets (names, and the standardisation the export undoes inside)
    outputs = ({"class_names": run.class_names} if run.task.outputs == "probabilities" else
               {"targets": dict(spec.targets)})
    return {"format": fmt, "model": run.config.model.name, "run_step": run.step,
            "input_shape": list(spec.input_shape), "dtype": spec.dtype, "batch": batch,
            **outputs, "platforms": list(platforms), "outputs": run.task.outputs,
            # the run's preprocessing is inside: inputs are raw, as the training source gave them
            "preprocess": "normalization" if spec.normalization else "identity",
            "raw_uint8": run.takes_raw_uint8,
            # the value range of array inputs: uint8 pixels 0-255 or floats in "float_range" (see
            # zoo.inference.inputs.contract); zoo's readers convert to the raw values the function takes
            "inputs": run.takes,
            "zoo_version": zoo_package.__version__, "jax_version": jax.__version__}


def export_run(run_dir: str | Path, out: str | Path, step: int | str = "latest", platforms=("cpu",),
               fmt: str = "zoo", weights: str | None = None) -> dict:
    """Writes `out`: a .zoo file (jax.export, symbolic batch) or an ONNX model of the run's checkpoint
    (its moving average of the weights where it keeps one, unless `weights` is 'raw')."""
    if fmt not in FORMATS:
        raise ZooError(f"unknown export format '{fmt}': choose {' or '.join(FORMATS)}")
    bad = [p for p in platforms if p not in PLATFORMS]
    if bad or not platforms:
        raise ZooError(f"unknown platform '{bad[0] if bad else ''}': choose from {', '.join(PLATFORMS)}")
    out = Path(out)
    if not out.parent.is_dir():
        raise ZooError(f"cannot write '{out}': directory '{out.parent}' does not exist")
    probabilities, run = load_inference(run_dir, step, weights)
    spec = run.spec
    if fmt == "onnx":
        from zoo.interop import onnx_export

        batch = onnx_export.write(probabilities, spec, run.meta, out)
        header = _header(run, "onnx", ["onnxruntime"], batch)
        return {"out": str(out), "header": header}
    (batch,) = jax.export.symbolic_shape("batch")
    x = jax.ShapeDtypeStruct((batch, *spec.input_shape), np.dtype(spec.dtype))
    try:
        exported = jax.export.export(jax.jit(probabilities), platforms=list(platforms))(x)
    except Exception as error:  # noqa: BLE001 - a model jax.export cannot lower: one line
        raise ZooError(f"jax.export failed for {run.config.model.name}: {str(error).splitlines()[0]}") from None
    header = _header(run, "zoo", platforms, "symbolic")
    artifact.write(out, header, exported.serialize())
    return {"out": str(out), "header": header}
