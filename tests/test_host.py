"""zoo.host: the host allocator set up so that a compiled function's fresh buffers cost no page faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from zoo import host

# A jitted function whose 64 MiB output is allocated afresh at every call (on JAX's own threads), the
# minor page faults of its calls counted after a warm-up. Run in a child: mallopt is process-wide.
_CHILD = r"""
import json, resource, sys
from zoo import host
applied = host.tune_allocator()
import jax, jax.numpy as jnp
x = jnp.ones((4096, 4096), jnp.float32)
f = jax.jit(lambda x: x * 2.0)
for _ in range(5):
    f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    f(x).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
print(json.dumps({"applied": applied, "faults_per_call": faults, "describe": host.describe()}))
"""

glibc_only = pytest.mark.skipif(host.why_not() == "not Linux with glibc", reason="mallopt is glibc's")


def _child(**env) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in (host.OPT_OUT, *host.GLIBC_ENV)}
    out = subprocess.run([sys.executable, "-c", _CHILD], env={**clean, **env, "JAX_PLATFORMS": "cpu"},
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc_only
def test_tuned_allocator_reuses_a_freed_64_mib_buffer_without_page_faults():
    default, tuned = _child(ZOO_HOST_ALLOCATOR="default"), _child()
    assert not default["applied"] and tuned["applied"]
    # 64 MiB of fresh pages is 16,384 faults of 4 KiB: the default allocator pays them at every call;
    # tuned, the heap may still grow once or twice in the 10 calls (another thread's block in the way)
    assert default["faults_per_call"] > 8000, default
    assert tuned["faults_per_call"] < 4000, tuned
    assert tuned["describe"].startswith("glibc malloc with no mmap or trim below 2 GiB")


@glibc_only
def test_glibc_settings_in_the_environment_are_left_as_the_user_set_them():
    result = _child(MALLOC_ARENA_MAX="4")
    assert not result["applied"]
    assert "MALLOC_ARENA_MAX is set" in result["describe"]


def test_opt_out_and_other_systems_are_left_alone(monkeypatch):
    monkeypatch.setenv(host.OPT_OUT, "default")
    assert host.why_not() == "ZOO_HOST_ALLOCATOR=default"
    monkeypatch.delenv(host.OPT_OUT)
    for name in host.GLIBC_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(host.platform, "libc_ver", lambda: ("", ""))
    assert host.why_not() == "not Linux with glibc"
    monkeypatch.setattr(host, "_applied", None)
    assert host.tune_allocator() is False  # and mallopt is not called: nothing in this process changed


def test_hosts_with_an_accelerator_plugin_keep_the_default_unless_jax_is_pinned_to_the_cpu(monkeypatch):
    for name in (host.OPT_OUT, *host.GLIBC_ENV, "JAX_PLATFORMS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(host.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(host.sys, "platform", "linux")
    monkeypatch.setattr(host, "_accelerator_plugin", lambda: "jax_cuda12_plugin")
    assert "jax_cuda12_plugin" in host.why_not()
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert host.why_not() is None


@glibc_only
def test_a_cpu_client_made_before_keeps_asynchronous_executions_and_says_so():
    code = ("import jax, jax.numpy as jnp; jnp.ones(2).block_until_ready()\n"
            "from zoo import host; print(host.tune_allocator()); print(host.describe())")
    clean = {k: v for k, v in os.environ.items() if k not in (host.OPT_OUT, *host.GLIBC_ENV)}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                         text=True, timeout=120, check=True).stdout.splitlines()
    assert out[0] == "True" and "asynchronous (JAX's CPU client was made before)" in out[1]
