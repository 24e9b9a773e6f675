"""The ``agentmesh`` command (also ``python -m mesh``): run nodes, look at a mesh, make keys, run the
demo and the benchmarks. Each command lives in its own module; this one assembles the group."""

from __future__ import annotations

import logging
import sys

import click

from ._bench import bench
from ._bridge_cmd import bridge
from ._demo import demo
from ._keygen import keygen
from ._node_cmd import node
from ._options import LOG_LEVELS
from ._peers import DEFAULT_TIMEOUT_S, PeerRow, find_peers, format_table, run_peers
from ._top import top
from ._watch import watch

__all__ = ["PeerRow", "find_peers", "format_table", "main", "peers"]


@click.group(context_settings={"auto_envvar_prefix": "AGENTMESH", "max_content_width": 110})
@click.version_option(package_name="agentmesh-zmq", prog_name="agentmesh")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default=None,
              envvar="AGENTMESH_LOG_LEVEL", show_envvar=True,
              help="Level of the logs on stderr [default: WARNING; the temporary nodes of peers, watch and top log "
                   "errors only].")  # fmt: skip
def main(log_level: str | None) -> None:
    """agentmesh: AutoGen-style agents on a host-less mesh of ZeroMQ nodes.

    Options also come from environment variables: those shown in each command's --help, and any
    option as AGENTMESH_<COMMAND>_<OPTION> (e.g. AGENTMESH_TOP_INTERVAL=2).
    """
    logging.basicConfig(
        level=(log_level or "WARNING").upper(),
        stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )


@main.command()
@click.option("--timeout", "timeout_s", type=float, default=DEFAULT_TIMEOUT_S, show_default=True,
              help="Seconds to listen for mDNS announcements.")  # fmt: skip
@click.option("--mesh", default=None, envvar="AGENTMESH_MESH", show_envvar=True,
              help="Only nodes of this mesh name (exit code 1 if none is found).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: a JSON list of nodes.")
@click.option("--interface", "interfaces", multiple=True,
              help="Interface name or address to browse on (repeatable; default: env AGENTMESH_MDNS_INTERFACES, "
                   "else all).")  # fmt: skip
def peers(timeout_s: float, mesh: str | None, as_json: bool, interfaces: tuple[str, ...]) -> None:
    """List the nodes announced on the network by mDNS: mesh name, node id, name, address, status
    and agent types, then exit.

    Agent types are not announced: for each mesh found, a temporary node with no agents joins it
    briefly to read them, then leaves. For a secured mesh set AGENTMESH_SECRET_KEY_FILE (and
    AGENTMESH_AUTHORIZED_KEYS_DIR for per-node keys) to a key the mesh admits.
    """
    if timeout_s <= 0:
        raise click.BadParameter("must be positive", param_hint="--timeout")
    text, code = run_peers(timeout_s=timeout_s, mesh=mesh, as_json=as_json, interfaces=list(interfaces) or None)
    click.echo(text)
    raise SystemExit(code)


for _command in (node, watch, top, keygen, bench, bridge, demo):
    main.add_command(_command)


def _name_the_variables(group: click.Group) -> None:
    """Every option without a variable of its own reads AGENTMESH_<COMMAND>_<OPTION>, named after
    the option as typed (``--interval`` -> AGENTMESH_TOP_INTERVAL), not after the parameter it sets
    (click's automatic names would say AGENTMESH_TOP_INTERVAL_S)."""
    for command_name, command in group.commands.items():
        for param in command.params:
            if not isinstance(param, click.Option) or param.envvar is not None:
                continue
            long_names = [opt for opt in param.opts if opt.startswith("--")]
            if long_names:
                option = long_names[0][2:].replace("-", "_").upper()
                param.envvar = f"AGENTMESH_{command_name.replace('-', '_').upper()}_{option}"


_name_the_variables(main)
