"""``agentmesh node MODULE:FUNC`` runs a node that hosts what FUNC registers, joins through seeds,
serves calls from other nodes, and leaves gracefully on SIGTERM and SIGINT; configuration comes
from flags or AGENTMESH_* variables; a bad MODULE:FUNC or a failing FUNC ends it with a clear error."""

from __future__ import annotations

import json
import signal
import socket
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.cli import Children, child_env

from mesh import AgentId
from mesh.testing import wait_for

WAIT_S = 15.0
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

AGENTS = textwrap.dedent(
    """
    from mesh import MessageContext, RoutedAgent, rpc


    class Shout(RoutedAgent):
        @rpc
        async def shout(self, message: str, ctx: MessageContext) -> str:
            return message.upper() + " from " + self.runtime.name


    async def setup(node):
        await Shout.register(node, "shout", lambda: Shout("shouts"))


    def setup_sync(node):
        return Shout.register(node, "shout", lambda: Shout("shouts"))  # an awaitable: awaited for it


    def broken(node):
        raise RuntimeError("no agents today")
    """
)


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "app"
    directory.mkdir()
    (directory / "agents.py").write_text(AGENTS)
    return directory


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("target", "stop_signal"),
    [("agents.py:setup", signal.SIGTERM), ("agents:setup_sync", signal.SIGINT)],
    ids=["file-async-SIGTERM", "module-sync-SIGINT"],
)
async def test_a_node_serves_the_agents_its_function_registers_and_leaves_on_a_signal(
    children: Children, nodes: Callable[..., Any], agents_dir: Path, target: str, stop_signal: signal.Signals
) -> None:
    caller = await nodes("caller")
    node = await children.start(
        "node", ["-m", "mesh", "node", target, "--discovery", "none", "--seed", caller.address, "--name", "box-1",
                 "--json"],
        cwd=agents_dir,
    )  # fmt: skip
    ready = json.loads(await node.line())
    assert ready["name"] == "box-1" and ready["mesh"] == "default" and ready["pid"] == node.pid
    assert ready["address"].startswith("tcp://127.0.0.1:")
    await caller.wait_for_peers(1, timeout=WAIT_S)
    assert [(p.name, sorted(p.agent_types)) for p in caller.peers] == [("box-1", ["shout"])]
    assert await caller.send_message("hi", AgentId("shout", "k"), timeout=WAIT_S) == "HI from box-1"

    node.proc.send_signal(stop_signal)
    assert await node.wait() == 0, node.stderr()
    # A graceful leave: the caller is told at once (a vanished node would be declared dead instead).
    await wait_for(lambda: caller.peers == [], WAIT_S, "the node's leave")
    assert "Traceback" not in node.stderr()


async def test_the_node_takes_its_settings_from_agentmesh_variables(
    children: Children, nodes: Callable[..., Any], agents_dir: Path
) -> None:
    caller = await nodes("caller", mesh="plant-7")
    port = free_port()
    env = child_env(
        {
            "AGENTMESH_MESH": "plant-7",
            "AGENTMESH_SEEDS": f"{caller.address}, tcp://127.0.0.1:1",  # commas or spaces; a dead seed is harmless
            "AGENTMESH_DISCOVERY": "none",
            "AGENTMESH_PORT": str(port),
            "AGENTMESH_NAME": "from-env",
            "AGENTMESH_NODE_ID": "node-from-env",
            "AGENTMESH_LOG_LEVEL": "error",
        }
    )
    node = await children.start("node", ["-m", "mesh", "node", "agents:setup", "--json"], cwd=agents_dir, env=env)
    ready = json.loads(await node.line())
    assert ready["address"] == f"tcp://127.0.0.1:{port}"
    assert (ready["name"], ready["node_id"], ready["mesh"]) == ("from-env", "node-from-env", "plant-7")
    await caller.wait_for_peers(1, timeout=WAIT_S)
    assert await caller.send_message("env", AgentId("shout", "k"), timeout=WAIT_S) == "ENV from from-env"
    assert await node.terminate() == 0


async def test_the_human_ready_line_names_the_node_its_address_and_agent_types(
    children: Children, agents_dir: Path
) -> None:
    node = await children.start("node", ["-m", "mesh", "node", "agents:setup", "--discovery", "none"], cwd=agents_dir)
    line = await node.line()
    assert line.startswith("node ") and " of mesh default at tcp://127.0.0.1:" in line, line
    assert line.endswith("; agent types: shout"), line
    assert await node.terminate() == 0


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("agents", "expected MODULE:FUNC"),
        ("no_such_module:setup", "cannot import no_such_module"),
        ("agents:nothing_here", "agents has no function nothing_here"),
        ("missing.py:setup", "cannot import missing.py: no such file"),
    ],
)
async def test_a_bad_target_is_a_usage_error(children: Children, agents_dir: Path, target: str, message: str) -> None:
    result = await children.run("node", ["-m", "mesh", "node", target, "--discovery", "none"], cwd=agents_dir)
    assert result.code == 2, result
    assert message in result.stderr, result.stderr


async def test_a_failing_setup_function_ends_the_node_with_its_traceback(children: Children, agents_dir: Path) -> None:
    result = await children.run("node", ["-m", "mesh", "node", "agents:broken", "--discovery", "none"], cwd=agents_dir)
    assert result.code == 1, result
    assert "the setup function failed" in result.stderr and "RuntimeError: no agents today" in result.stderr
    assert result.stdout == ""


async def test_a_node_that_cannot_start_says_why(children: Children, agents_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["-m", "mesh", "node", "agents:setup", "--discovery", "none", "--port", str(port)]
        result = await children.run("node", args, cwd=agents_dir)
    assert result.code == 1, result
    assert "agentmesh node: cannot start the node: " in result.stderr and "Traceback" not in result.stderr
    missing = agents_dir / "missing.key_secret"
    result = await children.run("node", [*args[:6], "--secret-key-file", str(missing)], cwd=agents_dir)
    assert result.code == 1 and f"secret key file {missing} does not exist" in result.stderr, result
    assert "Traceback" not in result.stderr


@dataclass
class Greet:
    name: str


async def test_the_node_setup_example_serves_its_greeter(children: Children, nodes: Callable[..., Any]) -> None:
    caller = await nodes("caller")
    example = str(EXAMPLES / "node_setup.py")
    args = [
        "-m",
        "mesh",
        "node",
        f"{example}:setup",
        "--discovery",
        "none",
        "--seed",
        caller.address,
        "--name",
        "box-1",
    ]
    node = await children.start("node", args)
    assert (await node.line()).endswith("; agent types: greeter")
    await caller.wait_for_peers(1, timeout=WAIT_S)
    reply = await caller.send_message(Greet("ada"), AgentId("greeter", "k1"), timeout=WAIT_S)
    assert reply == "hello ada, from greeter/k1 on box-1"
    assert await node.terminate() == 0
