"""Export a run's model as "preprocess -> model -> softmax": a jax.export file (.zoo) or ONNX."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from zoo.errors import CheckpointError, ZooError
from zoo.interop import artifact

FORMATS = ("zoo", "onnx")
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def preprocess_fn(meta: dict):
    """The preprocessing a run recorded, as a jittable function. The one place it plugs in: a run's
    normalisation statistics (meta["normalization"] = {"mean", "std"}, per channel) when recorded;
    the identity otherwise."""
    norm = meta.get("normalization") or meta.get("spec", {}).get("normalization")
    if not norm:
        return lambda x: x
    mean, std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
    return lambda x: (x - mean) / std


def load_inference(run_dir: str | Path, step: int | None = None, best: bool = False):
    """(probabilities function of a batch, DataSpec, checkpoint meta) for a run's checkpoint."""
    from zoo import checkpoint as ckpt
    from zoo.config import from_dict
    from zoo.data import DataSpec
    from zoo.evaluate import resolve_step

    run_dir = Path(run_dir)
    if not (run_dir / "checkpoints").is_dir():
        raise CheckpointError(f"'{run_dir}' holds no checkpoints/: give a run directory written by "
                              "`zoo train` or `zoo import`")
    reader = ckpt.Checkpoints(run_dir / "checkpoints", read_only=True)
    chosen = resolve_step(reader, step, best)
    meta = reader.read_meta(chosen)
    try:
        config, spec = from_dict(meta["config"]), DataSpec.from_json(meta["spec"])
    except (KeyError, TypeError, ZooError) as error:
        raise CheckpointError(f"checkpoint step {chosen}: its stored config is unusable ({error})") from None
    model, state, meta = _restore_variables(reader, chosen, config)
    preprocess = preprocess_fn(meta)
    params, model_state = state["params"], state["model_state"]

    def probabilities(x):
        logits, _ = model.apply({"params": params, **model_state}, preprocess(x), train=False)
        return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

    return probabilities, spec, {**meta, "step": chosen}


def _restore_variables(reader, step: int, config):
    """(model, params and model state, meta) of `step`, restored through the train state's target."""
    from zoo.training import loop

    run = loop.build_run(config, training=False)
    state, meta = reader.restore(step, run.abstract_state())
    return run.model, {"params": state.params, "model_state": state.model_state}, meta


def _header(spec, meta: dict, fmt: str, platforms, batch) -> dict:
    import zoo as zoo_package

    names = meta.get("class_names") or getattr(spec, "class_names", None) or \
        [str(i) for i in range(spec.num_classes)]
    return {"format": fmt, "model": meta.get("model"), "run_step": meta.get("step"),
            "input_shape": list(spec.input_shape), "dtype": spec.dtype, "batch": batch,
            "class_names": list(names), "platforms": list(platforms), "outputs": "probabilities",
            "preprocess": "normalization" if preprocess_recorded(meta) else "identity",
            "zoo_version": zoo_package.__version__, "jax_version": jax.__version__}


def preprocess_recorded(meta: dict) -> bool:
    return bool(meta.get("normalization") or meta.get("spec", {}).get("normalization"))


def export_run(run_dir: str | Path, out: str | Path, step: int | None = None, best: bool = False,
               platforms=("cpu",), fmt: str = "zoo") -> dict:
    """Writes `out`: a .zoo file (jax.export, symbolic batch) or an ONNX model of the run's checkpoint."""
    if fmt not in FORMATS:
        raise ZooError(f"unknown export format '{fmt}': choose {' or '.join(FORMATS)}")
    bad = [p for p in platforms if p not in PLATFORMS]
    if bad or not platforms:
        raise ZooError(f"unknown platform '{bad[0] if bad else ''}': choose from {', '.join(PLATFORMS)}")
    out = Path(out)
    if not out.parent.is_dir():
        raise ZooError(f"cannot write '{out}': directory '{out.parent}' does not exist")
    probabilities, spec, meta = load_inference(run_dir, step, best)
    if fmt == "onnx":
        from zoo.interop import onnx_export

        batch = onnx_export.write(probabilities, spec, meta, out)
        header = _header(spec, meta, "onnx", ["onnxruntime"], batch)
        return {"out": str(out), "header": header}
    (batch,) = jax.export.symbolic_shape("batch")
    x = jax.ShapeDtypeStruct((batch, *spec.input_shape), np.dtype(spec.dtype))
    try:
        exported = jax.export.export(jax.jit(probabilities), platforms=list(platforms))(x)
    except Exception as error:  # noqa: BLE001 - a model jax.export cannot lower: one line
        raise ZooError(f"jax.export failed for {meta.get('model')}: {str(error).splitlines()[0]}") from None
    header = _header(spec, meta, "zoo", platforms, "symbolic")
    artifact.write(out, header, exported.serialize())
    return {"out": str(out), "header": header}


def predict_run(run_dir: str | Path, input_paths, step: int | None = None, best: bool = False) -> dict:
    """Class probabilities from a run directory's checkpoint (the run-dir branch of `zoo predict`)."""
    probabilities, spec, meta = load_inference(run_dir, step, best)
    header = _header(spec, meta, "run", [jax.default_backend()], "any")
    return artifact._predict(header, jax.jit(probabilities), input_paths)
