"""Every code block of the README is exercised: a Python block is either byte-identical to an example
that a test runs, or is run here (inside a fresh loopback-only network namespace, so a block may bind
a fixed port or use mDNS without touching a real network); an sh block's commands exist, with the
options and environment variables they use (make targets, ``agentmesh`` commands through their
``--help``, example programs, ``pip`` extras); a text block lists paths that exist."""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.netns import NetnsUnavailable, Network, unavailable_reason
from support.procs import CLEAN_ENV

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXAMPLES = ROOT / "examples"
# An interpreter start, imports and a node or two on loopback: generous for a loaded 2-core machine.
RUN_TIMEOUT_S = 60.0
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
_OPTION = re.compile(r"^--[a-z][a-z0-9-]*")


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.language})"


def blocks(language: str | None = None) -> list[Block]:
    readme = README.read_text()
    found = [Block(m.group(1), m.group(2), readme.count("\n", 0, m.start()) + 1) for m in _FENCE.finditer(readme)]
    return [b for b in found if language is None or b.language == language]


def example_with_text(text: str) -> Path | None:
    return next((path for path in EXAMPLES.glob("*.py") if path.read_text() == text), None)


def run_by_a_test(example: Path) -> bool:
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py") if p != Path(__file__))
    return re.search(rf'run_example\("{re.escape(example.name)}"\)|/ "{re.escape(example.name)}"', tests) is not None


def test_every_block_is_python_sh_or_text() -> None:
    assert blocks(), "no code blocks found: the fence pattern no longer matches the README"
    assert [str(b) for b in blocks() if b.language not in ("python", "sh", "text")] == []


def test_the_hello_mesh_block_is_about_fifteen_lines() -> None:
    hello = next(b for b in blocks("python") if "class Greeter" in b.text)
    assert len([line for line in hello.text.splitlines() if line.strip()]) <= 15


@pytest.mark.parametrize("block", blocks("python"), ids=str)
def test_each_python_block_is_an_example_run_by_a_test_or_runs_here(block: Block, tmp_path: Path) -> None:
    example = example_with_text(block.text)
    if example is not None:
        assert run_by_a_test(example), f"{block} is examples/{example.name}, which no test runs"
        return
    assert "def test_" not in block.text, f"{block}: a test belongs in an example file that a test runs"
    reason = unavailable_reason()
    if reason is not None:
        pytest.fail(reason, pytrace=False)
    script = tmp_path / "block.py"
    script.write_text(block.text)
    try:
        with Network(1, loopback_only=True) as network:
            result = subprocess.run(
                [*network[0].exec_prefix(), sys.executable, "-W", "error", str(script)],
                cwd=tmp_path,
                env=CLEAN_ENV,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT_S,
                check=False,
            )
    except NetnsUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    assert result.returncode == 0, f"{block} failed:\n{result.stdout}{result.stderr}"
    assert result.stderr == "" and result.stdout.strip(), f"{block}:\n{result.stdout}{result.stderr}"


def sh_commands() -> list[tuple[Block, str]]:
    commands = []
    for block in blocks("sh"):
        for line in block.text.splitlines():
            command = re.split(r"\s+#\s", line, maxsplit=1)[0].strip()  # drop a trailing comment
            if command and not command.startswith("#"):
                commands.append((block, command))
    return commands


@functools.cache
def help_text(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-W", "error", *args, "--help"],
        cwd=ROOT,
        env={**CLEAN_ENV, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"{' '.join(args)} --help failed:\n{result.stderr}"
    return result.stdout


def check_options(words: list[str], variables: list[str], text: str, where: str) -> None:
    for word in words:
        option = _OPTION.match(word)
        if option is not None:
            assert option.group(0) in text, f"{where}: {option.group(0)} is not an option of it"
    for variable in variables:
        assert variable in text, f"{where}: {variable} is not documented in its --help"


@pytest.mark.parametrize(("block", "command"), sh_commands(), ids=lambda x: x if isinstance(x, str) else str(x))
def test_each_sh_command_exists_with_its_options(block: Block, command: str) -> None:
    words = shlex.split(command)
    variables = []
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        variables.append(words.pop(0).partition("=")[0])
    where = f"{block}: `{command}`"
    program, args = words[0], words[1:]
    if program == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
        assert args and all(a in targets for a in args if "=" not in a), f"{where}: no such make target"
    elif program == "agentmesh":
        assert args, where
        check_options(args[1:], variables, help_text("-m", "mesh", args[0]), where)
    elif program == "python" and args[:2] == ["-m", "mesh.bridge"]:
        check_options(args[2:], variables, help_text("-m", "mesh.bridge"), where)
    elif program == "python" and args and args[0].startswith("examples/"):
        example = ROOT / args[0]
        assert example.is_file() and run_by_a_test(example), f"{where}: no such example run by a test"
        check_options(args[1:], variables, help_text(str(example)), where)
    elif program == "pip" and args[:1] == ["install"]:
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        for requirement in args[1:]:
            name, _, extras = requirement.partition("[")
            assert name == project["name"], f"{where}: not this project"
            for extra in extras.rstrip("]").split(","):
                assert extra in project["optional-dependencies"], f"{where}: no extra {extra!r}"
    else:
        pytest.fail(f"{where}: a command this test does not know how to check")


@pytest.mark.parametrize("block", blocks("text"), ids=str)
def test_each_text_block_lists_paths_that_exist(block: Block) -> None:
    for line in block.text.splitlines():
        if line.strip():
            path = line.split()[0]
            assert (ROOT / path).exists(), f"{block}: {path} does not exist"


def test_the_readme_names_only_commands_and_variables_that_exist() -> None:
    """Inline code too: every `agentmesh COMMAND` is a command, every AGENTMESH_* variable is read somewhere."""
    readme = README.read_text()
    commands = set(re.findall(r"`agentmesh (\w+)", readme))
    assert commands <= set(re.findall(r"^  (\w+) ", help_text("-m", "mesh"), re.M)), commands
    sources = "\n".join(p.read_text() for p in (ROOT / "mesh").rglob("*.py"))
    sources += "\n".join(p.read_text() for p in (ROOT / "discovery").rglob("*.py"))
    for variable in set(re.findall(r"AGENTMESH_[A-Z_]+\b", readme)):
        assert variable in sources, f"{variable} is read nowhere"


def test_every_file_the_readme_names_exists() -> None:
    named = set(
        re.findall(r"\b((?:examples|benchmarks|mesh|tests|tools)/[\w./-]+\.(?:py|md|png|sh))", README.read_text())
    )
    assert named, "no file names found: the pattern no longer matches the README"
    assert sorted(path for path in named if not (ROOT / path).is_file()) == []
