"""Mutation testing of the core modules with mutmut; writes tools/MUTATION.md.

    python tools/mutation.py [--sample K] [--seed S] [--budget-s B] [--parallel N] [MODULE ...]
    python tools/mutation.py --retest          # survivors again, against the current tests
    python tools/mutation.py --report-only

mutmut generates every mutant of the core modules in a scratch copy of the repository
(/tmp/zoo-mutation/all, or $ZOO_MUTATION_DIR) and runs the test suite once (`-m "not exhaustive"`)
to record which tests reach each mutated function and how long each takes. A seeded random sample
of K mutants per module (all of a module with fewer) is then run, each against the tests that reach
its function, fastest first, up to B seconds of them, stopping at the first failure.

Each mutant runs in a process forked from a worker that has already imported JAX, Flax, Optax,
Orbax, pytest and every zoo module, but has not started JAX's runtime: forking a process whose XLA
thread pools run hangs (which is why mutmut's own forking runner is not used), forking one that has
only imported them does not. This saves the ~4 s import per mutant; JAX's persistent compilation
cache (in the scratch directory) saves recompiling what a mutant did not change.

Results are kept in tools/mutation.json and merged into the report. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MUTMUT = Path(sys.executable).with_name("mutmut")
SCRATCH = Path(os.environ.get("ZOO_MUTATION_DIR", "/tmp/zoo-mutation")) / "all"
RESULTS, REPORT = REPO / "tools" / "mutation.json", REPO / "tools" / "MUTATION.md"
# What the tests read besides the package: the documents tests/test_readme.py checks, the configs, scripts...
COPIED = ("zoo", "tests", "scripts", "configs", "benchmarks", "tools", "docs", "results", "README.md", "Makefile")

# The core modules, in the report's order.
MODULES = [
    "zoo/training/step.py", "zoo/training/optim.py", "zoo/training/loop.py", "zoo/training/restore.py",
    "zoo/training/state.py", "zoo/training/setup.py", "zoo/training/hooks.py", "zoo/checkpoint.py",
    "zoo/rundir.py", "zoo/comparison/report.py",
    "zoo/data/__init__.py", "zoo/data/batching.py", "zoo/data/pipeline.py", "zoo/data/split.py",
    "zoo/data/source.py", "zoo/data/arrays.py", "zoo/data/npz.py", "zoo/data/csv.py", "zoo/data/idx.py",
    "zoo/data/image_folder.py", "zoo/data/cifar.py", "zoo/data/digits.py", "zoo/data/mnist1d.py",
    "zoo/models/mlp.py", "zoo/models/cnn.py", "zoo/models/rnn.py", "zoo/models/resnet.py",
    "zoo/models/transformer.py", "zoo/models/layers.py", "zoo/models/common.py",
]
# The tests written for survivors: each names in its docstring the mutants it kills; on --retest a
# survivor runs the ones naming its function, besides the tests that reached it.
# The tests that name the mutants they kill in their docstrings (once tests/test_edges.py).
EDGE_TESTS = ("tests/test_train_step.py", "tests/test_report.py", "tests/test_checkpoint.py",
              "tests/test_data_formats.py", "tests/test_model_layers.py")
# Tests that reach a function only in a subprocess (the test map records hits in the test's own
# process): function -> tests, added to its mutants' tests on --retest.
SUBPROCESS_TESTS = {
    "zoo.training.step.x_put_local_rows": [
        "tests/test_distributed.py::test_final_state_is_bit_equal_to_one_process_with_the_same_device_count"],
    "zoo.training.loop.x__see_token": [
        "tests/test_distributed.py::test_run_directories_that_are_not_shared_are_refused_in_one_line",
        "tests/test_distributed.py::test_final_state_is_bit_equal_to_one_process_with_the_same_device_count"],
    # Not a subprocess, but beyond the first pass's test budget for this function.
    "zoo.training.step.x_train_step_fn": ["tests/test_specifications.py::test_dropout_draws_a_new_mask_every_step"],
    "zoo.training.restore.x_init_from": [
        "tests/test_finetune.py::test_init_from_loads_every_parameter_but_the_skipped_ones"],
}

# Surviving mutants judged by reading them: name (or fnmatch pattern) -> "equivalent: why",
# "removed: why" (the code is gone) or "import-time: why" (not switchable after import).
# Equivalent, removed and import-time mutants leave the score's denominator; each is listed.
TRIAGE: dict[str, str] = {
    "zoo.training.step.x__options_for__mutmut_2": "equivalent on CPU: `deterministic` only adds "
    "xla_gpu_deterministic_ops on a GPU backend; None and True give the same CPU options",
    "zoo.training.step.x_jit_eval_step__mutmut_1": "equivalent on CPU: the default of `deterministic` only "
    "matters on a GPU backend (and every caller passes it)",
    "zoo.data.batching.x_random_shift__mutmut_*": "removed: random_shift had no caller (dead code), deleted",
    "zoo.data.source.x_files_of__mutmut_*": "removed: files_of had no caller (dead code), deleted",
    "zoo.data.npz.x__mapped_member__mutmut_19": "equivalent: `local` is the 30-byte local header, so "
    "local[28:31] is local[28:30]",
    "zoo.data.arrays.xǁRowViewǁ__getitem____mutmut_30": "equivalent: NumPy reads a sort kind by its first "
    "letter, in any case ('STABLE' is 'stable')",
    "zoo.data.pipeline.xǁBatchIteratorǁ__init____mutmut_16": "equivalent in output: how many batches one "
    "Grain element gathers with workers (1 or a block) changes throughput, not the batches "
    "(test_properties: the same batches for any worker count)",
    "zoo.data.arrays.xǁRowViewǁ_base_rows__mutmut_6": "equivalent: the keys are integer row indices (the "
    "pipeline's), which np.asarray keeps as int64 without the dtype",
    "zoo.data.csv.x__class_ids__mutmut_3": "equivalent: NumPy makes an array of Python ints int64 on this "
    "platform (Linux, 64-bit) without the dtype",
    "zoo.models.rnn.xǁRNNǁ_recurrent__mutmut_5": "equivalent in output: the fast LSTM and nn.RNN(LSTMCell) "
    "compute the same with the same variables (tests/test_fast_layers.py); only the speed differs",
    "zoo.models.transformer.xǁTransformerǁ_tokens__mutmut_44": "equivalent: lax reads padding names in any "
    "case ('valid' is 'VALID')",
    "zoo.models.cnn.x__flax_pool__mutmut_21": "equivalent: lax reads padding names in any case ('same' is 'SAME')",
    "zoo.models.layers.x__lstm_forward__mutmut_19": "equivalent: the gates are (batch, 4 * hidden), so axis "
    "+1 is axis -1",
    "zoo.checkpoint.xǁCheckpointsǁ__init____mutmut_79": "equivalent with Orbax 0.12.8: without item_names "
    "the manager takes the items from the Composite arguments of each save and restore, and every call "
    "passes both (state, meta)",
    "zoo.comparison.report.x_write_report__mutmut_137": "not killed: the report name only reaches the figures' titles "
    "(pixels); the markdown report takes it elsewhere",
    "zoo.comparison.report.x_plot_tradeoff__mutmut_69": "not killed: where a point's label sits in a figure (pixels)",
    "zoo.data.pipeline.xǁGatherBatchǁmap__mutmut_15": "equivalent: NumPy takes any negative size in reshape "
    "as the rest of the array (reshape(-2) is reshape(-1); NumPy 2.4.6)",
    "zoo.data.pipeline.xǁBatchIteratorǁ_element__mutmut_12": "equivalent: Grain's MapDataset.range hands a "
    "float index through and GatherBatch.map takes int(block), and int(k / 16) == k // 16 for k >= 0",
    "zoo.models.resnet.x__cifar__mutmut_*": "import-time: the registry's ENTRIES are built when zoo.models is "
    "imported, before a mutant can be switched on",
    "zoo.models.resnet.x__imagenet__mutmut_*": "import-time: the registry's ENTRIES are built when zoo.models "
    "is imported, before a mutant can be switched on",
    "zoo.models.resnet.x__tested__mutmut_1": "import-time: _tested builds the TestSettings of the registry's "
    "ENTRIES when zoo.models is imported, before a mutant can be switched on",
    "zoo.data.x__check_finite_inputs__mutmut_1": "equivalent: the key only lets a second load of a file source "
    "already found finite in this process skip checking it again (speed); without it every load checks, with "
    "the same verdict",
    "zoo.data.batching.x_eval_batches__mutmut_35": "equivalent: a full batch (real == local) gets zero padding "
    "rows and its mask zeroed from row `real` on: the same rows, dtype and mask (one copy more)",
}

STATUSES = ("killed", "timeout", "survived", "no tests", "error")
PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--rootdir=.", "-W", "ignore"]


def dotted(module: str) -> str:
    return module.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def module_of(mutant: str) -> str:
    return next(m for m in sorted(MODULES, key=len, reverse=True)
                if mutant.startswith(dotted(m) + ".x") or mutant.startswith(dotted(m) + ".xǁ"))


def env() -> dict:
    out = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONHASHSEED": "0", "PYTHONPATH": str(SCRATCH / "mutants"),
           "JAX_COMPILATION_CACHE_DIR": str(SCRATCH / "jax-cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
           "TQDM_DISABLE": "1"}
    out.pop("XLA_FLAGS", None)
    return out


def prepare() -> dict:
    """Generates the mutants and the test map once (cached in SCRATCH): {"tests_by_mangled_function_name",
    "duration_by_test"}, in mutmut's format, over the tests that pass on the unmutated code."""
    stats_file = SCRATCH / "test-map.json"
    if stats_file.exists():
        return json.loads(stats_file.read_text())
    shutil.rmtree(SCRATCH, ignore_errors=True)
    SCRATCH.mkdir(parents=True)
    for name in COPIED:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, SCRATCH / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, SCRATCH / name)
    for module in MODULES:  # Flax runs __post_init__ before a module has its scope: no trampoline there
        path = SCRATCH / module
        path.write_text(re.sub(r"^(\s*def __post_init__\(self\).*:)$", r"\1  # pragma: no mutate block",
                               path.read_text(), flags=re.M))
    config = (REPO / "pyproject.toml").read_text()
    config += "\n[tool.mutmut]\n" + "\n".join([
        'source_paths = ["zoo"]',
        f"only_mutate = {json.dumps(MODULES)}",
        'pytest_add_cli_args_test_selection = ["tests"]',
        f"also_copy = {json.dumps([name for name in COPIED if name != 'zoo'])}",
    ]) + "\n"
    (SCRATCH / "pyproject.toml").write_text(config)
    generate = ("import os, mutmut.__main__ as m\n"
                "m.set_mutant_under_test('mutant_generation'); os.makedirs('mutants', exist_ok=True)\n"
                "m.copy_src_dir(); m.copy_also_copy_files(); m.setup_source_paths(); m.create_mutants(2)\n")
    print("generating mutants ...", flush=True)
    proc = subprocess.run([sys.executable, "-c", generate], cwd=SCRATCH, env=env(), capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"mutmut failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    print("mapping the tests to the functions they reach (one run of the suite) ...", flush=True)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--map-tests", str(stats_file)],
                          cwd=SCRATCH, env=env(), capture_output=True, text=True)
    if not stats_file.exists():
        sys.exit(f"mapping the tests failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(stats_file.read_text())


def map_tests(out: str) -> None:
    """Runs in SCRATCH: the whole suite (`-m "not exhaustive"`) once on the trampolined code, recording
    for each test the mutated functions it reaches and its duration. Unlike mutmut's own stats run it
    does not stop at a failure; a test that fails on the unmutated code is left out of the map."""
    import collections

    import mutmut.__main__ as m
    import pytest
    from mutmut.configuration import config
    from mutmut.state import state

    config()
    m.set_mutant_under_test("stats")
    os.chdir("mutants")
    sys.path.insert(0, os.getcwd())
    reached, durations, failed = collections.defaultdict(set), {}, set()

    setup_by_file: dict[str, float] = {}

    class Recorder:
        def pytest_runtest_logreport(self, report):
            if report.when == "setup":
                file = report.nodeid.split("::")[0]
                setup_by_file[file] = max(setup_by_file.get(file, 0.0), report.duration)
            if report.failed:
                failed.add(report.nodeid)
            durations[report.nodeid] = durations.get(report.nodeid, 0.0) + report.duration  # fixtures too

        def pytest_runtest_teardown(self, item, nextitem):
            for function in state()._stats:
                reached[function].add(item.nodeid)
            state()._stats.clear()

    pytest.main(["-q", "-p", "no:cacheprovider", "--rootdir=.", "-W", "ignore", "-m", "not exhaustive", "tests"],
                plugins=[Recorder()])
    Path(out).write_text(json.dumps({
        "tests_by_mangled_function_name": {f: sorted(t - failed) for f, t in reached.items()},
        "duration_by_test": {t: d for t, d in durations.items() if t not in failed},
        "setup_by_file": setup_by_file,
        "failed_unmutated": sorted(failed)}, indent=1))


def mutants_of(module: str) -> list[str]:
    meta = json.loads((SCRATCH / "mutants" / (module + ".meta")).read_text())
    return sorted(meta["exit_code_by_key"])


def tests_for(mutant: str, stats: dict, budget: float, extra: list[str] = ()) -> list[str]:
    """The tests reaching the mutant's function, cheapest first, while their recorded time fits `budget`.

    A test's recorded time includes the fixtures it set up; a module's costliest setup (a trained run
    shared by its tests) is charged once, to whichever of its tests is chosen first."""
    function = mutant.rsplit("__mutmut_", 1)[0]
    durations, setup = stats["duration_by_test"], stats.get("setup_by_file", {})
    remaining = set(stats["tests_by_mangled_function_name"].get(function, [])) - set(extra)
    chosen, files, spent = list(extra), {t.split("::")[0] for t in extra}, 0.0

    def cost(test):
        file = test.split("::")[0]
        return durations.get(test, 0.0) + (0.0 if file in files else setup.get(file, 0.0)), test

    while remaining:
        price, test = min(cost(t) for t in remaining)
        if chosen and spent + price > budget:
            break
        chosen.append(test)
        files.add(test.split("::")[0])
        remaining.discard(test)
        spent += price
    return chosen


def edge_tests(function: str) -> list[str]:
    """The tests of EDGE_TESTS whose docstring names a mutant of `function` (e.g. zoo.data.csv.x_load)."""
    import ast

    found = []
    for path in EDGE_TESTS:
        tree = ast.parse((REPO / path).read_text())
        found += [f"{path}::{node.name}" for node in tree.body
                  if isinstance(node, ast.FunctionDef) and f"{function}__mutmut_" in (ast.get_docstring(node) or "")]
    return found


# The worker ------------------------------------------------------------------------------------------


def worker(jobs_file: str, parallel: int) -> None:
    """Runs in SCRATCH/mutants. Imports everything once, then forks one pytest per mutant."""
    os.environ["MUTANT_UNDER_TEST"] = ""
    sys.path.insert(0, os.getcwd())
    import importlib
    import pkgutil

    import flax.linen  # noqa: F401
    import hypothesis  # noqa: F401
    import jax
    import jax.numpy  # noqa: F401
    import optax  # noqa: F401
    import orbax.checkpoint  # noqa: F401
    import pytest
    import zoo
    from jax._src import xla_bridge

    for info in pkgutil.walk_packages(zoo.__path__, "zoo."):
        try:
            importlib.import_module(info.name)
        except Exception:  # an optional extra (jax2onnx, torch) that is not installed
            pass
    assert not xla_bridge._backends, "JAX's runtime started before the fork"
    assert zoo.__file__.startswith(os.getcwd()), zoo.__file__
    jobs = json.loads(Path(jobs_file).read_text())
    logs = Path(jobs_file).with_suffix(".logs")
    logs.mkdir(exist_ok=True)
    running: dict[int, tuple[dict, float]] = {}
    while jobs or running:
        while jobs and len(running) < parallel:
            job = jobs.pop(0)
            log = logs / (job["name"] + ".txt")
            pid = os.fork()
            if pid == 0:
                os.setpgid(0, 0)
                os.environ["MUTANT_UNDER_TEST"] = job["name"]
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                try:
                    code = int(pytest.main([*PYTEST_ARGS, *job["tests"]]))
                except BaseException:
                    code = 3
                os._exit(code)
            running[pid] = (job, time.time())
        pid, status = os.waitpid(-1, os.WNOHANG)
        now = time.time()
        if pid == 0:
            for pid, (job, start) in list(running.items()):
                if now - start > job["timeout"]:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            time.sleep(0.05)
            continue
        job, start = running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        try:
            os.killpg(pid, signal.SIGKILL)  # whatever the tests started and left behind
        except (ProcessLookupError, PermissionError):
            pass
        verdict = ("survived" if code == 0 else "killed" if code in (1, 2) else
                   "timeout" if code == -signal.SIGKILL and now - start > job["timeout"] else "error")
        print(json.dumps({"name": job["name"], "status": verdict, "code": code, "seconds": round(now - start, 1)}),
              flush=True)


def run_jobs(jobs: list[dict], parallel: int, on_result) -> None:
    jobs_file = SCRATCH / f"jobs-{os.getpid()}.json"
    jobs_file.write_text(json.dumps(jobs))
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", str(jobs_file),
                             "--parallel", str(parallel)], cwd=SCRATCH / "mutants", env=env(),
                            stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("{"):
            on_result(json.loads(line))
    if proc.wait() != 0:
        sys.exit(f"the mutation worker failed (exit {proc.returncode})")


def diff_of(mutant: str) -> str:
    out = subprocess.run([str(MUTMUT), "show", mutant], cwd=SCRATCH, env=env(), capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines()
                     if line.startswith(("+", "-")) and not line.startswith(("+++", "---")))


# The report ------------------------------------------------------------------------------------------


def machine() -> str:
    cpu, avx = "", []
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
        avx = sorted(set(re.findall(r"avx512[a-z]*", info)))[:1]
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}, {'AVX-512' if avx else 'AVX2, no AVX-512'}); Python {platform.python_version()}"


def triage(name: str) -> str:
    return TRIAGE.get(name) or next((why for key, why in TRIAGE.items() if fnmatch.fnmatchcase(name, key)), "")


def equivalent(name: str) -> bool:
    """Out of the score: equivalent, removed with its dead code, or only reachable at import."""
    return triage(name).startswith(("equivalent", "removed", "import-time"))


def write_report(results: dict) -> None:
    meta = results.get("_meta", {})
    lines = ["# Mutation testing of the core modules", "",
             "Produced by " + ("; then ".join(f"`{c}` ({note})" for c, note in meta["commands"]) if meta.get("commands")
                               else f"`{meta.get('command', '?')}`") + f" (mutmut {meta.get('mutmut', '?')}), "
             f"{meta.get('when', '?')}, on {meta.get('machine', '?')}.", "",
             "mutmut generated every mutant of each module; a seeded random sample of them "
             f"(`--sample {meta.get('sample')} --seed {meta.get('seed')}`) was run. Each mutant runs against the tests "
             "that reach its function (mapped by one run of `pytest -m 'not exhaustive'` over mutmut's trampolines), cheapest first, "
             f"up to {meta.get('budget_s')} s of their recorded time, stopping at the first failure. "
             "A timeout (an endless loop) counts as killed; 'no tests' (no test reaches the function) as survived. "
             "'left out' counts the mutants not in the score, each with its reason below: equivalent "
             "(no behaviour changes), removed (it was in dead code, now deleted) or import-time (code run when "
             "zoo.models is imported, before a mutant can be switched on). "
             "Score = killed / (run - equivalent). 90% CI: Wilson interval of that proportion over the sample. "
             "Each mutant runs in a process forked from a worker that imported JAX and the zoo once"
             + (f"; the last invocation took {meta['seconds']} s." if meta.get("seconds") else "."), "",
             "| module | mutants | run | killed | survived | left out | score | 90% CI |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    total_k = total_n = total_run = total_out = 0
    for module in MODULES:
        r = results.get(module)
        if not r:
            lines.append(f"| `{module}` | | not run | | | | | |")
            continue
        statuses = r["statuses"]
        killed = sum(1 for s in statuses.values() if s in ("killed", "timeout"))
        alive = [n for n, s in statuses.items() if s in ("survived", "no tests", "error")]
        eq = sum(1 for n in alive if equivalent(n))
        n = len(statuses) - eq
        total_k, total_n = total_k + killed, total_n + n
        total_run, total_out = total_run + len(statuses), total_out + eq
        lo, hi = wilson(killed, n)
        lines.append(f"| `{module}` | {r['total']} | {len(statuses)} | {killed} | {len(alive) - eq} | {eq} | "
                     f"{100 * killed / n:.0f}% | {100 * lo:.0f}-{100 * hi:.0f}% |" if n else
                     f"| `{module}` | {r['total']} | 0 | | | | - | |")
    if total_n:
        lo, hi = wilson(total_k, total_n)
        lines.append(f"| all | | {total_run} | {total_k} | {total_n - total_k} | {total_out} | {100 * total_k / total_n:.0f}% "
                     f"| {100 * lo:.0f}-{100 * hi:.0f}% |")
    if meta.get("retest"):
        lines += ["", f"Survivors were run again on {meta['retest']} against the tests then in the repository "
                  f"(the tests that reached them, up to the budget, the tests of {', '.join(EDGE_TESTS)} naming their function, and "
                  "for code that runs in the multi-process tests' subprocesses, those tests); those a newer test kills "
                  "count as killed and are listed below."]
    lines += ["", "## Surviving mutants", ""]
    for module in MODULES:
        r = results.get(module)
        alive = {n: s for n, s in (r or {}).get("statuses", {}).items() if s in ("survived", "no tests", "error")}
        killed_later = (r or {}).get("killed_on_retest", [])
        if not alive and not killed_later:
            continue
        lines += [f"### `{module}`", ""]
        for name in killed_later:
            lines.append(f"- `{name}`: killed on retest{': ' + triage(name) if triage(name) else ''}")
        for name, status in alive.items():
            lines += [f"- `{name}` ({status}): {triage(name) or 'not triaged'}", "", "  ```diff",
                      *("  " + line for line in r["diffs"].get(name, "").splitlines()[:6]), "  ```", ""]
        lines.append("")
    REPORT.write_text("\n".join(lines).rstrip() + "\n")


def wilson(k: int, n: int, z: float = 1.645) -> tuple[float, float]:
    if not n:
        return 0.0, 1.0
    p = k / n
    centre, half = p + z * z / (2 * n), z * ((p * (1 - p) + z * z / (4 * n)) / n) ** 0.5
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))


def mutmut_version() -> str:
    from importlib.metadata import version
    return version("mutmut")


# Main ------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="modules to run (default: all core modules)")
    parser.add_argument("--sample", type=int, default=30, help="mutants per module, drawn at random (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=60.0, help="recorded test seconds per mutant (default 60)")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="keep the statuses of an interrupted run with the same sample")
    parser.add_argument("--retest", action="store_true", help="run the survivors again against the current tests")
    parser.add_argument("--report-only", action="store_true", help="rewrite MUTATION.md from mutation.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--map-tests", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.map_tests:
        map_tests(args.map_tests)
        return 0
    if args.worker:
        worker(args.worker, args.parallel)
        return 0
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.report_only:
        write_report(results)
        return 0
    for module in args.modules:
        if module not in MODULES:
            parser.error(f"unknown module '{module}': choose from {', '.join(MODULES)}")
    stats = prepare()

    def save(result):
        module = module_of(result["name"])
        entry = results[module]
        old = entry["statuses"].get(result["name"])
        if args.retest and result["status"] in ("killed", "timeout") and old not in ("killed", "timeout"):
            entry.setdefault("killed_on_retest", []).append(result["name"])
        entry["statuses"][result["name"]] = result["status"]
        entry["seconds"] = round(entry.get("seconds", 0) + result["seconds"], 1)
        if result["status"] in ("survived", "no tests", "error"):
            entry.setdefault("diffs", {})[result["name"]] = diff_of(result["name"])
        print(f"  {result['name']}: {result['status']} ({result['seconds']} s)", flush=True)
        RESULTS.write_text(json.dumps(results, indent=1, ensure_ascii=False))

    jobs = []
    if args.retest:
        shutil.rmtree(SCRATCH / "mutants" / "tests")
        shutil.copytree(REPO / "tests", SCRATCH / "mutants" / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        for module in args.modules or MODULES:
            for name, status in results.get(module, {}).get("statuses", {}).items():
                if status in ("survived", "no tests", "error") and not equivalent(name):
                    function = name.rsplit("__mutmut_", 1)[0]
                    tests = tests_for(name, stats, args.budget_s, edge_tests(function) + SUBPROCESS_TESTS.get(function, []))
                    if tests:  # (pytest without arguments would run the whole suite)
                        jobs.append({"name": name, "tests": tests, "timeout": 4 * args.budget_s + 120})
        results.setdefault("_meta", {})["retest"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    else:
        command = "python tools/mutation.py " + " ".join(sys.argv[1:])
        if args.resume and results.get("_meta", {}).get("command"):
            command = results["_meta"]["command"] + "`, interrupted, then `" + command
        results["_meta"] = {"command": command, "sample": args.sample,
                            "seed": args.seed, "budget_s": args.budget_s, "mutmut": mutmut_version(),
                            "machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        queues = []
        for module in args.modules or MODULES:
            everything = mutants_of(module)
            order = list(everything)
            random.Random(f"{args.seed}:{module}").shuffle(order)
            chosen = order[:args.sample]  # a larger sample extends a smaller one
            earlier = results.get(module, {})
            if not args.resume or earlier.get("total") != len(everything):
                earlier = results[module] = {"total": len(everything), "statuses": {}, "diffs": {}, "seconds": 0}
            queue = []
            for name in chosen:
                if name in earlier["statuses"]:
                    continue  # --resume: checked by the interrupted run
                tests = tests_for(name, stats, args.budget_s)
                if not tests:
                    save({"name": name, "status": "no tests", "seconds": 0})
                    continue
                queue.append({"name": name, "tests": tests, "timeout": 4 * args.budget_s + 120})
            queues.append(queue)
        # Round-robin over the modules, so that a run cut short has checked part of every module.
        for i in range(max(map(len, queues), default=0)):
            jobs += [queue[i] for queue in queues if i < len(queue)]
    start = time.time()
    run_jobs(jobs, args.parallel, save)
    print(f"{len(jobs)} mutants in {time.time() - start:.0f} s", flush=True)
    results["_meta"]["seconds"] = round(time.time() - start)
    RESULTS.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    write_report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
