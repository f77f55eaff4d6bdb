"""Shared fixtures: tiny configs written into tmp_path, the CLI in-process or in a subprocess, and
snapshots of a directory tree (to show that a refused command changed nothing on disk)."""

from __future__ import annotations

import copy
import hashlib
import shutil
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# The platform under test: the user's JAX_PLATFORMS (`JAX_PLATFORMS=cuda make test` on a GPU), else cpu.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
PLATFORM = os.environ["JAX_PLATFORMS"].split(",")[0]
if PLATFORM != "cpu":
    import jax

    # GPUs (TF32) and TPUs (bfloat16 passes) multiply float32 in reduced precision by default; the
    # tests compare numbers against float32 references.
    jax.config.update("jax_default_matmul_precision", "highest")

# Every test compiles its programs once and runs them for a few steps at most: on CPU, LLVM at -O0 and
# XLA's older CPU emitters compile in well under half the time (test_models + test_precision, loaded
# machine: 381 -> 162 s). Neither allows fast math, so compared numbers keep their tolerances; zoo
# subprocesses get the same flags (cli_env), so runs compared bit for bit across processes compile alike.
# Speed is measured by benchmarks/, which never sees these flags.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false" if PLATFORM == "cpu" else ""
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()


def subprocess_xla_flags(devices: int = 1) -> str:
    """XLA_FLAGS for a test's subprocess: the tests' compile flags, and `devices` host devices."""
    count = f" --xla_force_host_platform_device_count={devices}" if devices > 1 else ""
    return f"{TEST_XLA_FLAGS}{count}".strip()


# Beyond matmul precision, accelerators sum in other orders (cuDNN's algorithms, TPU reductions).
_TOLERANCE_SCALE = {"cpu": 1, "cuda": 10, "gpu": 10, "rocm": 10, "tpu": 100}


def tolerance(rtol: float, atol: float = 0.0) -> dict:
    """{'rtol', 'atol'} for the platform under test: the CPU figures, scaled on GPU and TPU."""
    scale = _TOLERANCE_SCALE.get(PLATFORM, 100)
    return {"rtol": rtol * scale, "atol": atol * scale}


REPO = Path(__file__).resolve().parents[1]

# For tests that compile a model once to compare numbers (not to time it): LLVM at -O0 and XLA's
# older CPU emitters compile a ResNet in a quarter of the time; neither allows fast math, so the
# numbers compared keep their tolerances.
CHEAP_COMPILE = ({"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
                 if PLATFORM == "cpu" else None)

# A config that trains in well under a second: every test starts from it and overrides a few keys.
TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {"name": "digits", "batch_size": 32, "eval_batch_size": 360},
    "model": {"name": "mlp", "hidden_sizes": [16]},
    "optimizer": {"name": "adam", "learning_rate": 3e-3, "schedule": "cosine"},
    "train": {"steps": 20, "log_every": 5},
    "checkpoint": {"every": 10, "keep": 2, "keep_best": 1},
}


def all_equations(jaxpr):
    """Every equation of a jaxpr and, in order, of the jaxprs inside it (scan, cond, custom_jvp, pjit)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in (param if isinstance(param, (list, tuple)) else [param]):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from all_equations(inner)


def merged(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` merged in, section by section."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        both_sections = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merged(out[key], value) if both_sections else value
    return out


@pytest.fixture(scope="session", autouse=True)
def zoo_cache_dir(tmp_path_factory) -> Path:
    """$ZOO_CACHE_DIR for the session, in pytest's temporary directory: a CLI run in a test (in this
    process or a subprocess) never writes into the user's ~/.cache/zoo."""
    path = tmp_path_factory.mktemp("zoo_cache")
    os.environ["ZOO_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory) -> Path:
    """One persistent XLA compilation cache for the session (in-process and subprocesses alike)."""
    import jax

    path = tmp_path_factory.mktemp("jax_cache")
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


@pytest.fixture(scope="session")
def tiny_config(compile_cache):
    """tiny_config(overrides=None) -> a validated `Config`: TINY with `overrides` merged in."""
    from zoo.config import from_dict

    return lambda overrides=None: from_dict(merged(TINY, overrides or {}))


@pytest.fixture
def write_config(tmp_path):
    """write_config(overrides=None, replace=None, text=None, name='config.yaml') -> a YAML config in
    tmp_path: TINY with `overrides` merged in and whole sections of `replace` put in place (or `text`)."""

    def write(overrides: dict | None = None, replace: dict | None = None, text: str | None = None,
              name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text if text is not None else yaml.safe_dump({**merged(TINY, overrides or {}),
                                                                      **(replace or {})}))
        return path

    return write


@pytest.fixture
def cli_env(compile_cache):
    """cli_env(devices=1) -> the environment for a `zoo` subprocess: one device of the platform under
    test, or `devices` simulated CPU devices."""

    def env(devices: int = 1) -> dict:
        platform = os.environ["JAX_PLATFORMS"] if devices == 1 else "cpu"
        out = {**os.environ, "JAX_PLATFORMS": platform, "JAX_COMPILATION_CACHE_DIR": str(compile_cache),
               "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
               "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
        out["XLA_FLAGS"] = subprocess_xla_flags(devices)
        return out

    return env


@pytest.fixture
def zoo_process(cli_env):
    """zoo_process(*args, devices=1, wait=True) -> CompletedProcess (or Popen with wait=False) of
    `python -m zoo.cli ARGS`, run in the repository root."""

    def start(*args, devices: int = 1, wait: bool = True, timeout: float = 300):
        command = [sys.executable, "-m", "zoo.cli", *map(str, args)]
        if wait:
            return subprocess.run(command, cwd=REPO, env=cli_env(devices), capture_output=True, text=True,
                                  timeout=timeout)
        return subprocess.Popen(command, cwd=REPO, env=cli_env(devices), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    return start


@pytest.fixture
def zoo_main(capfd, compile_cache):
    """zoo_main(*args) -> (exit status, stdout, stderr) of the CLI run in this process."""
    from zoo import cli

    def run(*args):
        capfd.readouterr()
        status = cli.main([str(arg) for arg in args])
        out, err = capfd.readouterr()
        return status, out, err

    return run


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every file and directory under `root` with its size, mtime and content hash."""
    root = Path(root)
    if not root.exists():
        return {}
    tree = {}
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        tree[str(path.relative_to(root))] = (stat.st_size if path.is_file() else 0, stat.st_mtime_ns, digest)
    return tree


def _assert_one_line_error(stderr: str, *phrases: str) -> None:
    """`stderr` is exactly one line 'zoo: error: ...' holding every phrase, with no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("zoo: error: "), lines[0]
    assert "Traceback" not in stderr
    for phrase in phrases:
        assert phrase in lines[0], f"{phrase!r} not in {lines[0]!r}"


@pytest.fixture
def snapshot():
    """snapshot(root) -> {relative path: (size, mtime_ns, sha256)} of every file and directory."""
    return _snapshot


@pytest.fixture
def one_line_error():
    """one_line_error(stderr, *phrases): asserts one line 'zoo: error: ...' holding the phrases."""
    return _assert_one_line_error


# `make test-fast` (-m "not slow") runs the cheap registry-wide tests on one model per family, the
# entry whose test settings say `representative` (tests that take over ~1 s carry @pytest.mark.slow
# themselves); `make test` runs them on every model.
def pytest_collection_modifyitems(config, items):
    from zoo import models

    registered = set(models.list_models())
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        name = params.get("name")
        if isinstance(name, str) and name in registered and not models.get_entry(name).test.representative:
            item.add_marker(pytest.mark.slow)


FAMILY_RUNS = {  # a tiny model of each family on digits, for the tests that need a trained run of each
    "mlp": {"name": "mlp", "hidden_sizes": [16]},
    "cnn": {"name": "cnn"},
    "rnn": {"name": "gru", "hidden_size": 8},
    "resnet": {"name": "resnet20", "width": 4},
    "transformer": {"name": "transformer", "width": 16, "depth": 1, "num_heads": 2, "patch_size": 2},
}


@pytest.fixture(scope="session")
def family_run(compile_cache, tmp_path_factory):
    """family_run(family) -> a run directory of FAMILY_RUNS[family], trained 2 steps, made once per
    session (tests copy it before changing it)."""
    from zoo.config import from_dict
    from zoo.training import fit

    made = {}

    def get(family: str) -> Path:
        if family not in made:
            run_dir = tmp_path_factory.mktemp(f"run_{family}") / "run"
            raw = merged(TINY, {"train": {"steps": 2, "log_every": 1}, "checkpoint": {"every": 2}})
            fit(from_dict({**raw, "model": FAMILY_RUNS[family]}), run_dir)
            made[family] = run_dir
        return made[family]

    return get


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, tiny_config) -> Path:
    """A tiny mlp run with checkpoints at steps 10 and 20, trained once for the session."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    from zoo.training import fit

    fit(tiny_config(), run_dir)
    return run_dir


@pytest.fixture
def run_dir(finished_run, tmp_path) -> Path:
    """A copy of the finished run, free to damage."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


@pytest.fixture
def refused_train(tmp_path, write_config, zoo_main, one_line_error, snapshot):
    """refused_train(overrides, *phrases, replace=None, text=None) -> the stderr line: `zoo train` of the tiny
    config with `overrides` exits 2 with one line holding the phrases, and writes nothing."""

    def check(overrides: dict | None, *phrases: str, replace: dict | None = None, text: str | None = None) -> str:
        config = write_config(overrides, replace=replace, text=text)
        before = snapshot(tmp_path)
        status, out, err = zoo_main("train", config, "--workdir", tmp_path / "run")
        assert status == 2, err
        one_line_error(err, *phrases)
        assert out == "" and snapshot(tmp_path) == before
        return err

    return check


# Issue 25: every augmentation and a moving average of the weights, in one tiny run.
EMA_AUGMENT = {"data": {"augment": {"crop_pad": 1, "flip": True, "mixup": 0.4, "cutmix": 1.0}},
               "train": {"steps": 4, "log_every": 2, "ema": {"decay": 0.5, "every": 1}},
               "checkpoint": {"every": 2, "keep": 2}}


@pytest.fixture(scope="session")
def ema_augment_runs(tiny_config, tmp_path_factory) -> tuple[Path, Path]:
    """(uninterrupted, resumed): EMA_AUGMENT trained 4 steps straight, and the same run resumed from its
    step-2 checkpoint (a copy with step 4 deleted, trained again), once for the session."""
    from zoo.training import fit

    root = tmp_path_factory.mktemp("ema_augment")
    fit(tiny_config(EMA_AUGMENT), root / "straight")
    resumed = Path(shutil.copytree(root / "straight", root / "resumed"))
    shutil.rmtree(resumed / "checkpoints" / "4")
    fit(tiny_config(EMA_AUGMENT), resumed)
    return root / "straight", resumed
