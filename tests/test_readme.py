"""The README and docs/ against the code, so they cannot drift unnoticed.

Every `zoo ...` and `make ...` line in their fenced code blocks parses with the real CLI parser (nothing
is run) or names a Makefile target; every config file such a command names exists and loads with its
`--set` overrides (or fails with the error the docs print after it); every config key written as
`a.b.c` in backticks and every YAML block is accepted by the config schema; every `zoo.<name>` is on
the public face; every relative link and repository path points at something that exists. Nothing
is run, and the checks import no JAX (but the one marked slow, and a compare YAML block if the docs
ever hold one)."""

from __future__ import annotations

import dataclasses
import re
import shlex
import typing
from pathlib import Path

import pytest
import yaml

import zoo
from zoo import cli
from zoo import config as config_lib
from zoo.errors import ZooError

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "results" / "README.md"]
BASE_CONFIG = REPO / "configs" / "digits" / "cnn.yaml"  # partial YAML blocks and dotted keys are checked on top of it
REPO_DIRS = ("configs", "scripts", "benchmarks", "tests", "tools", "zoo", "docs", "results")

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
FILE_SUFFIXES = {"bin", "json", "jsonl", "yaml", "md", "py", "png", "csv", "npz", "npy", "gz", "txt", "zoo", "onnx"}
ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def _parser():
    build = getattr(cli, "build_parser", None) or cli.make_parser
    return build()


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _blocks(path: Path):
    """(language, body, first line number of the body) of every fenced block."""
    text = path.read_text()
    for match in FENCE.finditer(text):
        yield match.group(1), match.group(2), _line_of(text, match.start(2))


def _prose(path: Path) -> str:
    """The file with its fenced blocks blanked (line numbers kept)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), path.read_text())


@dataclasses.dataclass(frozen=True)
class Command:
    where: str  # file:line
    tokens: tuple  # after the program name
    program: str  # "zoo" or "make"
    error: str | None  # the "zoo: error: ..." line the docs print right after it, if any


def _commands() -> list[Command]:
    found = []
    for path in DOCS:
        for language, body, first in _blocks(path):
            if language in ("python", "yaml"):
                continue
            lines = body.split("\n")
            i = 0
            while i < len(lines):
                start, line = i, lines[i]
                while line.rstrip().endswith("\\") and i + 1 < len(lines):  # shell continuation lines
                    i += 1
                    line = line.rstrip()[:-1] + " " + lines[i].strip()
                i += 1
                stripped = line.strip()
                if stripped.startswith("$ "):
                    stripped = stripped[2:]
                try:
                    tokens = shlex.split(stripped, comments=True)
                except ValueError:
                    continue
                while tokens and ENV_ASSIGNMENT.match(tokens[0]):
                    tokens = tokens[1:]
                if not tokens or tokens[0] not in ("zoo", ".venv/bin/zoo", "make"):
                    continue
                following = lines[i].strip() if i < len(lines) else ""
                error = following[len("zoo: error: "):] if following.startswith("zoo: error: ") else None
                program = "make" if tokens[0] == "make" else "zoo"
                found.append(Command(f"{path.relative_to(REPO)}:{first + start}", tuple(tokens[1:]), program, error))
    return found


COMMANDS = _commands()
ZOO_COMMANDS = [c for c in COMMANDS if c.program == "zoo"]
MAKE_COMMANDS = [c for c in COMMANDS if c.program == "make"]


def _parse(tokens) -> object:
    """argparse's namespace for `zoo TOKENS`; the command `zoo launch` runs is parsed too."""
    args = _parser().parse_args(list(tokens))
    if tokens and tokens[0] == "launch":
        inner = list(tokens[tokens.index("--") + 1:]) if "--" in tokens else list(args.command)
        assert inner and inner[0] in ("train", "compare", "eval"), f"zoo launch runs train, compare or eval: {tokens}"
        return _parse(inner)
    return args


def test_the_docs_hold_commands_to_check():
    assert len(ZOO_COMMANDS) >= 20 and {"demo", "test"} <= {t for c in MAKE_COMMANDS for t in c.tokens}


@pytest.mark.parametrize("command", ZOO_COMMANDS, ids=[c.where for c in ZOO_COMMANDS])
def test_zoo_command_parses_with_the_cli_parser(command):
    try:
        args = _parse(command.tokens)
    except ZooError as error:
        pytest.fail(f"{command.where}: `zoo {shlex.join(command.tokens)}` is refused by the CLI: {error}")
    config = getattr(args, "config", None)
    if not (isinstance(config, str) and config.startswith("configs/")):
        return
    assert (REPO / config).is_file(), f"{command.where}: {config} does not exist"
    if args.func is not cli.cmd_train:
        return  # compare configs are checked by the compare tests (loading one imports JAX)
    overrides = getattr(args, "set", None) or []
    if command.error is None:
        config_lib.load(REPO / config, overrides)
        return
    with pytest.raises(ZooError) as refused:
        config_lib.load(REPO / config, overrides)
    expected = command.error.removesuffix("...").rstrip(" ,")
    assert str(refused.value).startswith(expected), f"{command.where}: the docs print another error"


def _makefile_targets() -> set[str]:
    targets = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-/$() ]+?)\s*:(?!=)", line)
        if match and not line.startswith(("\t", ".PHONY")):
            targets.update(match.group(1).split())
    return targets


@pytest.mark.parametrize("command", MAKE_COMMANDS, ids=[c.where for c in MAKE_COMMANDS])
def test_make_command_names_makefile_targets(command):
    goals = [t for t in command.tokens if not t.startswith("-") and "=" not in t]
    missing = [goal for goal in goals if goal not in _makefile_targets()]
    assert goals and not missing, f"{command.where}: no Makefile target {missing or command.tokens}"


def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(config_lib.Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_lib.Config) if dataclasses.is_dataclass(hints[f.name])}


def _key_exists(key: str) -> bool:
    """Whether `key` (dotted) names a field of the schema; model hyperparameters are the model's to check."""
    parts = key.split(".")
    node = config_lib.Config
    for i, part in enumerate(parts):
        if node is config_lib.ModelConfig:
            return True
        if not dataclasses.is_dataclass(node):
            return node is dict or typing.get_origin(node) is not None  # mappings: any inner key
        hints = typing.get_type_hints(node)
        if part not in {f.name for f in dataclasses.fields(node)}:
            return False
        node = hints[part]
    return True


def _base_raw() -> dict:
    return config_lib.load_inherited(BASE_CONFIG)


def _dotted_keys():
    """(where, key, value or None) of every `[--set ]section.key[: value | =value]` in backticks in the prose."""
    sections = "|".join(_sections())
    pattern = re.compile(rf"(?:--set\s+)?((?:{sections})(?:\.[a-z_][a-z_0-9]*)+)(?:\s*[:=]\s*(.+))?")
    for path in DOCS:
        prose = _prose(path)
        for match in INLINE.finditer(prose):
            found = pattern.fullmatch(match.group(1).strip())
            if found and found.group(1).rsplit(".", 1)[1] not in FILE_SUFFIXES:  # `train.bin` is a file
                yield f"{path.relative_to(REPO)}:{_line_of(prose, match.start())}", found.group(1), found.group(2)


DOTTED = list(_dotted_keys())


def test_the_docs_name_config_keys():
    assert len(DOTTED) >= 30


@pytest.mark.parametrize("where,key,value", DOTTED, ids=[f"{w}:{k}" for w, k, _ in DOTTED])
def test_config_key_in_backticks_is_in_the_schema(where, key, value):
    assert _key_exists(key), f"{where}: `{key}` is not a config key"
    placeholder = value is None or re.fullmatch(r"[A-Z][A-Z_0-9]*", value.strip()) or "<" in value
    if not placeholder:
        try:
            config_lib.from_dict(config_lib.apply_overrides(_base_raw(), [f"{key}={value}"]))
        except ZooError as error:
            pytest.fail(f"{where}: `{key}: {value}` is refused by the config schema: {error}")


def _blocks_in(wanted: str) -> list[tuple[str, str]]:
    """('FILE:LINE', body) of every fenced block of language `wanted` in the README and docs."""
    return [(f"{path.relative_to(REPO)}:{first}", body)
            for path in DOCS for language, body, first in _blocks(path) if language == wanted]


YAML_BLOCKS = _blocks_in("yaml")


def _is_compare(raw: dict) -> bool:
    return bool({"models", "budget", "datasets", "seeds"} & set(raw))


@pytest.mark.parametrize("where,body", YAML_BLOCKS, ids=[w for w, _ in YAML_BLOCKS])
def test_yaml_block_is_accepted_by_the_schema(where, body, tmp_path, monkeypatch):
    raw = yaml.safe_load(body)
    assert isinstance(raw, dict), f"{where}: a YAML block that is not a mapping"
    if _is_compare(raw):  # the compare loader resolves model configs from the repository root
        monkeypatch.chdir(REPO)
        path = tmp_path / "compare.yaml"
        path.write_text(body)
        zoo.load_compare(path)
        return
    raw.pop("base", None)  # a path relative to a file this block is not
    complete = "name" in raw and "train" in raw
    try:
        config_lib.from_dict(raw if complete else config_lib.merge(_base_raw(), raw))
    except ZooError as error:
        pytest.fail(f"{where}: refused by the config schema: {error}")


PYTHON_BLOCKS = _blocks_in("python")


def _on_the_public_face(name: str) -> bool:
    return name in zoo.__all__ or name == "__version__" or (REPO / "zoo" / f"{name}.py").is_file() \
        or (REPO / "zoo" / name / "__init__.py").is_file()


@pytest.mark.parametrize("where,body", PYTHON_BLOCKS, ids=[w for w, _ in PYTHON_BLOCKS])
def test_python_block_compiles_and_uses_the_public_face(where, body):
    compile(body, where, "exec")
    unknown = sorted({name for name in re.findall(r"\bzoo\.([A-Za-z_]\w*)", body) if not _on_the_public_face(name)})
    assert not unknown, f"{where}: zoo has no {', '.join(unknown)}"


def test_zoo_names_in_the_prose_are_on_the_public_face():
    unknown = []
    for path in DOCS:
        prose = _prose(path)
        for match in INLINE.finditer(prose):
            found = re.match(r"zoo\.([A-Za-z_]\w*)", match.group(1))
            if found and not _on_the_public_face(found.group(1)):
                unknown.append(f"{path.relative_to(REPO)}:{_line_of(prose, match.start())}: {match.group(1)}")
    assert not unknown


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_relative_links_point_at_files_and_headings():
    broken = []
    for path in DOCS:
        for match in LINK.finditer(_prose(path)):
            target = match.group(1)
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            if not resolved.exists():
                broken.append(f"{path.relative_to(REPO)}: {target}")
            elif anchor and resolved.suffix == ".md":
                headings = re.findall(r"^#+\s+(.+)$", _prose(resolved), re.M)
                if anchor not in {_slug(h) for h in headings}:
                    broken.append(f"{path.relative_to(REPO)}: {target} (no such heading)")
    assert not broken


def test_repository_paths_in_backticks_exist():
    pattern = re.compile(rf"(?:{'|'.join(REPO_DIRS)})/[\w./\-]*")
    missing = []
    for path in DOCS:
        prose = _prose(path)
        for match in INLINE.finditer(prose):
            span = match.group(1).split("::")[0].strip()
            if pattern.fullmatch(span) and not (REPO / span).exists():
                missing.append(f"{path.relative_to(REPO)}:{_line_of(prose, match.start())}: {span}")
    assert not missing


def test_readme_is_a_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert "make demo" in text.split("\n## ")[1] and "make test" in text.split("\n## ")[1], \
        "the two commands come first"
    for doc in sorted((REPO / "docs").glob("*.md")):
        assert f"(docs/{doc.name})" in text, f"README does not link docs/{doc.name}"
    prose = _prose(README)
    assert not re.search(r"\bp [=<≥] ?0?\.\d", prose), "p-values belong in results/README.md"
    assert not re.search(r"load average|\b20\d\d-\d\d-\d\d\b", prose, re.I), "load averages and dates belong in docs/"


@pytest.mark.slow  # imports JAX and Flax to read the registry (~1.5 s on 2 cores)
def test_readme_model_table_lists_every_registered_model():
    from zoo import models

    table = next(body for language, body, _ in _blocks(README) if body.startswith("$ zoo list\n"))
    listed = [line.split()[0] for line in table.splitlines()[4:] if line.strip()]
    assert listed == models.list_models()


def test_the_tasks_doc_walks_a_regression_from_training_to_predicting_from_its_export():
    """Issue 24 (docs): docs/tasks.md's commands train a regression config, evaluate, predict, export and
    predict from that export, all on the run directory the train command wrote, then compare."""
    commands = [c.tokens for c in ZOO_COMMANDS if c.where.startswith("docs/tasks.md:")]
    assert [tokens[0] for tokens in commands] == ["train", "eval", "predict", "export", "predict", "compare"]
    train, evaluate, predict, export, from_export, _ = commands
    assert config_lib.load(REPO / train[1]).task == "regress"
    run_dir = train[train.index("--workdir") + 1]
    assert evaluate[1] == predict[1] == export[1] == run_dir
    assert from_export[1] == export[export.index("--out") + 1] and from_export[2] == predict[2]


SAMPLE_COMMANDS = [c for c in ZOO_COMMANDS if c.tokens[:1] == ("sample",)]


def test_the_docs_show_zoo_sample():
    """Issue 24: the README and docs/language-models.md show sampling from a language-model run."""
    assert {c.where.split(":")[0] for c in SAMPLE_COMMANDS} >= {"README.md", "docs/language-models.md"}


@pytest.mark.parametrize("command", SAMPLE_COMMANDS, ids=[c.where for c in SAMPLE_COMMANDS])
def test_a_documented_zoo_sample_reads_a_run_a_documented_zoo_train_writes_before_it(command):
    """Issue 24: typed in order, the docs' commands work: the run directory `zoo sample` reads is the
    --workdir of a `zoo train` of a language-model config (task: lm) shown earlier in the same file."""
    run_dir = _parse(command.tokens).run_dir
    file, line = command.where.rsplit(":", 1)
    trains = [c for c in ZOO_COMMANDS if c.where.split(":")[0] == file and int(c.where.rsplit(":", 1)[1]) < int(line)
              and c.tokens[:1] == ("train",) and _parse(c.tokens).workdir == run_dir]
    assert trains, f"{command.where}: no `zoo train ... --workdir {run_dir}` before `zoo sample {run_dir}`"
    config = config_lib.load(REPO / _parse(trains[-1].tokens).config)
    assert config.task == "lm" and config.model.name.endswith("_lm"), f"{trains[-1].where}: not a language model"


RECIPE_CONFIG = "configs/cifar10/resnet20_paper.yaml"


def test_readme_shows_each_recipe_piece_of_issue_25():
    """Issue 25: the README's CLI and config sections hold a command or key for every piece (the model
    inspector, import for prediction alone, --weights, the compile cache, augmentation, EMA, the paper's
    CIFAR recipe)."""
    commands = [shlex.join(c.tokens) for c in ZOO_COMMANDS if c.where.startswith("README.md")]
    assert any(c.startswith("info ") for c in commands)
    assert any(c.startswith("import ") and "--dataset" not in c.split("#")[0] for c in commands)
    text = README.read_text()
    assert "--weights raw" in text and "--no-compile-cache" in text and "$ZOO_CACHE_DIR" in text and RECIPE_CONFIG in text
    config_block = next(body for language, body, _ in _blocks(README) if language == "yaml")
    assert "augment: {crop_pad" in config_block and "ema: {decay" in config_block


@pytest.mark.slow  # builds resnet20 twice (~1 s)
def test_readme_resnet20_parameter_counts_are_the_registrys():
    """Both resnet20 counts the README quotes are what `zoo list` counts at 32x32x3."""
    from zoo import models

    for shortcut in ("projection", "identity_pad"):
        count = models.param_count(models.build("resnet20", 10, shortcut=shortcut), (32, 32, 3))
        assert f"{count:,}" in README.read_text(), (shortcut, count)


SEEDS_COMMANDS = [c for c in ZOO_COMMANDS if c.tokens[:1] == ("train",) and "--seeds" in c.tokens]


def test_the_docs_show_zoo_train_seeds_with_seeds_and_a_config_that_load():
    """Issue 27: the README and docs/population.md show `zoo train --seeds`; each one's seeds parse and
    its config loads."""
    assert {c.where.split(":")[0] for c in SEEDS_COMMANDS} >= {"README.md", "docs/population.md"}
    for command in SEEDS_COMMANDS:
        args = _parse(command.tokens)
        assert config_lib.parse_seeds(args.seeds), command.where
        config_lib.load(REPO / args.config, args.set or [])


def test_a_documented_member_directory_is_one_a_documented_seeds_train_writes_before_it():
    """Issue 27: typed in order, docs/population.md's commands work: a command on WORKDIR/seed<k> comes
    after a `zoo train --seeds` into WORKDIR whose seeds hold k."""
    written = {}
    for command in [c for c in ZOO_COMMANDS if c.where.startswith("docs/population.md:")]:
        if command in SEEDS_COMMANDS:
            args = _parse(command.tokens)
            written.update({f"{args.workdir}/seed{seed}": command.where for seed in config_lib.parse_seeds(args.seeds)})
            continue
        members = [token for token in command.tokens if re.fullmatch(r".*/seed\d+", token)]
        assert members and all(member in written for member in members), f"{command.where}: {command.tokens}"
