"""Import PyTorch weights from a `.safetensors` file (numpy backend; no torch, no unsafe deserialisation).

Naming conventions read: torchvision's ResNet (resnet18..152), timm's VisionTransformer (every
transformer-family name; the encoder blocks may instead follow torch.nn.TransformerEncoder's naming),
torch.nn.LSTM/GRU/RNN (optionally under one prefix, with the classifier as `fc`). Every tensor of the
file must be used and every zoo variable filled, or the import fails in one line naming the misfits.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from zoo import models
from zoo.models import resnet, rnn, transformer
from zoo.errors import WeightsError

HEAD = "Dense_0"  # every family's classifier is its top-level Dense_0


@dataclasses.dataclass
class Rule:
    """Zoo variables `targets` ('params/Conv_0/kernel') come from file tensors `sources` via `convert`."""

    sources: list
    targets: list
    convert: Callable  # list of source arrays -> list of target arrays


@dataclasses.dataclass
class Imported:
    model_name: str
    hparams: dict  # what build() needs beyond the entry's defaults (inferred from the file or given)
    num_classes: int
    input_shape: tuple
    variables: dict  # {'params': ..., 'batch_stats': ...} as numpy float32
    reinitialised: list  # zoo variables not taken from the file (a head of another class count)


# Converters --------------------------------------------------------------------------------------

def _conv(w):
    """torch (out, in, *spatial) -> flax (*spatial, in, out)."""
    return np.transpose(w, (*range(2, w.ndim), 1, 0))


def _same(*arrays):
    return list(arrays)


def _linear(w, b=None):
    return [w.T] if b is None else [w.T, b]


def _rule(sources, targets, convert=_same) -> Rule:
    return Rule(list(sources), list(targets), convert)


def _dense(src: str, dst: str, bias: bool = True) -> Rule:
    if not bias:
        return _rule([f"{src}.weight"], [f"params/{dst}/kernel"], _linear)
    return _rule([f"{src}.weight", f"{src}.bias"], [f"params/{dst}/kernel", f"params/{dst}/bias"], _linear)


def _layer_norm(src: str, dst: str) -> Rule:
    return _rule([f"{src}.weight", f"{src}.bias"], [f"params/{dst}/scale", f"params/{dst}/bias"])


def _batch_norm(src: str, dst: str) -> list:
    rules = [_rule([f"{src}.{a}" for a in ("weight", "bias", "running_mean", "running_var")],
                   [f"params/{dst}/scale", f"params/{dst}/bias", f"batch_stats/{dst}/mean",
                    f"batch_stats/{dst}/var"])]
    rules.append(_rule([f"{src}.num_batches_tracked"], [], lambda _: []))  # optional: torch's counter
    return rules


# ResNet (torchvision) ----------------------------------------------------------------------------

def _resnet_rules(hp: dict, targets: set) -> list:
    bottleneck = hp["bottleneck"]
    block_name, convs = ("BottleneckBlock", 3) if bottleneck else ("BasicBlock", 2)
    rules = [_rule(["conv1.weight"], ["params/Conv_0/kernel"], lambda w: [_conv(w)]),
             *_batch_norm("bn1", "BatchNorm_0")]
    block = 0
    for stage, size in enumerate(hp["stage_sizes"]):
        for j in range(size):
            src, dst = f"layer{stage + 1}.{j}", f"{block_name}_{block}"
            for k in range(convs):
                rules.append(_rule([f"{src}.conv{k + 1}.weight"], [f"params/{dst}/Conv_{k}/kernel"],
                                   lambda w: [_conv(w)]))
                rules += _batch_norm(f"{src}.bn{k + 1}", f"{dst}/BatchNorm_{k}")
            if f"params/{dst}/Conv_{convs}/kernel" in targets:
                rules.append(_rule([f"{src}.downsample.0.weight"], [f"params/{dst}/Conv_{convs}/kernel"],
                                   lambda w: [_conv(w)]))
                rules += _batch_norm(f"{src}.downsample.1", f"{dst}/BatchNorm_{convs}")
            block += 1
    return rules + [_dense("fc", HEAD)]


def _resnet_infer(tensors: dict) -> tuple[dict, tuple]:
    w = tensors.get("conv1.weight")
    if w is None or w.ndim < 3:
        return {}, (224, 224, 3)
    small = w.shape[-1] == 3
    side = 32 if small else 224
    spatial = (side,) * (w.ndim - 2)
    return {"small_input": bool(small), "width": int(w.shape[0])}, (*spatial, int(w.shape[1]))


# Transformer (timm ViT; torch.nn.TransformerEncoder blocks) -------------------------------------

def _split_qkv(heads: int):
    def convert(w, b):
        width = w.shape[1]
        out = []
        for part in range(3):
            rows = slice(part * width, (part + 1) * width)
            out.append(w[rows].T.reshape(width, heads, width // heads))
        for part in range(3):
            out.append(b[part * width:(part + 1) * width].reshape(heads, width // heads))
        return out
    return convert


def _out_proj(heads: int):
    def convert(w, b):
        width = w.shape[0]
        return [w.T.reshape(heads, width // heads, width), b]
    return convert


def _encoder_prefix(names) -> str | None:
    """The prefix of torch.nn.TransformerEncoder blocks ('encoder.layers.'), None for timm's 'blocks.'."""
    for name in names:
        match = re.fullmatch(r"(.*?layers\.)0\.self_attn\.in_proj_weight", name)
        if match:
            return match.group(1)
    return None


def _transformer_rules(hp: dict, targets: set, names) -> list:
    heads = hp["num_heads"]
    rules = [_rule(["pos_embed"], ["params/pos_embedding"]), _layer_norm("norm", "LayerNorm_0"),
             _dense("head", HEAD)]
    if "params/cls" in targets:
        rules.append(_rule(["cls_token"], ["params/cls"]))
    if "params/patch_embed/kernel" in targets:
        rules.append(_rule(["patch_embed.proj.weight", "patch_embed.proj.bias"],
                           ["params/patch_embed/kernel", "params/patch_embed/bias"],
                           lambda w, b: [_conv(w), b]))
    if "params/embed/embedding" in targets:
        rules.append(_rule(["embed.weight"], ["params/embed/embedding"]))
    torch_prefix = _encoder_prefix(names)
    for i in range(hp["depth"]):
        dst = f"EncoderBlock_{i}"
        attn = f"params/{dst}/MultiHeadDotProductAttention_0"
        qkv_targets = [f"{attn}/{p}/kernel" for p in ("query", "key", "value")] + \
                      [f"{attn}/{p}/bias" for p in ("query", "key", "value")]
        if torch_prefix is None:  # timm
            src = f"blocks.{i}"
            rules += [_layer_norm(f"{src}.norm1", f"{dst}/LayerNorm_0"),
                      _rule([f"{src}.attn.qkv.weight", f"{src}.attn.qkv.bias"], qkv_targets, _split_qkv(heads)),
                      _rule([f"{src}.attn.proj.weight", f"{src}.attn.proj.bias"],
                            [f"{attn}/out/kernel", f"{attn}/out/bias"], _out_proj(heads)),
                      _layer_norm(f"{src}.norm2", f"{dst}/LayerNorm_1"),
                      _dense(f"{src}.mlp.fc1", f"{dst}/Dense_0"), _dense(f"{src}.mlp.fc2", f"{dst}/Dense_1")]
        else:  # torch.nn.TransformerEncoderLayer(norm_first=True)
            src = f"{torch_prefix}{i}"
            rules += [_layer_norm(f"{src}.norm1", f"{dst}/LayerNorm_0"),
                      _rule([f"{src}.self_attn.in_proj_weight", f"{src}.self_attn.in_proj_bias"], qkv_targets,
                            _split_qkv(heads)),
                      _rule([f"{src}.self_attn.out_proj.weight", f"{src}.self_attn.out_proj.bias"],
                            [f"{attn}/out/kernel", f"{attn}/out/bias"], _out_proj(heads)),
                      _layer_norm(f"{src}.norm2", f"{dst}/LayerNorm_1"),
                      _dense(f"{src}.linear1", f"{dst}/Dense_0"), _dense(f"{src}.linear2", f"{dst}/Dense_1")]
    return rules


def _transformer_infer(tensors: dict) -> tuple[dict, tuple]:
    hp = {}
    names = list(tensors)
    torch_prefix = _encoder_prefix(names)
    block = re.compile(rf"{re.escape(torch_prefix)}(\d+)\." if torch_prefix else r"blocks\.(\d+)\.")
    depths = {int(m.group(1)) for m in map(block.match, names) if m}
    if depths:
        hp["depth"] = max(depths) + 1
    fc1 = tensors.get(f"{torch_prefix}0.linear1.weight" if torch_prefix else "blocks.0.mlp.fc1.weight")
    if fc1 is not None:
        hp["mlp_dim"] = int(fc1.shape[0])
    hp["pool"] = "cls" if "cls_token" in tensors else "mean"
    proj, pos = tensors.get("patch_embed.proj.weight"), tensors.get("pos_embed")
    if proj is None or pos is None or proj.ndim < 3:
        return hp, ()
    hp["width"], hp["patch_size"] = int(proj.shape[0]), int(proj.shape[-1])
    patches = pos.shape[1] - (1 if "cls_token" in tensors else 0)
    if proj.ndim == 4:
        side = math.isqrt(patches) * hp["patch_size"]
        return hp, (side, side, int(proj.shape[1]))
    return hp, (patches * hp["patch_size"], int(proj.shape[1]))


# Recurrent (torch.nn.LSTM / GRU / RNN) ------------------------------------------------------------

_CELL_NAMES = {"lstm": "LSTMCell", "gru": "GRUCell", "simple": "SimpleCell"}


def _rnn_prefix(names) -> str:
    for name in names:
        match = re.fullmatch(r"(.*)weight_ih_l0", name)
        if match:
            return match.group(1)
    return ""


def _lstm_cell(w_ih, w_hh, b_ih, b_hh):
    # torch packs gates (i, f, g, o) along rows; flax keeps one Dense per gate, bias on the hidden side.
    wi, wh, bias = np.split(w_ih, 4), np.split(w_hh, 4), np.split(b_ih + b_hh, 4)
    return [w.T for w in wi] + [w.T for w in wh] + bias


def _gru_cell(w_ih, w_hh, b_ih, b_hh):
    # torch gates (r, z, n); n = tanh(W_in x + b_in + r * (W_hn h + b_hn)): b_hn stays inside r * (...).
    (wir, wiz, win), (whr, whz, whn) = np.split(w_ih, 3), np.split(w_hh, 3)
    (bir, biz, bin_), (bhr, bhz, bhn) = np.split(b_ih, 3), np.split(b_hh, 3)
    return [wir.T, wiz.T, win.T, bir + bhr, biz + bhz, bin_, whr.T, whz.T, whn.T, bhn]


def _simple_cell(w_ih, w_hh, b_ih, b_hh):
    return [w_ih.T, b_ih + b_hh, w_hh.T]


def _cell_targets(cell: str, dst: str) -> list:
    p = f"params/{dst}"
    if cell == "lstm":
        return [f"{p}/i{g}/kernel" for g in "ifgo"] + [f"{p}/h{g}/kernel" for g in "ifgo"] + \
               [f"{p}/h{g}/bias" for g in "ifgo"]
    if cell == "gru":
        return [f"{p}/ir/kernel", f"{p}/iz/kernel", f"{p}/in/kernel", f"{p}/ir/bias", f"{p}/iz/bias",
                f"{p}/in/bias", f"{p}/hr/kernel", f"{p}/hz/kernel", f"{p}/hn/kernel", f"{p}/hn/bias"]
    return [f"{p}/i/kernel", f"{p}/i/bias", f"{p}/h/kernel"]


def _rnn_rules(hp: dict, targets: set, names) -> list:
    cell, prefix = hp["cell"], _rnn_prefix(names)
    convert = {"lstm": _lstm_cell, "gru": _gru_cell, "simple": _simple_cell}[cell]
    directions = ("", "_reverse") if hp["bidirectional"] else ("",)
    rules = [_dense("fc", HEAD)]
    if "params/embed/embedding" in targets:
        rules.append(_rule(["embed.weight"], ["params/embed/embedding"]))
    for layer in range(hp["num_layers"]):
        for d, suffix in enumerate(directions):
            sources = [f"{prefix}{kind}_l{layer}{suffix}" for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            dst = f"{_CELL_NAMES[cell]}_{layer * len(directions) + d}"
            rules.append(_rule(sources, _cell_targets(cell, dst), convert))
    return rules


def _rnn_infer(tensors: dict) -> tuple[dict, tuple]:
    prefix = _rnn_prefix(tensors)
    w_ih, w_hh = tensors.get(f"{prefix}weight_ih_l0"), tensors.get(f"{prefix}weight_hh_l0")
    if w_ih is None or w_hh is None or w_ih.ndim != 2:
        return {}, ()
    layer = re.compile(rf"{re.escape(prefix)}weight_ih_l(\d+)")
    layers = {int(m.group(1)) for m in map(layer.fullmatch, tensors) if m}
    hp = {"hidden_size": int(w_hh.shape[1]), "num_layers": max(layers) + 1,
          "bidirectional": any(name.endswith("_reverse") for name in tensors)}
    return hp, (1, int(w_ih.shape[1]))  # (steps, features): any number of steps fits


FAMILIES = {  # family -> (rules(hparams, targets, names), infer(tensors) -> (hparams, input_shape))
    resnet.FAMILY: (lambda hp, targets, names: _resnet_rules(hp, targets), _resnet_infer),
    transformer.FAMILY: (_transformer_rules, _transformer_infer),
    rnn.FAMILY: (_rnn_rules, _rnn_infer),
}


# The import ------------------------------------------------------------------------------------

def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file as a numpy array (safetensors only: no code runs on load)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file '{path}' does not exist: give a .safetensors file")
    if path.suffix != ".safetensors":
        raise WeightsError(f"'{path}' is not a .safetensors file: convert it first with torch "
                           "(see the README, 'Importing PyTorch weights')")
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as error:
        raise WeightsError(f"weights file '{path}' cannot be read ({str(error).splitlines()[0]}): "
                           "it is truncated or not safetensors; convert it again") from None


def _family(model_name: str) -> str:
    entry = models.get_entry(model_name)
    family = entry.family
    if family not in FAMILIES or (family == resnet.FAMILY and "bottleneck" not in entry.defaults):
        names = [n for n in models.list_models() if _importable(n)]
        raise WeightsError(f"model '{model_name}' has no PyTorch naming to import from: "
                           f"importable models are {', '.join(names)}")
    return family


def _importable(name: str) -> bool:
    entry = models.get_entry(name)
    return entry.family in FAMILIES and (entry.family != resnet.FAMILY or "bottleneck" in entry.defaults)


def _names(items: list, limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def import_weights(model_name: str, path: str | Path, num_classes: int | None = None,
                   hparams: dict | None = None, input_shape: tuple | None = None, seed: int = 0) -> Imported:
    """Reads `path` into the variables of `model_name`.

    `num_classes` other than the file's head: the head is skipped and re-initialised from `seed`.
    `hparams` override what is inferred from the file (hidden sizes, depth, ...); `input_shape`
    (one example, channels last) defaults to what the file implies.
    """
    family = _family(model_name)
    tensors = read_safetensors(path)
    rules_for, infer = FAMILIES[family]
    inferred, implied_shape = infer(tensors)
    valid = models.hparam_fields(model_name)
    hp = {k: v for k, v in inferred.items() if k in valid}
    if family == transformer.FAMILY and "activation" in valid:
        hp["activation"] = "gelu_exact"  # timm and torch.nn use the exact GELU
    hp.update(hparams or {})
    head = _head_classes(tensors, family)
    classes = num_classes or head
    if classes is None:
        raise WeightsError(f"'{path}' has no classifier head ('fc' or 'head'): pass --num-classes")
    shape = tuple(input_shape or implied_shape or ())
    if not shape:
        raise WeightsError(f"cannot tell the input shape of '{path}' for {model_name}: pass --input-shape "
                           "(one example, e.g. 28,28 for 28 steps of 28 features) or --dataset")
    model = models.build(model_name, classes, **hp)
    targets = _targets(model, model_name, shape, seed)
    rules = rules_for({**models.get_entry(model_name).defaults, **valid, **hp}, set(targets), list(tensors))
    skip_head = classes != head  # another class count, or no head in the file: a fresh one
    values = _fill_by_rules(rules, tensors, targets, skip_head, f"'{path}' does not fit {model_name}{_hp_text(hp)}")
    reinitialised = sorted(t for t in targets if t not in values)
    if reinitialised:
        fresh = jax.device_get(model.init(jax.random.key(seed), np.zeros((1, *shape), np.float32)))
        for target in reinitialised:
            values[target] = np.asarray(_get(fresh, target))
    variables = {}
    for target, array in values.items():
        node = variables
        *parents, leaf = target.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = array
    return Imported(model_name, hp, classes, shape, variables, reinitialised)


def _targets(model, model_name: str, shape: tuple, seed: int) -> dict:
    """{'params/...': abstract array} of every variable the model has for inputs of `shape`."""
    x = jax.ShapeDtypeStruct((1, *shape), np.float32)
    try:
        abstract = jax.eval_shape(model.init, jax.random.key(seed), x)
    except Exception as error:  # noqa: BLE001 - a shape the model refuses: one line
        raise WeightsError(f"{model_name} cannot take inputs of shape {shape}: {str(error).splitlines()[0]}") from None
    return {_key(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(abstract)}


def _fill_by_rules(rules, tensors: dict, targets: dict, skip_head: bool, does_not_fit: str) -> dict:
    """{target: array} from the file's tensors by the family's rules; every tensor used and every
    variable filled (but a skipped head), else one WeightsError listing what does not fit."""
    values, used, missing, misfit = {}, set(), [], []
    for rule in rules:
        if skip_head and any(t.startswith(f"params/{HEAD}/") for t in rule.targets):
            used.update(s for s in rule.sources if s in tensors)
            continue
        absent = [s for s in rule.sources if s not in tensors]
        if absent:
            missing += absent if rule.targets else []  # a rule without targets is optional
            continue
        used.update(rule.sources)
        try:
            arrays = rule.convert(*[np.asarray(tensors[s], np.float32) for s in rule.sources])
        except (ValueError, IndexError):  # e.g. LSTM's 4 gates given to a GRU
            misfit.append(f"{rule.sources[0]} {list(tensors[rule.sources[0]].shape)} for {rule.targets[0]}")
            continue
        for target, array in zip(rule.targets, arrays):
            if target not in targets:
                misfit.append(f"{target} (no such variable)")
            elif tuple(array.shape) != tuple(targets[target].shape):
                misfit.append(f"{rule.sources[0]} {list(tensors[rule.sources[0]].shape)} for {target} "
                              f"{list(targets[target].shape)}")
            else:
                values[target] = array
    unused = sorted(set(tensors) - used)
    unfilled = sorted(t for t in targets if t not in values and not (skip_head and f"/{HEAD}/" in f"/{t}"))
    problems = ([f"shapes differ: {_names(misfit, 2)}"] if misfit else []) + \
        ([f"missing from the file: {_names(missing)}"] if missing else []) + \
        ([f"unused tensors: {_names(unused)}"] if unused else []) + \
        ([f"zoo variables left unfilled: {_names(unfilled)}"] if unfilled and not (missing or misfit) else [])
    if problems:
        raise WeightsError(f"{does_not_fit}: {'; '.join(problems)}; check the model name, --set hyperparameters "
                           "and --num-classes")
    return values


def _head_classes(tensors: dict, family: str) -> int | None:
    name = {resnet.FAMILY: "fc.weight", rnn.FAMILY: "fc.weight", transformer.FAMILY: "head.weight"}[family]
    return int(tensors[name].shape[0]) if name in tensors and tensors[name].ndim == 2 else None


def _hp_text(hp: dict) -> str:
    return " (" + ", ".join(f"{k}={v}" for k, v in sorted(hp.items())) + ")" if hp else ""


def _key(path) -> str:
    return "/".join(str(getattr(p, "key", p)) for p in path)


def _get(tree, target: str):
    for part in target.split("/"):
        tree = tree[part]
    return tree


# A run directory from imported weights -------------------------------------------------------------

# The preprocessing the weights were trained with, recorded in a run imported without a dataset:
# pixels 0-255 scaled to [0, 1], then per channel (x - mean) / std. torchvision's ResNets use ImageNet's
# statistics; timm's ViTs (vision_transformer.py's `_cfg`, vit_tiny_patch16_224 included) use 0.5/0.5,
# "inception"; DeiT's ImageNet's. `none`: inputs as given (signals, token ids, models of your own).
PREPROCESSING = {
    "imagenet": {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "inception": {"scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    "none": None,
}
DEFAULT_PREPROCESSING = {resnet.FAMILY: "imagenet", transformer.FAMILY: "inception", rnn.FAMILY: "none"}


def import_run(model_name: str, path: str | Path, out: str | Path, dataset: str | None = None,
               num_classes: int | None = None, config_path: str | Path | None = None,
               overrides: list[str] = (), seed: int = 0, input_shape: tuple | None = None,
               preprocess: str | None = None) -> dict:
    """Imports `path` into a new run directory `out`: config.json, metrics.jsonl and an Orbax checkpoint
    at step 0 in the layout `zoo train` writes. `zoo eval OUT` evaluates it and
    `zoo train OUT/config.json --workdir OUT` fine-tunes from it (it resumes from step 0).

    The config is `config_path` (or the defaults) with `overrides`, the model and `dataset` set. With
    no dataset (none given, none in the config) the run is for prediction alone (`import_for_prediction`)."""
    from zoo import config as config_lib
    from zoo.training import step as step_lib
    from zoo.training.setup import Evaluator, build_setup

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise WeightsError(f"'{out}' already exists: give a new --out directory (nothing was written)")
    raw, data = _import_config(model_name, dataset, config_path, overrides, seed)
    if data is None:
        return import_for_prediction(model_name, path, out, raw, num_classes, input_shape, preprocess)
    if preprocess is not None or input_shape is not None:
        raise WeightsError(f"--preprocess and --input-shape are for imports without a dataset; dataset "
                           f"'{data.spec.name}' brings its own: drop them, or drop --dataset")
    spec = data.spec
    if num_classes is not None and num_classes != spec.num_classes:
        raise WeightsError(f"--num-classes {num_classes} differs from the {spec.num_classes} classes of "
                           f"dataset '{spec.name}': use --num-classes {spec.num_classes}")
    given = {k: v for k, v in (raw.get("model") or {}).items() if k != "name"}
    imported = import_weights(model_name, path, num_classes=num_classes, hparams=given,
                              input_shape=spec.input_shape, seed=raw.get("seed", seed))
    if imported.num_classes != spec.num_classes:
        raise WeightsError(f"the head of '{path}' has {imported.num_classes} classes, dataset '{spec.name}' "
                           f"has {spec.num_classes}: pass --num-classes {spec.num_classes} to start a new head")
    raw["model"] = {"name": model_name, **imported.hparams, **given}
    config = config_lib.from_dict(raw)
    run = build_setup(config, data, training=False)  # holds the validation split the config asks for
    state = _filled_state(run, imported, step_lib.replicated(run.mesh))
    metrics = Evaluator(run).splits(state)  # val_* and test_*, as `zoo train` records
    _write_run(out, run, state, metrics, {"path": str(Path(path).absolute()),
                                          "reinitialised": imported.reinitialised})
    return {"run_dir": str(out), "model": model_name, "dataset": spec.name, "hparams": imported.hparams,
            "reinitialised": imported.reinitialised,
            "test": {"loss": metrics["test_loss"], "accuracy": metrics["test_accuracy"]},
            "val": {"loss": metrics["val_loss"], "accuracy": metrics["val_accuracy"]} if "val_loss" in metrics else None}


def _import_config(model_name: str, dataset, config_path, overrides, seed: int):
    """(the raw config of the new run, its dataset) from `config_path` (or the defaults) and `overrides`."""
    from zoo import config as config_lib
    from zoo.data import load_dataset

    raw = config_lib.load_yaml(config_path) if config_path else {
        "name": f"import_{model_name}", "seed": seed, "train": {"steps": 1000}}
    raw = config_lib.apply_overrides(raw, list(overrides))
    if raw.get("task", "classify") != "classify":  # imported heads are class logits (issue 24)
        raise WeightsError(f"zoo import makes classification runs, and the config is task '{raw['task']}': "
                           "import without it, then fine-tune with init_from (docs/checkpoints.md)")
    raw.setdefault("data", {})
    if dataset:
        raw["data"]["name"] = dataset
    if "name" not in raw["data"]:
        return raw, None  # for prediction alone
    return raw, load_dataset(raw["data"]["name"])


PREDICTION_ONLY = "weights only"  # the dataset name a run imported without a dataset records


def import_for_prediction(model_name: str, path: str | Path, out: Path, raw: dict, num_classes: int | None,
                          input_shape: tuple | None, preprocess: str | None) -> dict:
    """A run directory `out` for prediction alone: the weights at step 0, the input shape the file
    implies (or `input_shape`), and the weights' own preprocessing (`preprocess`, else the family's
    DEFAULT_PREPROCESSING) recorded in its data spec, which `zoo predict`, `load_run` and export apply.
    No data is read and nothing is evaluated: `zoo eval` refuses such a run in one line."""
    from zoo import config as config_lib
    from zoo.data import DataSpec
    from zoo.training import step as step_lib
    from zoo.training.setup import assemble_setup

    family = _family(model_name)
    preprocess = preprocess or DEFAULT_PREPROCESSING[family]
    if preprocess not in PREPROCESSING:
        raise WeightsError(f"--preprocess '{preprocess}' is not one zoo knows: choose {', '.join(PREPROCESSING)}")
    if family == rnn.FAMILY and input_shape is None:
        raise WeightsError(f"a recurrent net takes any number of steps: pass --input-shape STEPS,FEATURES for "
                           f"{model_name} (the run predicts on inputs of that shape)")
    given = {k: v for k, v in (raw.get("model") or {}).items() if k != "name"}
    imported = import_weights(model_name, path, num_classes=num_classes, hparams=given, input_shape=input_shape,
                              seed=raw.get("seed", 0))
    shape = tuple(imported.input_shape)
    normalization = PREPROCESSING[preprocess]
    if normalization is not None:
        if len(shape) != 3 or shape[-1] != len(normalization["mean"]):
            raise WeightsError(f"--preprocess {preprocess} is for RGB images, and {model_name} takes inputs of "
                               f"shape {shape}: pass --preprocess none")
        normalization = {**normalization, "shape": [shape[-1]], "range": [0, 255]}
    spec = DataSpec(PREDICTION_ONLY, shape, "image" if len(shape) == 3 else "signal", imported.num_classes,
                    source={"kind": "import", "path": str(Path(path).absolute()), "preprocess": preprocess},
                    normalization=normalization)
    raw["model"], raw["data"] = {"name": model_name, **imported.hparams, **given}, {"name": PREDICTION_ONLY}
    run = assemble_setup(config_lib.from_dict(raw), spec)
    # every variable comes from the file (or import_weights' fresh head): no initialisation to compile
    state = _filled_state(run, imported, step_lib.replicated(run.mesh))
    _write_run(out, run, state, {}, {"path": str(Path(path).absolute()), "reinitialised": imported.reinitialised,
                                     "preprocess": preprocess, "prediction_only": True})
    return {"run_dir": str(out), "model": model_name, "dataset": None, "hparams": imported.hparams,
            "reinitialised": imported.reinitialised, "input_shape": list(shape), "preprocess": preprocess,
            "test": None, "val": None}


def _filled_state(run, imported: Imported, sharding):
    """A fresh train state of `run` holding the imported variables (and the optimizer state for them;
    the moving average of a config with train.ema starts from them too)."""
    from zoo.training import state as state_lib

    template = run.abstract_state()
    variables = {"params": _fill(template.params, imported.variables["params"], None),
                 **_fill(template.model_state, {k: v for k, v in imported.variables.items() if k != "params"}, None)}
    return jax.device_put(state_lib.from_variables(variables, run.tx, run.config.seed, run.ema), sharding)


def _write_run(out: Path, run, state, metrics: dict, imported_from: dict) -> None:
    """The run directory `out`, written in a staging directory beside it and renamed into place."""
    import json
    import os
    import shutil
    import tempfile

    from zoo.data.batching import Position
    from zoo.rundir import CONFIG_FILE, METRICS_FILE
    from zoo.training.setup import checkpoints_for

    config = run.config
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=out.parent))
    try:
        checkpoints = checkpoints_for(staging, config, has_validation=run.dataset is not None
                                      and run.dataset.has_validation)
        meta = {"config": config.to_dict(), "spec": run.spec.to_json(), "model": config.model.name,
                "family": run.model.info.family, "param_count": models.count_params(state.params),
                "devices": jax.device_count(), "position": dataclasses.asdict(Position()),
                "imported_from": imported_from}
        checkpoints.save(0, state, meta, metrics)
        checkpoints.close()
        (staging / CONFIG_FILE).write_text(json.dumps(config.to_dict()))
        (staging / METRICS_FILE).write_text("".join(
            json.dumps({"step": 0, "split": split, "loss": metrics[f"{split}_loss"],
                        "accuracy": metrics[f"{split}_accuracy"]}) + "\n"
            for split in ("val", "test") if f"{split}_loss" in metrics))
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fill(template, values: dict, sharding):
    """`template`'s tree with each leaf replaced by the array at the same path in `values`."""
    def leaf(path, old):
        array = np.asarray(_get(values, _key(path)), old.dtype)
        return array if sharding is None else jax.device_put(array, sharding)
    return jax.tree_util.tree_map_with_path(leaf, template)
