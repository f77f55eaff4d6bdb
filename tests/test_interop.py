"""Import of PyTorch weights (parity with torchvision, timm, torch.nn), jax.export and ONNX export, predict.

The torch tests skip cleanly without torch/torchvision/timm (the bench extra plus
`pip install --no-deps torchvision timm`); the ONNX tests without jax2onnx/onnxruntime."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np
import pytest

from conftest import CHEAP_COMPILE, FAMILY_RUNS, REPO

RTOL = 2e-5


def _torch():
    return pytest.importorskip("torch")


def _torchvision():
    _torch()
    # The registry's torchvision wheel is a CUDA build: beside CPU torch its C++ ops fail to register
    # while importing; the models need none of them.
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    return pytest.importorskip("torchvision")


def _save(module, path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return path


def _zoo_logits(name, path, x, **kw):
    from zoo import models
    from zoo.interop.importer import import_weights

    imported = import_weights(name, path, **kw)
    model = models.build(name, imported.num_classes, **imported.hparams)
    return np.asarray(model.apply(imported.variables, x, train=False)[0])


def _assert_close(ours, reference):
    scale = np.abs(reference).max()
    assert np.abs(ours - reference).max() <= RTOL * scale, np.abs(ours - reference).max() / scale


@pytest.mark.slow
def test_resnet18_logits_match_torchvision(tmp_path):
    torch, torchvision = _torch(), _torchvision()
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=7).eval()
    for m in net.modules():  # non-trivial running statistics, so that carrying them is checked
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = net(x).numpy()
    ours = _zoo_logits("resnet18", _save(net, tmp_path / "r18.safetensors"), x.permute(0, 2, 3, 1).numpy())
    _assert_close(ours, reference)


@pytest.mark.slow
def test_vit_tiny_logits_match_timm(tmp_path):
    torch = _torch()
    timm = pytest.importorskip("timm")
    from zoo import models

    torch.manual_seed(0)
    kwargs = {}
    if "activation" not in models.hparam_fields("vit_tiny"):  # no exact-GELU option yet: tanh in timm
        kwargs["act_layer"] = lambda: torch.nn.GELU(approximate="tanh")
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, **kwargs).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        reference = net(x).numpy()
    ours = _zoo_logits("vit_tiny", _save(net, tmp_path / "vit.safetensors"), x.permute(0, 2, 3, 1).numpy())
    _assert_close(ours, reference)


def _recurrent(torch, cell, **kw):
    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = cell(batch_first=True, **kw)
            self.fc = torch.nn.Linear(kw["hidden_size"] * (2 if kw.get("bidirectional") else 1), 10)

        def forward(self, x):
            _, h = self.rnn(x)
            h = h[0] if isinstance(h, tuple) else h
            return self.fc(torch.cat([h[-2], h[-1]], -1) if self.rnn.bidirectional else h[-1])

    return Classifier().eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_recurrent_logits_match_torch_nn(tmp_path, name):
    torch = _torch()
    cell = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[name]
    torch.manual_seed(0)
    net = _recurrent(torch, cell, input_size=8, hidden_size=16, num_layers=2, bidirectional=True)
    x = torch.randn(3, 8, 8)
    with torch.no_grad():
        reference = net(x).numpy()
    _assert_close(_zoo_logits(name, _save(net, tmp_path / "w.safetensors"), x.numpy()), reference)


@pytest.fixture
def lstm_file(tmp_path):
    torch = _torch()
    torch.manual_seed(0)
    return lambda classes=10: _save(_recurrent(torch, torch.nn.LSTM, input_size=8, hidden_size=16)
                                    if classes == 10 else _classes(torch, classes), tmp_path / f"lstm{classes}.safetensors")


def _classes(torch, classes):
    net = _recurrent(torch, torch.nn.LSTM, input_size=8, hidden_size=16)
    net.fc = torch.nn.Linear(16, classes)
    return net


@pytest.mark.slow
def test_truncated_weights_file_is_refused_in_one_line(zoo_main, one_line_error, lstm_file, tmp_path):
    path = lstm_file()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:1000])
    status, _, err = zoo_main("import", "lstm", cut, "--out", tmp_path / "run", "--dataset", "digits")
    assert status == 2
    one_line_error(err, "truncated")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_mismatched_weights_file_lists_the_unmatched_names(zoo_main, one_line_error, lstm_file, tmp_path):
    status, _, err = zoo_main("import", "resnet18", lstm_file(), "--out", tmp_path / "run", "--dataset", "digits")
    assert status == 2
    one_line_error(err, "missing from the file: conv1.weight", "unused tensors: rnn.bias_hh_l0")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_head_of_another_class_count_needs_num_classes(zoo_main, one_line_error, lstm_file, tmp_path):
    status, _, err = zoo_main("import", "lstm", lstm_file(3), "--out", tmp_path / "run", "--dataset", "digits")
    assert status == 2
    one_line_error(err, "--num-classes 10")


@pytest.mark.slow
def test_imported_run_is_accepted_by_zoo_eval(zoo_main, lstm_file, tmp_path):
    status, out, _ = zoo_main("import", "lstm", lstm_file(3), "--out", tmp_path / "run", "--dataset", "digits",
                              "--num-classes", "10")
    assert status == 0, out
    status, out, _ = zoo_main("eval", tmp_path / "run", "--json")
    assert status == 0
    result = json.loads(out)
    assert result["step"] == 0 and result["model"] == "lstm"
    assert result["test"]["accuracy"] == pytest.approx(result["recorded"]["test_accuracy"])
    assert result["val"]["accuracy"] == pytest.approx(result["recorded"]["val_accuracy"])


# Export ------------------------------------------------------------------------------------------



@pytest.fixture
def trained(family_run):
    """trained(family) -> the session's tiny run of that family (conftest.FAMILY_RUNS)."""
    return family_run


def _digits(n=5):
    from zoo.data import load_dataset

    return load_dataset("digits").x_test[:n]


def _run_probabilities(run_dir, x):
    """The run's own probabilities (its model, restored from the checkpoint), jitted once."""
    import jax

    from zoo.interop.export import load_inference

    probabilities, _ = load_inference(run_dir)
    return np.asarray(jax.jit(probabilities, compiler_options=CHEAP_COMPILE)(x))


@pytest.mark.slow
def test_predict_from_export_never_imports_models_and_matches_the_run(trained, tmp_path, cli_env):
    from zoo.interop.export import export_run

    run_dir = trained("mlp")
    export_run(run_dir, tmp_path / "model.zoo")
    x = _digits()
    np.save(tmp_path / "x.npy", x)
    script = ("import json, sys; from zoo import cli; cli.main(['predict', sys.argv[1], sys.argv[2], '--json']); "
              "print(json.dumps(sorted(m for m in sys.modules if m.startswith('zoo.'))))")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "model.zoo"), str(tmp_path / "x.npy")],
                          cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result_line, modules_line = done.stdout.strip().splitlines()[-2:]
    modules = json.loads(modules_line)
    assert not [m for m in modules if m.startswith(("zoo.models", "zoo.training", "zoo.data"))], modules
    got = np.array([row["probabilities"] for row in json.loads(result_line)])
    np.testing.assert_allclose(got, _run_probabilities(run_dir, x), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILY_RUNS))
def test_every_family_exports_with_a_symbolic_batch(trained, tmp_path, family):
    from zoo.interop import artifact
    from zoo.interop.export import export_run

    run_dir = trained(family)
    export_run(run_dir, tmp_path / "model.zoo")
    header, call = artifact.load(tmp_path / "model.zoo")
    assert header["batch"] == "symbolic" and header["input_shape"] == [8, 8, 1]
    x = _digits(4)
    expected = _run_probabilities(run_dir, x)
    for n in (1, 4):  # two batch sizes through one export
        np.testing.assert_allclose(np.asarray(call(x[:n])), expected[:n], atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILY_RUNS))
def test_onnx_export_matches_jax_in_onnxruntime(trained, tmp_path, family):
    pytest.importorskip("jax2onnx")
    pytest.importorskip("onnxruntime")
    from zoo.interop.export import export_run
    from zoo.interop.onnx_export import run_onnx

    run_dir = trained(family)
    result = export_run(run_dir, tmp_path / "model.onnx", fmt="onnx")
    x = _digits(4 if result["header"]["batch"] == "symbolic" else int(result["header"]["batch"]))
    got = run_onnx((tmp_path / "model.onnx").read_bytes(), x)
    np.testing.assert_allclose(got, _run_probabilities(run_dir, x), atol=1e-5)


def test_export_of_a_missing_run_is_refused_in_one_line(zoo_main, one_line_error, tmp_path):
    status, _, err = zoo_main("export", tmp_path / "nothing", "--out", tmp_path / "m.zoo")
    assert status == 2
    one_line_error(err, "does not exist")
    assert not (tmp_path / "m.zoo").exists()


def test_export_to_an_unknown_format_is_refused_in_one_line(zoo_main, one_line_error, tmp_path):
    status, _, err = zoo_main("export", tmp_path, "--out", tmp_path / "m.zoo", "--format", "tflite")
    assert status == 2
    one_line_error(err, "unknown export format 'tflite'")


def test_predict_from_a_file_that_is_not_an_export_is_refused_in_one_line(zoo_main, one_line_error, tmp_path):
    (tmp_path / "m.zoo").write_bytes(b"not an export")
    np.save(tmp_path / "x.npy", np.zeros((8, 8, 1), np.float32))
    status, _, err = zoo_main("predict", tmp_path / "m.zoo", tmp_path / "x.npy")
    assert status == 2
    one_line_error(err, "is not a zoo export")


@pytest.mark.slow
def test_predict_input_of_the_wrong_shape_is_refused_in_one_line(zoo_main, one_line_error, trained, tmp_path):
    from zoo.interop.export import export_run

    export_run(trained("mlp"), tmp_path / "model.zoo")
    np.save(tmp_path / "x.npy", np.zeros((3, 5), np.float32))
    status, _, err = zoo_main("predict", tmp_path / "model.zoo", tmp_path / "x.npy")
    assert status == 2
    one_line_error(err, "has shape (3, 5)", "(8, 8, 1)")
