"""Hardening against hostile networks and files (issue 26): the coordinator service of a local
multi-process run listens on loopback only; a `.zoo` export that calls native code zoo exports never
contain is refused before it runs; a run directory's stored XLA options cannot make XLA write files;
export never follows a link planted at its temporary file's name."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from conftest import REPO, TINY, merged

TIMEOUT = 150  # seconds a group of zoo processes may take before the test fails (and kills them)


# Item 1: the coordinator of `zoo launch --local` listens on loopback only -------------------------

def _descendants(root: int) -> set[int]:
    """`root` and every process below it (from /proc/*/stat)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in found]
        found.update(children)
        frontier.extend(children)
    return found


def _socket_inodes(pids: set[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    return inodes


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address of /proc/net/tcp{,6}: 32-bit words in host (little-endian) byte order."""
    words = [bytes.fromhex(hex_address[i:i + 8])[::-1] for i in range(0, len(hex_address), 8)]
    return ipaddress.ip_address(b"".join(words))


def _listening(inodes: set[str]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state among `inodes`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                host, port = fields[1].split(":")
                found.add((str(_address(host)), int(port, 16)))
    return found


def _is_loopback(address: str) -> bool:
    parsed = ipaddress.ip_address(address)
    mapped = getattr(parsed, "ipv4_mapped", None)
    return parsed.is_loopback or bool(mapped and mapped.is_loopback)


@pytest.mark.slow
def test_a_local_launch_listens_on_loopback_only(tmp_path, cli_env):
    """While `zoo launch --local 2` trains a tiny MLP, every TCP socket any of its processes listens
    on (the coordinator service of process 0, gloo's) is bound to a loopback address."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(merged(TINY, {"train": {"steps": 60, "log_every": 20},
                                                   "checkpoint": {"every": 60}})))
    launcher = subprocess.Popen([sys.executable, "-m", "zoo.cli", "launch", "--local", "2", "--", "train",
                                 str(config), "--workdir", str(tmp_path / "run")], cwd=REPO, env=cli_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, deadline = set(), time.monotonic() + TIMEOUT
    try:
        while launcher.poll() is None and time.monotonic() < deadline:
            seen |= _listening(_socket_inodes(_descendants(launcher.pid)))
            time.sleep(0.02)
    finally:
        if launcher.poll() is None:
            launcher.kill()
        _, stderr = launcher.communicate()
    assert launcher.returncode == 0, stderr
    assert seen, "no listening socket of the run was ever seen"
    assert [address for address, _ in seen if not _is_loopback(address)] == [], seen


@pytest.mark.slow
def test_a_coordinator_address_that_is_not_this_machines_is_refused_on_process_0_in_one_line(
        write_config, zoo_process, one_line_error, tmp_path):
    """Process 0 listens where --coordinator says, so an address of another machine (192.0.2.1, a
    documentation-only address) is refused at once, naming --coordinator-bind, and nothing is written."""
    result = zoo_process("train", write_config(), "--workdir", tmp_path / "run", "--coordinator", "192.0.2.1:29517",
                         "--num-processes", 2, "--process-id", 0, timeout=60)
    assert result.returncode == 2, result.stderr
    one_line_error(result.stderr, "'192.0.2.1' is not an address of this machine", "--coordinator-bind")
    assert not (tmp_path / "run").exists()


def test_the_coordinator_listens_on_the_host_it_is_given_or_where_bind_says(monkeypatch):
    """Process 0's bind address: the --coordinator host (never every interface), else --coordinator-bind
    or $ZOO_COORDINATOR_BIND (a bare host takes the coordinator's port); JAX's default only when
    neither an address nor a bind is known (cluster detection)."""
    from zoo.distributed import bind_address

    for name in ("ZOO_COORDINATOR_BIND", "JAX_COORDINATOR_BIND_ADDRESS", "JAX_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    assert bind_address("127.0.0.1:29517", None, 0) == "127.0.0.1:29517"
    assert bind_address("localhost:29517", None, 0) == "localhost:29517"
    assert bind_address("127.0.0.1:29517", "0.0.0.0", 0) == "0.0.0.0:29517"
    assert bind_address("127.0.0.1:29517", "::1", 0) == "[::1]:29517"
    assert bind_address("192.0.2.1:29517", None, 1) == "192.0.2.1:29517"  # only process 0 listens
    assert bind_address(None, None, None) is None
    monkeypatch.setenv("ZOO_COORDINATOR_BIND", "127.0.0.1:29600")
    assert bind_address("127.0.0.1:29517", None, 0) == "127.0.0.1:29600"


# Item 2: exports that call native code zoo exports never contain ---------------------------------

CALLBACK = ("%cb = stablehlo.custom_call @xla_ffi_python_cpu_callback(%arg0) {api_version = 4 : i32, "
            "backend_config = {index = 0 : ui64}, has_side_effect = true} : (tensor<1x8x8x1xf32>) -> "
            "tensor<1x8x8x1xf32>\n")


@pytest.fixture
def trained(family_run):
    """trained(family) -> the session's tiny run of that family (conftest.FAMILY_RUNS)."""
    return family_run


def _platform() -> str:
    import jax

    return {"gpu": "cuda"}.get(jax.default_backend(), jax.default_backend())


def _write_hostile_export(path: Path) -> None:
    """A .zoo file whose module calls the Python CPU callback with a made-up callback index (what a
    crafted file can do: jax.export refuses callbacks when exporting, not when loading)."""
    import jax
    from jax._src.export import _export
    from jax._src.interpreters import mlir
    from jax._src.lib.mlir import ir

    from zoo.interop import artifact

    def probabilities(x):
        return jax.nn.softmax(x.reshape(x.shape[0], -1)[:, :10], axis=-1)

    exported = jax.export.export(jax.jit(probabilities), platforms=[_platform()])(
        jax.ShapeDtypeStruct((1, 8, 8, 1), np.float32))
    text, main = exported.mlir_module(), re.compile(r"(func\.func public @main\([^\n]*\{\n)")
    assert main.search(text)
    with mlir.make_ir_context():
        payload = _export._module_to_bytecode(ir.Module.parse(main.sub(lambda m: m.group(1) + CALLBACK, text, 1)))
    header = {"format": "zoo", "model": "mlp", "run_step": 2, "input_shape": [8, 8, 1], "dtype": "float32",
              "batch": "1", "class_names": [str(i) for i in range(10)], "platforms": [_platform()],
              "outputs": "probabilities", "preprocess": "identity", "raw_uint8": False}
    artifact.write(path, header, dataclasses.replace(exported, mlir_module_serialized=payload).serialize())


@pytest.mark.slow
def test_an_export_calling_native_code_outside_the_allowlist_is_refused_by_zoo_predict_in_one_line(
        tmp_path, zoo_process, one_line_error):
    """`zoo predict` on a .zoo whose module names the custom call `xla_ffi_python_cpu_callback`
    (before: a segfault, exit 139) exits 2 with one line naming the call, before running anything."""
    _write_hostile_export(tmp_path / "hostile.zoo")
    np.save(tmp_path / "x.npy", np.zeros((8, 8, 1), np.float32))
    result = zoo_process("predict", tmp_path / "hostile.zoo", tmp_path / "x.npy", timeout=120)
    assert result.returncode == 2, (result.returncode, result.stderr)
    one_line_error(result.stderr, "'xla_ffi_python_cpu_callback'", "shape_assertion", "hostile.zoo")
    assert result.stdout == ""


def test_custom_calls_are_read_from_the_module_text_and_unrecognised_forms_do_not_pass():
    """Every custom call of a module's text is found: printed form, quoted target names, and a
    generic or other-dialect form (which reads as '?', never an allowed name)."""
    from zoo.interop.artifact import ALLOWED_CUSTOM_CALLS, custom_call_targets

    text = ('stablehlo.custom_call @shape_assertion(%1, %0) {error_message = "no custom_call here"}\n'
            'stablehlo.custom_call @"odd name"(%2)\n"stablehlo.custom_call"(%3) <{call_target_name = "x"}>\n'
            'mhlo.custom_call @y(%4)\n  loc("/home/custom_call/train.py":1:2)')
    assert custom_call_targets(text) == ["shape_assertion", "odd name", "?", "?"]
    assert set(ALLOWED_CUSTOM_CALLS) == {"cpu", "cuda", "rocm", "tpu"}
    assert all("?" not in names for names in ALLOWED_CUSTOM_CALLS.values())


def _digits(n: int) -> np.ndarray:
    from zoo.data import load_dataset

    return load_dataset("digits").x_test[:n]


@pytest.mark.slow
def test_a_real_export_still_loads_and_predicts_through_the_cli(trained, tmp_path, zoo_main):
    """A real `zoo export` passes the custom-call check: `zoo predict` on it exits 0 with one row per
    input, matching the run directory's own predictions. Every family's export goes through the same
    check in `artifact.load` (tests/test_interop.py::test_every_family_exports_with_a_symbolic_batch)."""
    name = "mlp"
    status, _, err = zoo_main("export", trained(name), "--out", tmp_path / "model.zoo")
    assert status == 0, err
    np.save(tmp_path / "x.npy", _digits(3))
    rows = {}
    for target in (tmp_path / "model.zoo", trained(name)):
        status, out, err = zoo_main("predict", target, tmp_path / "x.npy", "--json")
        assert status == 0, err
        rows[target.suffix] = json.loads(out)
    assert len(rows[".zoo"]) == 3
    np.testing.assert_allclose([r["probabilities"] for r in rows[".zoo"]],
                               [r["probabilities"] for r in rows[""]], atol=1e-6)


# Item 3: a run directory's stored XLA options cannot make XLA write files -------------------------

def _plant_xla_options(run_dir: Path, options: dict) -> None:
    """Writes `options` as train.xla_options into the run's config.json and every checkpoint's meta."""
    from zoo import checkpoint as ckpt

    documents = [run_dir / "config.json", *sorted((run_dir / "checkpoints").glob("*/meta/metadata"))]
    assert len(documents) > 1, documents
    for path in documents:
        document = json.loads(path.read_text())
        config = document["config"] if "config" in document else document
        config["train"]["xla_options"] = options
        if ckpt.META_CHECKSUM in document:  # re-sealed: the allowlist, not the checksum, is under test
            document[ckpt.META_CHECKSUM] = ckpt.meta_checksum(document)
        path.write_text(json.dumps(document))


def _env_without_compile_cache(cli_env) -> dict:
    """No persistent compilation cache: a cache hit would skip the compile (and so the dump)."""
    return {key: value for key, value in cli_env().items() if not key.startswith(("JAX_COMPILATION_CACHE",
                                                                                  "JAX_PERSISTENT_CACHE"))}


@pytest.fixture
def dumping_run(trained, tmp_path) -> tuple[Path, Path]:
    """(a copy of the mlp run whose stored config says xla_dump_to: DUMP, DUMP (not there yet))."""
    import shutil

    run_dir, dump = Path(shutil.copytree(trained("mlp"), tmp_path / "run")), tmp_path / "dump"
    _plant_xla_options(run_dir, {"xla_dump_to": str(dump)})
    np.save(tmp_path / "x.npy", np.zeros((8, 8, 1), np.float32))
    return run_dir, dump


@pytest.mark.slow
@pytest.mark.parametrize("command", ["eval", "predict"])
def test_a_stored_xla_dump_to_writes_nothing_and_is_refused_in_one_line(command, dumping_run, cli_env, snapshot,
                                                                        one_line_error):
    """`zoo eval RUN` and `zoo predict RUN X` on a run directory whose stored config names
    `xla_dump_to: DUMP` exit 2 with one line naming the option and the allowed ones; DUMP is never
    created and the run directory is unchanged."""
    run_dir, dump = dumping_run
    args = [command, str(run_dir)] + ([str(run_dir.parent / "x.npy")] if command == "predict" else [])
    before = snapshot(run_dir)
    result = subprocess.run([sys.executable, "-m", "zoo.cli", *args], cwd=REPO, capture_output=True, text=True,
                            env=_env_without_compile_cache(cli_env), timeout=300)
    assert not dump.exists(), sorted(p.name for p in dump.iterdir())[:5]
    assert result.returncode == 2, result.stderr
    one_line_error(result.stderr, "'xla_dump_to'", "xla_cpu_experimental_ynn_fusion_type")
    assert snapshot(run_dir) == before


def test_training_with_xla_dump_to_is_refused_in_one_line_and_writes_nothing(write_config, zoo_main, tmp_path,
                                                                           one_line_error):
    """`zoo train` of a config whose train.xla_options names xla_dump_to exits 2 with one line naming
    it and the allowed options; neither the dump directory nor the run directory appears."""
    config = write_config({"train": {"xla_options": {"xla_dump_to": str(tmp_path / "dump")}}})
    status, out, err = zoo_main("train", config, "--workdir", tmp_path / "run")
    assert status == 2, err
    one_line_error(err, "train.xla_options", "'xla_dump_to'", "xla_cpu_experimental_ynn_fusion_type")
    assert not (tmp_path / "dump").exists() and not (tmp_path / "run").exists()


def test_compiler_options_refuses_an_option_outside_the_allowlist():
    """`compiler_options`, which every jitted train, eval and predict function goes through, raises a
    ConfigError naming an unknown option and passes each known performance option on unchanged."""
    from zoo.errors import ConfigError
    from zoo.training import step as step_lib

    with pytest.raises(ConfigError, match=r"'xla_dump_to' is not an XLA option.*xla_cpu_experimental_ynn"):
        step_lib.compiler_options(True, "cpu", "mlp", {"xla_dump_to": "/tmp/anywhere"})
    for name in step_lib.KNOWN_XLA_OPTIONS:
        assert step_lib.compiler_options(True, "tpu", "mlp", {name: True}) == {name: True}


# Item 4: export writes through a uniquely named temporary file ----------------------------------

@pytest.fixture
def planted_link(tmp_path) -> tuple[Path, Path]:
    """(the victim file, the output directory) with a link `.m.zoo.tmp` and `.m.onnx.tmp` -> victim."""
    victim, out_dir = tmp_path / "victim.txt", tmp_path / "out"
    victim.write_text("precious")
    out_dir.mkdir()
    for name in ("m.zoo", "m.onnx"):
        (out_dir / f".{name}.tmp").symlink_to(victim)
    return victim, out_dir


def _link_and_victim_unchanged(victim: Path, link: Path) -> None:
    assert link.is_symlink() and os.readlink(link) == str(victim)
    assert victim.read_text() == "precious"


@pytest.mark.slow
def test_export_leaves_a_link_at_the_old_temporary_name_and_its_target_alone(trained, planted_link, zoo_main):
    """`zoo export RUN --out DIR/m.zoo` with a link DIR/.m.zoo.tmp -> victim planted: the link and
    the victim are unchanged, and DIR/m.zoo is a readable export."""
    from zoo.interop import artifact

    victim, out_dir = planted_link
    status, _, err = zoo_main("export", trained("mlp"), "--out", out_dir / "m.zoo")
    assert status == 0, err
    _link_and_victim_unchanged(victim, out_dir / ".m.zoo.tmp")
    assert artifact.read(out_dir / "m.zoo")[0]["model"] == "mlp"
    assert not (out_dir / "m.zoo").is_symlink()


def test_onnx_export_leaves_a_link_at_the_old_temporary_name_and_its_target_alone(planted_link, monkeypatch):
    """The ONNX writer, with DIR/.m.onnx.tmp -> victim planted: the link and the victim are unchanged
    and DIR/m.onnx holds the model (the converter and onnxruntime are stand-ins here)."""
    from zoo.interop import onnx_export

    victim, out_dir = planted_link
    monkeypatch.setattr(onnx_export, "convert", lambda *a: SimpleNamespace(SerializeToString=lambda: b"onnx model"))
    monkeypatch.setattr(onnx_export, "run_onnx", lambda data, x: np.full((len(x), 2), 0.5, np.float32))
    spec = SimpleNamespace(dtype="float32", input_shape=(3,), vocab_size=None)
    probabilities = lambda x: np.full((len(x), 2), 0.5, np.float32)  # noqa: E731
    assert onnx_export.write(probabilities, spec, {"model": "mlp"}, out_dir / "m.onnx") == "symbolic"
    _link_and_victim_unchanged(victim, out_dir / ".m.onnx.tmp")
    assert (out_dir / "m.onnx").read_bytes() == b"onnx model"
