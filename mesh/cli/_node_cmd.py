"""``agentmesh node MODULE:FUNC``: one node for a deployment, hosting the agents ``FUNC(node)``
registers, serving until SIGTERM or SIGINT, then stopping gracefully (its agents handed over)."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .._node import MeshNode
from ._options import JoinOptions, start_or_explain, with_join_options

Setup = Callable[[MeshNode], Any]


def load_target(spec: str) -> Setup:
    """``FUNC`` of ``MODULE:FUNC``: MODULE is a module name importable from the current directory
    (as with ``python -m``) or a path to a ``.py`` file.

    Raises:
        click.BadParameter: it cannot be imported, or is not a callable.
    """
    module_name, _, func_name = spec.rpartition(":")
    if not module_name or not func_name.isidentifier():
        raise click.BadParameter(f"{spec!r}: expected MODULE:FUNC, e.g. myapp.agents:setup or agents.py:setup")
    try:
        if module_name.endswith(".py") or os.sep in module_name:
            module = _import_file(Path(module_name))
        else:
            sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except (ImportError, FileNotFoundError) as exc:
        raise click.BadParameter(f"cannot import {module_name}: {exc}") from exc
    except Exception as exc:
        raise click.ClickException(f"importing {module_name} failed:\n{traceback.format_exc()}") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise click.BadParameter(f"{module_name} has no function {func_name}")
    return func  # type: ignore[no-any-return]


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling-free codecs look classes up by module
    sys.path.insert(0, str(path.resolve().parent))  # its own imports of modules next to it
    spec.loader.exec_module(module)
    return module


async def serve(node: MeshNode, setup: Setup, as_json: bool) -> int:
    """Start ``node``, let ``setup`` register agents, print the address, serve until a signal."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if not await start_or_explain(node, "node"):
            return 1
        try:
            result = setup(node)
            if inspect.isawaitable(result):
                await result
        except Exception:
            click.echo(f"agentmesh node: the setup function failed:\n{traceback.format_exc()}", err=True)
            return 1
        ready = {"address": node.address, "node_id": node.node_id, "name": node.name, "mesh": node.mesh}
        if as_json:
            click.echo(json.dumps({**ready, "pid": os.getpid()}))
        else:
            types = ", ".join(sorted(node.routing_table.nodes[node.node_id].types)) or "none"
            click.echo(f"node {node.name} ({node.node_id}) of mesh {node.mesh} at {node.address}; agent types: {types}")
        await stop.wait()
        return 0
    finally:
        await node.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


@click.command("node")
@click.argument("target", metavar="MODULE:FUNC")
@with_join_options
@click.option(
    "--name",
    default=None,
    envvar="AGENTMESH_NAME",
    show_envvar=True,
    help="The node's name in `peers` and `top` (default: host name and PID).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    envvar="AGENTMESH_PORT",
    show_envvar=True,
    help="The port to bind; 0 picks a free one. Give the nodes others use as seeds a fixed one.",
)
@click.option(
    "--advertise",
    default=None,
    envvar="AGENTMESH_ADVERTISE",
    show_envvar=True,
    help="The address peers should connect to, if not the bound one (behind NAT).",
)
@click.option(
    "--node-id",
    default=None,
    envvar="AGENTMESH_NODE_ID",
    show_envvar=True,
    help="A stable node id; keep it across restarts so that the node owns the same keys again.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the ready line as JSON: address, node_id, name, mesh, pid."
)
def node(
    join: JoinOptions, target: str, name: str | None, port: int, advertise: str | None, node_id: str | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Run a node hosting the agents that FUNC registers.

    MODULE:FUNC names a function of a module importable from the current directory, or of a .py
    file (agents.py:setup). It is called once with the started MeshNode, sync or async, to register
    agents and subscriptions. The node prints its address, serves until SIGTERM or SIGINT, then
    stops gracefully: live agents are handed over to the nodes that take their keys.

    The default host is loopback; on a LAN use --host 0.0.0.0 and keys (see `agentmesh keygen`).
    """
    setup = load_target(target)
    mesh_node = join.node(host=join.host or "127.0.0.1", name=name, port=port, advertise=advertise, node_id=node_id)
    raise SystemExit(asyncio.run(serve(mesh_node, setup, as_json)))
