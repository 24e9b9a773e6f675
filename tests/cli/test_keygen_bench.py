"""``agentmesh keygen`` writes a key pair a node starts with and prints the public key and the
seed form; it never overwrites keys by accident. ``agentmesh bench`` runs the benchmarks of the
checkout and says clearly when there are none."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
from pathlib import Path

import click
import pytest
import zmq.auth
from click.testing import CliRunner

import mesh.cli._bench
from mesh import MeshNode
from mesh.cli import main

ROOT = Path(__file__).resolve().parents[2]
BENCH_TIMEOUT_S = 60.0


def test_keygen_writes_a_key_pair_and_prints_how_to_use_it(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    result = CliRunner().invoke(main, ["keygen", str(keys), "node-a"])
    assert result.exit_code == 0, result.output
    public_file, secret_file = keys / "node-a.key", keys / "node-a.key_secret"
    public, secret = zmq.auth.load_certificate(secret_file)
    assert secret is not None and zmq.auth.load_certificate(public_file)[0] == public
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    lines = result.output.splitlines()
    assert lines[0] == f"public key:  {public.decode()}"
    assert f"AGENTMESH_SECRET_KEY_FILE={secret_file}" in result.output
    assert lines[-1] == f"as a seed:  tcp://HOST:PORT#{public.decode()}"

    async def start_with_the_key() -> str | None:
        async with MeshNode(discovery="none", secret_key_file=secret_file, authorized_keys_dir=keys) as node:
            assert node.address is not None and node.address.endswith("#" + public.decode())
            return node.public_key

    assert asyncio.run(start_with_the_key()) == public.decode()


def test_keygen_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["keygen", str(tmp_path), "n"]).exit_code == 0
    before = (tmp_path / "n.key_secret").read_bytes()
    refused = runner.invoke(main, ["keygen", str(tmp_path), "n"])
    assert refused.exit_code == 1 and "exists: choose another NAME, or --force" in refused.output
    assert (tmp_path / "n.key_secret").read_bytes() == before
    assert runner.invoke(main, ["keygen", str(tmp_path), "n", "--force"]).exit_code == 0
    assert (tmp_path / "n.key_secret").read_bytes() != before


@pytest.mark.parametrize("name", ["../escape", "a b", ""])
def test_keygen_refuses_a_name_that_is_not_a_plain_file_name(tmp_path: Path, name: str) -> None:
    result = CliRunner().invoke(main, ["keygen", str(tmp_path), name])
    assert result.exit_code == 2 and "use letters, digits" in result.output
    assert list(tmp_path.iterdir()) == []


def run_agentmesh(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "mesh", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_S,
        check=False,
    )


def test_bench_runs_the_benchmarks_of_the_checkout_from_anywhere(tmp_path: Path) -> None:
    listed = run_agentmesh("bench", "--list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "inprocess.publish" in listed.stdout and "inprocess.rpc" in listed.stdout
    helped = run_agentmesh("bench", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "usage: python -m benchmarks" in helped.stdout
    wrong = run_agentmesh("bench", "no-such-scenario", cwd=tmp_path)
    assert wrong.returncode == 2 and "no scenario or group named 'no-such-scenario'" in wrong.stderr


def test_bench_outside_a_source_checkout_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mesh.cli._bench, "CHECKOUT", tmp_path)
    result = CliRunner().invoke(main, ["bench", "--quick"])
    assert result.exit_code == 1
    assert "runs the benchmarks of a source checkout, and this installation has none" in result.output


def test_any_option_can_come_from_an_agentmesh_command_option_variable(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["keygen", str(tmp_path), "n"]).exit_code == 0
    forced = runner.invoke(main, ["keygen", str(tmp_path), "n"], env={"AGENTMESH_KEYGEN_FORCE": "1"})
    assert forced.exit_code == 0, forced.output


def test_the_help_documents_the_environment_variables() -> None:
    runner = CliRunner()
    assert "AGENTMESH_<COMMAND>_<OPTION>" in runner.invoke(main, ["--help"], terminal_width=200).output
    assert "AGENTMESH_LOG_LEVEL" in runner.invoke(main, ["--help"], terminal_width=200).output
    for command in ("node", "watch", "top"):
        text = runner.invoke(main, [command, "--help"], terminal_width=200).output
        for variable in ("AGENTMESH_MESH", "AGENTMESH_SEEDS", "AGENTMESH_DISCOVERY", "AGENTMESH_HOST",
                         "AGENTMESH_SECRET_KEY_FILE", "AGENTMESH_AUTHORIZED_KEYS_DIR"):  # fmt: skip
            assert variable in text, (command, variable)
    assert "AGENTMESH_PORT" in runner.invoke(main, ["node", "--help"], terminal_width=200).output


@pytest.mark.parametrize(
    ("variable", "option"),
    [("AGENTMESH_TOP_INTERVAL", "--interval"), ("AGENTMESH_TOP_DURATION", "--duration")],
)
def test_the_variable_is_named_after_the_option_as_typed(variable: str, option: str) -> None:
    """``--interval`` sets the parameter ``interval_s``: its variable is still AGENTMESH_TOP_INTERVAL
    (read: an out-of-range value there is refused as that option's). Were it ignored, top would
    look once at a dead seed, no mDNS, and end."""
    args = ["top", "--once", "--discovery", "none", "--seed", "tcp://127.0.0.1:1", "--wait", "0.5"]
    result = CliRunner().invoke(main, args, env={variable: "-1"})
    assert result.exit_code == 2, result.output
    assert option in result.output


def test_every_option_of_every_command_has_an_agentmesh_variable() -> None:
    for name, command in main.commands.items():
        for param in command.params:
            if isinstance(param, click.Option) and any(opt.startswith("--") for opt in param.opts):
                assert isinstance(param.envvar, str) and param.envvar.startswith("AGENTMESH_"), (name, param.opts)


def test_keygen_into_a_directory_it_cannot_create_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = CliRunner().invoke(main, ["keygen", str(blocker / "keys"), "n"])
    assert result.exit_code == 1
    assert "cannot write the keys in" in result.output and "Traceback" not in result.output
    assert not isinstance(result.exception, OSError)


@pytest.mark.parametrize(
    "args",
    [
        ["peers", "--interface", "nosuch0"],
        ["watch", "readings", "--mdns-interface", "nosuch0", "--timeout", "1"],
        ["top", "--once", "--mdns-interface", "nosuch0", "--wait", "0.5"],
    ],
)
def test_an_unknown_mdns_interface_is_a_one_line_error(args: list[str]) -> None:
    """Refused before any socket opens (so nothing is ever announced from this test)."""
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "nosuch0" in result.output and "does not exist" in result.output
    assert isinstance(result.exception, SystemExit)  # click's error exit, not an exception escaping
