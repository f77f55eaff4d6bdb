"""Issue 25, "a compile cache": CLI runs keep JAX's persistent compilation cache in the user's cache
directory; a second `zoo train` finds its compiles there; a cache that cannot be used costs one
warning line and a normal compile, never a failure."""

from __future__ import annotations

import jax
import pytest
from jax.experimental.compilation_cache import compilation_cache

HITS = "/jax/compilation_cache/cache_hits"


@pytest.fixture
def own_cache(compile_cache, tmp_path, monkeypatch):
    """The suite's compilation cache switched off for one test, as in a fresh `zoo` process whose user
    set no JAX cache directory; $ZOO_CACHE_DIR is tmp_path/cache. Yields a list of the cache hits seen."""
    import warnings

    hits = []
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # put back what zoo wraps
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    jax.monitoring.register_event_listener(lambda event, **_: hits.append(event) if event == HITS else None)
    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()
    try:
        yield hits
    finally:
        jax.monitoring.clear_event_listeners()
        jax.config.update("jax_compilation_cache_dir", str(compile_cache))
        compilation_cache.reset_cache()


def _train(zoo_main, write_config, workdir, *extra):
    return zoo_main("train", write_config({"train": {"steps": 1}, "checkpoint": {"every": 1}}), "--workdir", workdir,
                    *extra)


def _compile_something():
    """A function this process has never compiled, compiled and run: its result."""
    return float(jax.jit(lambda x: (x * 3.0 + 1.0).sum())(jax.numpy.arange(7.0)))


@pytest.mark.slow
def test_second_zoo_train_of_a_config_loads_its_train_step_from_the_cache(own_cache, tmp_path, zoo_main,
                                                                          write_config):
    """The first run writes its compiled train step under $ZOO_CACHE_DIR/jax; the second (a new run
    directory, the same config) reads it back (JAX's cache-hit events) and writes no new entry."""
    status, _, err = _train(zoo_main, write_config, tmp_path / "first")
    assert status == 0, err
    entries = sorted((tmp_path / "cache" / "jax").glob("*-cache"))
    assert any(path.name.startswith("jit_step-") for path in entries), entries
    assert not own_cache
    status, _, err = _train(zoo_main, write_config, tmp_path / "second")
    assert status == 0 and "warning" not in err, err
    assert own_cache and sorted((tmp_path / "cache" / "jax").glob("*-cache")) == entries


def test_corrupt_cache_entries_cost_one_warning_line_and_a_normal_compile(own_cache, tmp_path):
    """Every entry overwritten with garbage: the next compile warns once, in one line, and computes."""
    from zoo import util

    lines = []
    assert util.enable_compile_cache(lines.append) == tmp_path / "cache" / "jax"
    assert _compile_something() == 70.0
    entries = list((tmp_path / "cache" / "jax").glob("*-cache"))
    for entry in entries:
        entry.write_bytes(b"not an executable" * 8)
    jax.clear_caches()
    assert entries and _compile_something() == 70.0 and _compile_something() == 70.0
    assert len(lines) == 1 and lines[0].startswith("the compilation cache in ") and "\n" not in lines[0]


def test_unusable_cache_directory_costs_one_warning_line_and_a_normal_compile(own_cache, tmp_path, monkeypatch):
    """$ZOO_CACHE_DIR naming a file (no directory can be made there): one warning line, cache off."""
    from zoo import util

    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "a_file"))
    lines = []
    assert util.enable_compile_cache(lines.append) is None
    assert _compile_something() == 70.0
    assert len(lines) == 1 and lines[0].startswith("compilation cache off:"), lines
    assert jax.config.jax_compilation_cache_dir is None


def test_no_compile_cache_flag_leaves_the_cache_off(own_cache, tmp_path):
    """`zoo train ... --no-compile-cache`: JAX's cache stays off and nothing is made under $ZOO_CACHE_DIR;
    without the flag it is on."""
    from zoo import cli

    cli._compile_cache(cli.make_parser().parse_args(["train", "c.yaml", "--no-compile-cache"]))
    assert jax.config.jax_compilation_cache_dir is None and not (tmp_path / "cache").exists()
    cli._compile_cache(cli.make_parser().parse_args(["train", "c.yaml"]))
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache" / "jax")


def test_cache_directory_follows_zoo_cache_dir_then_xdg_then_home(monkeypatch, tmp_path):
    """Where the cache lives: $ZOO_CACHE_DIR, else $XDG_CACHE_HOME/zoo, else ~/.cache/zoo."""
    from pathlib import Path

    from zoo import util

    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "mine"))
    assert util.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("ZOO_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert util.cache_dir() == tmp_path / "xdg" / "zoo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert util.cache_dir() == Path.home() / ".cache" / "zoo"


def test_users_own_jax_cache_directory_is_kept(compile_cache):
    """A JAX cache directory already set (JAX_COMPILATION_CACHE_DIR, or the suite's) is left as it is."""
    from zoo import util

    assert util.enable_compile_cache(lambda line: pytest.fail(line)) == compile_cache
    assert jax.config.jax_compilation_cache_dir == str(compile_cache)
