"""The host process's memory allocator, set up for XLA's per-step buffers on CPU (Linux with glibc).

Each call of a compiled step gets fresh buffers from malloc: on CPU its temporaries in one block
(580 MB for the Transformer benchmark's step) and its outputs. JAX runs CPU executions on a thread
of its own, whose glibc arena (64 MiB at most) cannot hold such blocks: each is a new mmap, unmapped
at free, so every step pays the kernel's page faults again for the memory the step before used
(per step, 158,600 minor faults for the Transformer benchmark, 80,900 for the Transformer LM, 50,400
for ResNet-20, 15,000 for the LSTM LM, 12,800 for the LSTM). `tune_allocator` runs CPU executions
on the calling thread instead (jax_cpu_enable_async_dispatch false), whose arena, glibc's main one,
grows as needed, and stops glibc from serving blocks below 2 GiB with mmap and from trimming its
heap below 2 GiB free: the steps then fault ~0 times and take 0.60-0.81x as long for the
Transformers, 0.79-0.95x for the LSTMs and 0.85-0.90x for ResNet-20 (the CNN and the MLP had no
faults to save), with no change in compile time (benchmarks/NOTES.md, round six;
`python benchmarks/page_faults.py`). The peak memory is the same; what a step frees stays with
the process for the next step instead of going back to the system. (One arena for all threads,
MALLOC_ARENA_MAX=1, did the same for the steps but made compiles 20-35% and dispatch-bound calls
1.5-2x slower.)

The console script runs it for the commands that compute (cli.main), benchmarks/bench.py for all of
its columns, PyTorch's too; a script calling zoo.fit itself can call `zoo.tune_host_allocator()` as
its first line. It leaves things as they are with ZOO_HOST_ALLOCATOR=default, with any of glibc's
own settings in the environment (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_,
GLIBC_TUNABLES: the user's choice stands), where a JAX GPU or TPU plugin is installed and
JAX_PLATFORMS does not pin the CPU (measured on CPU only), and on systems other than Linux with glibc.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pkgutil
import platform
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)
LIMIT = 2**31 - 1  # mallopt takes a C int: no mmap for blocks below 2 GiB, no trimming below 2 GiB free
SETTINGS = {"mmap_threshold": LIMIT, "trim_threshold": LIMIT}
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
    """No mmap and no trimming below 2 GiB in glibc's malloc (mallopt), and JAX's CPU executions on the
    thread that calls them (jax_cpu_enable_async_dispatch false), whose arena, the main one, can hold
    blocks of any size: the blocks a compiled step frees are then reused by the next step without
    page faults. Call it before JAX makes its CPU client (the first computation). Returns whether the
    settings are in effect (see `why_not` otherwise)."""
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
    if not (mallopt(M_MMAP_THRESHOLD, SETTINGS["mmap_threshold"])
            and mallopt(M_TRIM_THRESHOLD, SETTINGS["trim_threshold"])):
        return False
    import jax

    if _cpu_client_made():  # its dispatch mode was fixed when it was made
        _applied = {**SETTINGS, "cpu_dispatch": "asynchronous (JAX's CPU client was made before)"}
    else:
        jax.config.update("jax_cpu_enable_async_dispatch", False)
        _applied = {**SETTINGS, "cpu_dispatch": "on the calling thread"}
    return True


def _cpu_client_made() -> bool:
    try:
        from jax._src import xla_bridge  # JAX offers no public way to ask
    except ImportError:
        return False
    return bool(getattr(xla_bridge, "backends_are_initialized", lambda: False)())


def describe() -> str:
    """One line for reports: what the host allocator is set to in this process."""
    if _applied is not None:
        return (f"glibc malloc with no mmap or trim below 2 GiB, JAX's CPU executions {_applied['cpu_dispatch']} "
                "(zoo.host.tune_allocator)")
    return f"the system's default ({why_not() or 'zoo.host.tune_allocator not called'})"
