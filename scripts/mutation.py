"""Mutation testing of the core modules with mutmut; writes benchmarks/MUTATION.md.

    python scripts/mutation.py [MODULE ...] [--timeout SECONDS] [--mutant-timeout SECONDS]

Each module is mutated in a scratch copy of the repository (/tmp/zoo-mutation/<module>) with its
own [tool.mutmut] section, so the project's pyproject.toml stays untouched. mutmut runs the module's
test files once to learn which tests reach each function, then runs only those tests per mutant.
Results of modules run earlier are kept (benchmarks/mutation.json) and merged into the report.
Not part of `make test`: a full run takes hours on 2 shared cores.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MUTMUT = Path(sys.executable).with_name("mutmut")
SCRATCH = Path(os.environ.get("ZOO_MUTATION_DIR", "/tmp/zoo-mutation"))
RESULTS, REPORT = REPO / "benchmarks" / "mutation.json", REPO / "benchmarks" / "MUTATION.md"

# Module -> (the test files that cover it, the functions to mutate or None for all). mutmut narrows
# the files further to the tests reaching each mutated function. Ordered by priority.
SPEC = ["tests/test_specifications.py", "tests/test_properties.py"]
MODULES = {
    "zoo/training/optim.py": (["tests/test_specifications.py"], None),
    "zoo/training/step.py": (SPEC, None),
    "zoo/report.py": (SPEC, ["_mean_std", "summarize", "label_for", "_pm", "markdown_table", "_si", "_clock"]),
    "zoo/checkpoint.py": (SPEC + ["tests/test_reliability.py"], None),
    "zoo/data/batching.py": (SPEC + ["tests/test_data.py"], None),
    "zoo/models/rnn.py": (SPEC + ["tests/test_models.py"], None),
    "zoo/models/resnet.py": (SPEC + ["tests/test_models.py"], None),
    "zoo/models/mlp.py": (SPEC + ["tests/test_models.py"], None),
    "zoo/models/cnn.py": (SPEC + ["tests/test_models.py"], None),
    "zoo/models/transformer.py": (SPEC + ["tests/test_models.py"], None),
    "zoo/data/__init__.py": (SPEC + ["tests/test_data.py"], None),
    "zoo/training/state.py": (SPEC + ["tests/test_training.py"], None),
    "zoo/training/loop.py": (SPEC + ["tests/test_training.py", "tests/test_reliability.py"], None),
}

# Surviving mutants judged by reading them: name -> why it survives (equivalent) or what kills it.
TRIAGE: dict[str, str] = {
    "zoo.training.optim.x_make_schedule__mutmut_10": "warm-up clamp `total_steps + 1`: killed by "
    "test_schedules_at_the_edges_of_a_run_match_optax[warmup-longer-than-the-run]",
    "zoo.training.optim.x_make_schedule__mutmut_11": "warm-up clamp `total_steps - 2`: killed by "
    "test_schedules_at_the_edges_of_a_run_match_optax[warmup-longer-than-the-run]",
    "zoo.training.optim.x_make_schedule__mutmut_12": "warm-up clamp `max(..., 1)`: killed by "
    "test_schedules_at_the_edges_of_a_run_match_optax[warmup-one-step-run]",
}

STATUSES = ("killed", "survived", "timeout", "suspicious", "no tests", "skipped", "not checked",
            "caught by type check", "segfault", "check was interrupted by user")


def slug(module: str) -> str:
    return module.replace("/", "_").removesuffix(".py")


def prepare(module: str, tests: list[str]) -> Path:
    """A scratch copy of zoo/, tests/ and pyproject.toml with a [tool.mutmut] section for `module`."""
    work = SCRATCH / slug(module)
    if (work / "mutants" / "mutmut-stats.json").exists() and os.environ.get("ZOO_MUTATION_REUSE"):
        return work  # mutants and the test map of an earlier run
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in ("zoo", "tests", "scripts", "configs"):
        if (REPO / name).exists():
            shutil.copytree(REPO / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    config = (REPO / "pyproject.toml").read_text()
    config += "\n[tool.mutmut]\n" + "\n".join([
        'source_paths = ["zoo"]',
        f'only_mutate = ["{module}"]',
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        'pytest_add_cli_args = ["-m", "not slow", "-p", "no:cacheprovider", "-x", "-q"]',
        'also_copy = ["scripts", "configs"]',
    ]) + "\n"
    (work / "pyproject.toml").write_text(config)
    return work


def run_module(module: str, timeout: float, mutant_timeout: float, progress=None) -> dict:
    """mutmut generates the mutants and maps each function to the tests reaching it; each mutant
    then runs in a fresh `pytest` process (MUTANT_UNDER_TEST=<name>) on exactly those tests.
    mutmut's own runner forks workers from a process that already ran JAX, and forked JAX workers
    hang (XLA's thread pools do not survive fork), so it is not used."""
    tests, functions = MODULES[module]
    work = prepare(module, tests)
    dotted = module.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    names = [f"{dotted}.x_{function}__mutmut_*" for function in functions or []]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONHASHSEED": "0"}
    env.pop("XLA_FLAGS", None)
    start = time.time()
    # mutmut's generation and test-mapping steps (the first half of `mutmut run`), without its forking runner.
    prepare_code = ("import os, pathlib, mutmut.__main__ as m\n"
                    "m.set_mutant_under_test('mutant_generation'); os.makedirs('mutants', exist_ok=True)\n"
                    "m.copy_src_dir(); m.copy_also_copy_files(); m.setup_source_paths()\n"
                    "m.store_lines_covered_by_tests(); m.create_mutants(2)\n"
                    "m.collect_or_load_stats(m.get_mutant_runner(1))\n")
    if not (work / "mutants" / "mutmut-stats.json").exists():
        subprocess.run([sys.executable, "-c", prepare_code], cwd=work, env=env, capture_output=True, text=True)
    meta = json.loads((work / "mutants" / (module + ".meta")).read_text())
    stats = json.loads((work / "mutants" / "mutmut-stats.json").read_text())
    mutants = [n for n in meta["exit_code_by_key"] if not names or any(fnmatch.fnmatch(n, g) for g in names)]
    statuses, survivors = {}, {}
    for name in mutants:
        if time.time() - start > timeout:
            statuses[name] = "not checked"
            continue
        function = name.rsplit("__mutmut_", 1)[0]
        selected = sorted(stats["tests_by_mangled_function_name"].get(function, []))
        if not selected:
            statuses[name] = "no tests"
        else:
            try:
                proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                       *selected], cwd=work / "mutants", env={**env, "MUTANT_UNDER_TEST": name},
                                      capture_output=True, text=True, timeout=mutant_timeout)
                statuses[name] = "survived" if proc.returncode == 0 else "killed"
            except subprocess.TimeoutExpired:
                statuses[name] = "timeout"
        print(f"  {name}: {statuses[name]}", flush=True)
        if progress:
            progress(summary(module, tests, functions, start, statuses, survivors, len(mutants)))
        if statuses[name] in ("survived", "no tests"):
            diff = subprocess.run([str(MUTMUT), "show", name], cwd=work, env=env, capture_output=True,
                                  text=True).stdout
            survivors[name] = {"status": statuses[name], "diff": "\n".join(
                line for line in diff.splitlines() if line.startswith(("+", "-")) and
                not line.startswith(("+++", "---")))}
    return summary(module, tests, functions, start, statuses, survivors, len(mutants))


def summary(module, tests, functions, start, statuses, survivors, total) -> dict:
    counts = {status: sum(1 for s in statuses.values() if s == status) for status in STATUSES}
    return {"module": module, "tests": tests, "functions": functions, "seconds": round(time.time() - start),
            "finished": "not checked" not in statuses.values() and len(statuses) == total, "total": total,
            "counts": {k: v for k, v in counts.items() if v}, "survivors": survivors,
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def retest(module: str, result: dict, select: str, mutant_timeout: float) -> dict:
    """Runs the survivors of an earlier run again against the repository's current tests (those of
    the module's test files matching `-k select`): a survivor a new test kills becomes 'killed'."""
    work = SCRATCH / slug(module)
    shutil.rmtree(work / "mutants" / "tests")
    shutil.copytree(REPO / "tests", work / "mutants" / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONHASHSEED": "0"}
    env.pop("XLA_FLAGS", None)
    for name in list(result["survivors"]):
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m",
                                   "not slow", "-k", select, *result["tests"]], cwd=work / "mutants",
                                  env={**env, "MUTANT_UNDER_TEST": name}, capture_output=True, text=True,
                                  timeout=mutant_timeout)
            killed = proc.returncode != 0
        except subprocess.TimeoutExpired:
            killed = True
        print(f"  {name}: {'killed by a new test' if killed else 'survived'}", flush=True)
        if killed:
            old = result["survivors"].pop(name)["status"]
            result["counts"][old] -= 1
            result["counts"]["killed"] = result["counts"].get("killed", 0) + 1
            result.setdefault("killed_on_retest", []).append(name)
    result["retest"] = f"-k '{select}' on the tests of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    return result


def machine() -> str:
    cpu = ""
    try:
        flags = Path("/proc/cpuinfo").read_text()
        cpu = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")), "")
        avx = sorted(set(re.findall(r"avx512[a-z]*", flags)))[:1]
    except OSError:
        avx = []
    return (f"{os.cpu_count()} cores ({cpu}{', ' + avx[0] if avx else ', no AVX-512'}), shared with other jobs; "
            f"Python {platform.python_version()}")


def score(result: dict) -> tuple[int, int, int]:
    """(killed, equivalent, non-equivalent total) over the mutants mutmut ran."""
    counts = result["counts"]
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    equivalent = sum(1 for name in result["survivors"] if TRIAGE.get(name, "").startswith("equivalent"))
    checked = killed + sum(counts.get(s, 0) for s in ("survived", "no tests", "suspicious"))
    return killed, equivalent, checked - equivalent


def write_report(results: dict, command: str) -> None:
    lines = ["# Mutation testing of the core modules", "",
             f"Produced by `{command}` (mutmut {mutmut_version()}) on {machine()}.", "",
             "mutmut generates the mutants and records which tests (of the module's test files, `-m 'not slow'`) "
             "reach each function; each mutant then runs in a fresh pytest process on those tests only, "
             "stopping at the first failure. "
             "Timeouts count as killed. Score = killed / (mutants checked - equivalent survivors). "
             "The machine is shared (load average 20-30 on 2 cores during the run): a module 'cut short' "
             "was stopped after the mutants counted under 'checked'; the others were not run.", "",
             "| module | mutants checked | killed | survived | equivalent | score | finished | time |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    for module in MODULES:
        if module not in results:
            lines.append(f"| `{module}` | not run | | | | | | |")
            continue
        r = results[module]
        killed, equivalent, total = score(r)
        survived = sum(r["counts"].get(s, 0) for s in ("survived", "no tests", "suspicious"))
        pct = f"{100 * killed / total:.0f}%" if total else "-"
        scope = f" ({', '.join(r['functions'])})" if r.get("functions") else ""
        checked = f"{killed + survived} of {r['total']}" if r.get("total") else str(killed + survived)
        lines.append(f"| `{module}`{scope} | {checked} | {killed} | {survived} | {equivalent} | {pct} | "
                     f"{'yes' if r['finished'] else 'cut short'} | {r['seconds'] // 60} min |")
    lines += ["", "## Survivors killed by tests added after the run", ""]
    for module, r in results.items():
        for name in r.get("killed_on_retest", []):
            lines.append(f"- `{name}`: {TRIAGE.get(name, 'killed on retest')} (retest: {r['retest']})")
    lines += ["", "## Surviving mutants", ""]
    for module, r in results.items():
        if not r["survivors"]:
            continue
        lines += [f"### `{module}`", ""]
        for name, s in r["survivors"].items():
            verdict = TRIAGE.get(name, "not triaged yet")
            lines += [f"- `{name}` ({s['status']}): {verdict}", "", "  ```diff",
                      *("  " + line for line in s["diff"].splitlines()[:6]), "  ```", ""]
    REPORT.write_text("\n".join(lines) + "\n")


def mutmut_version() -> str:
    out = subprocess.run([str(MUTMUT), "--version"], capture_output=True, text=True, cwd=SCRATCH)
    return out.stdout.strip().split()[-1] if out.stdout.strip() else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="modules to run (default: all, in priority order)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per module")
    parser.add_argument("--mutant-timeout", type=float, default=600, help="seconds per mutant")
    parser.add_argument("--report-only", action="store_true", help="rewrite MUTATION.md from mutation.json")
    parser.add_argument("--retest", metavar="K_EXPR", help="rerun the survivors against the current tests (-k K_EXPR)")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    command = "python scripts/mutation.py " + " ".join(sys.argv[1:])
    if args.retest:
        for module in args.modules:
            results[module] = retest(module, results[module], args.retest, args.mutant_timeout)
            RESULTS.write_text(json.dumps(results, indent=1))
    elif not args.report_only:
        SCRATCH.mkdir(parents=True, exist_ok=True)
        for module in args.modules or list(MODULES):
            if module not in MODULES:
                parser.error(f"unknown module '{module}': choose from {', '.join(MODULES)}")
            print(f"mutating {module} ...", flush=True)
            def progress(partial, module=module):
                results[module] = partial
                RESULTS.write_text(json.dumps(results, indent=1))
            results[module] = run_module(module, args.timeout, args.mutant_timeout, progress)
            print(f"  {results[module]['counts']} in {results[module]['seconds']} s", flush=True)
            RESULTS.write_text(json.dumps(results, indent=1))
    write_report(results, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
