"""The ``agentmesh`` command (also ``python -m mesh``).

Only ``peers`` for now; the CLI issue adds the other commands on the same group.
"""

from __future__ import annotations

import click

from ._peers import DEFAULT_TIMEOUT_S, PeerRow, find_peers, format_table, run_peers

__all__ = ["PeerRow", "find_peers", "format_table", "main", "peers"]


@click.group()
def main() -> None:
    """agentmesh: AutoGen-style agents on a host-less mesh of ZeroMQ nodes."""


@main.command()
@click.option("--timeout", "timeout_s", type=float, default=DEFAULT_TIMEOUT_S, show_default=True,
              help="Seconds to listen for mDNS announcements.")  # fmt: skip
@click.option("--mesh", default=None, help="Only nodes of this mesh name (exit code 1 if none is found).")
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
