"""The host process's memory allocator, set up for XLA's per-step buffers on CPU (Linux with glibc).

Each call of a compiled step gets fresh buffers from malloc: on CPU its temporaries in one block
(580 MB for the Transformer benchmark's step) and its outputs. glibc serves an allocation over
32 MiB made on a thread other than the main one (JAX's) with a new mmap and unmaps it at free, so
every step pays the kernel's page faults again for memory it used a step before: per step, 158,600
minor faults for the Transformer benchmark (620 MB of pages zeroed afresh), 80,900 for the
Transformer LM, 50,400 for ResNet-20, 15,000 for the LSTM LM, 12,800 for the LSTM. With one arena
that keeps what it frees (below) the same steps fault 0 times, and take 0.78-0.87x as long for
the Transformer, 0.59-0.64x for the Transformer LM, 0.85-0.98x for the LSTM, 0.88x for the LSTM LM
(ResNet-20, the CNN and the MLP: within the noise); compiles took 2-10% longer (benchmarks/NOTES.md,
round six). The peak memory is the same; what a step frees stays with the process for the next one
instead of going back to the system (up to 2 GiB).

`tune_allocator()` runs first in every `zoo` command (cli.console_main) and in benchmarks/bench.py
(every column, PyTorch's too); a script calling zoo.fit itself can call `zoo.tune_host_allocator()`
before anything else. It leaves glibc's defaults alone with ZOO_HOST_ALLOCATOR=default, with any of
glibc's own settings in the environment (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_,
MALLOC_TRIM_THRESHOLD_, GLIBC_TUNABLES: the user's choice stands), and where JAX has an accelerator
plugin installed and JAX_PLATFORMS does not pin the CPU (measured on CPU only).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pkgutil
import platform
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # mallopt's parameters (malloc.h)
LIMIT = 2**31 - 1  # mallopt takes a C int: no mmap for blocks below 2 GiB, no trimming below 2 GiB free
SETTINGS = {"arena_max": 1, "mmap_threshold": LIMIT, "trim_threshold": LIMIT}
OPT_OUT = "ZOO_HOST_ALLOCATOR"
GLIBC_ENV = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")

_applied: dict | None = None


def why_not() -> str | None:
    """Why tune_allocator() would leave the allocator alone here, or None if it would tune it."""
    if os.environ.get(OPT_OUT, "").strip().lower() == "default":
        return f"{OPT_OUT}=default"
    given = [name for name in GLIBC_ENV if os.environ.get(name)]
    if given:
        return f"{given[0]} is set in the environment"
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return "not Linux with glibc"
    plugin = _accelerator_plugin()
    if plugin and os.environ.get("JAX_PLATFORMS", "").split(",")[0].strip() != "cpu":
        return f"JAX's accelerator plugin {plugin} is installed (JAX_PLATFORMS=cpu tunes it)"
    return None


def _accelerator_plugin() -> str | None:
    """The name of an installed JAX GPU/TPU plugin (found without importing JAX), or None."""
    for name in ("libtpu", "jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin"):
        if importlib.util.find_spec(name) is not None:
            return name
    try:
        import jax_plugins  # the namespace package JAX's PJRT plugins install into
    except ImportError:
        return None
    return next((module.name for module in pkgutil.iter_modules(jax_plugins.__path__)), None)


def tune_allocator() -> bool:
    """One malloc arena for every thread, no mmap and no trimming below 2 GiB (glibc's mallopt), so that
    the blocks a compiled step frees are reused by the next step without page faults. Call it before
    JAX starts its threads. Returns whether the settings are in effect (see `why_not` otherwise)."""
    global _applied
    if _applied is not None:
        return True
    if why_not():
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    done = [mallopt(M_ARENA_MAX, SETTINGS["arena_max"]), mallopt(M_MMAP_THRESHOLD, SETTINGS["mmap_threshold"]),
            mallopt(M_TRIM_THRESHOLD, SETTINGS["trim_threshold"])]
    if all(done):
        _applied = dict(SETTINGS)
    return all(done)


def describe() -> str:
    """One line for reports: what the host allocator is set to in this process."""
    if _applied is not None:
        return "glibc malloc, one arena, no mmap or trim below 2 GiB (zoo.host.tune_allocator)"
    return f"the system's default ({why_not() or 'zoo.host.tune_allocator not called'})"
