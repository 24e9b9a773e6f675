"""``agentmesh peers`` (and ``python -m mesh peers``): which nodes are on the network.

mDNS says which nodes exist (mesh name, node id, addresses) but, by design, not what they host:
the TXT record carries only what a peer needs to connect (DESIGN §4). So for each mesh found, a
temporary node with no agents joins through the announced endpoints, reads every member's agent
types from the gossiped metadata, and leaves gracefully. Every step is bounded.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import click

from discovery import Announcement, DiscoveryError, browse

from .._codec import PROTOCOL_MAJOR
from .._config import MeshConfig
from .._node import MeshNode
from ._options import quiet_visitor_logs

ENV_SECRET_KEY_FILE = "AGENTMESH_SECRET_KEY_FILE"
DEFAULT_TIMEOUT_S = 2.0
# How long the temporary node waits for the members of one mesh to answer, after the browse.
JOIN_TIMEOUT_S = 3.0


@dataclass
class PeerRow:
    """One node as ``agentmesh peers`` shows it."""

    mesh: str
    node_id: str
    name: str = ""
    addresses: list[str] = field(default_factory=list)
    protocol: str = ""
    # "alive" or "suspect" (a member of its mesh), "unreachable" (announced, but it did not answer:
    # a stale mDNS record of a node that crashed, or a node this machine cannot reach).
    status: str = "unreachable"
    agent_types: list[str] | None = None  # None: unknown (the mesh could not be joined)
    secured: bool = False
    announced: bool = True  # False: learned from the mesh's gossip, not from mDNS
    note: str = ""


def _host_of(endpoint: str) -> str:
    hostport = endpoint.removeprefix("tcp://").partition("#")[0]
    host = hostport.rpartition(":")[0]
    return host.strip("[]")


def _local_address_towards(host: str) -> str:
    """The address of this machine that a peer at ``host`` can reach us on (the kernel's choice of
    source address; connecting a UDP socket sends nothing)."""
    address = ipaddress.ip_address(host)
    if address.is_loopback:
        return str(address)
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))
        return str(probe.getsockname()[0])


def _join_endpoints(announcements: Sequence[Announcement], secured: bool) -> list[str]:
    endpoints = []
    for announcement in announcements:
        for endpoint in announcement.endpoints():
            # Without keys of our own a server key is useless (we could not join anyway).
            endpoints.append(endpoint if secured else endpoint.partition("#")[0])
    return endpoints


async def _inspect_mesh(mesh: str, announcements: list[Announcement], join_timeout_s: float) -> list[PeerRow]:
    """Join ``mesh`` briefly with a node of no agents and read its members' agent types."""
    rows = {
        a.node_id: PeerRow(
            mesh=a.mesh,
            node_id=a.node_id,
            addresses=list(a.addresses),
            protocol=f"{a.protocol[0]}.{a.protocol[1]}",
            secured=a.public_key is not None,
        )
        for a in announcements
    }
    compatible = [a for a in announcements if a.protocol[0] == PROTOCOL_MAJOR]  # minor versions interoperate
    for a in announcements:
        if a.protocol[0] != PROTOCOL_MAJOR:
            rows[a.node_id].note = f"protocol {a.protocol[0]}.{a.protocol[1]}; this tool speaks {PROTOCOL_MAJOR}.x"
    secured = bool(os.environ.get(ENV_SECRET_KEY_FILE))
    if any(a.public_key for a in compatible) and not secured:
        for a in compatible:
            rows[a.node_id].note = f"secured mesh: set {ENV_SECRET_KEY_FILE} to see its agent types"
        return list(rows.values())
    endpoints = _join_endpoints(compatible, secured)
    if not endpoints:
        return list(rows.values())
    try:
        node = MeshNode(
            name=f"agentmesh-peers-{socket.gethostname()}-{os.getpid()}",
            mesh=mesh,
            host=_local_address_towards(_host_of(endpoints[0])),
            discovery="none",
            seeds=endpoints,
            config=MeshConfig(join_timeout_s=join_timeout_s),
        )
        await node.start()
    except (OSError, ValueError) as exc:  # no route to the mesh, or keys that do not fit it
        for row in rows.values():
            row.note = row.note or f"could not join: {exc}"
        return list(rows.values())
    try:
        try:
            await node.wait_for_peers(len(compatible), timeout=join_timeout_s)
        except TimeoutError:
            pass  # some announced nodes are gone or unreachable: list what answered
        for peer in node.peers:
            if peer.node_id not in rows:
                rows[peer.node_id] = PeerRow(
                    mesh=mesh,
                    node_id=peer.node_id,
                    addresses=[_host_of(peer.address)],
                    protocol=f"{PROTOCOL_MAJOR}.x",
                    announced=False,
                    note="not announced by mDNS (joined through seeds)",
                )
            row = rows[peer.node_id]
            row.name = peer.name
            row.status = peer.status
            row.agent_types = sorted(peer.agent_types)
    finally:
        await node.stop()
    return list(rows.values())


async def find_peers(
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    mesh: str | None = None,
    interfaces: Sequence[str] | None = None,
    join_timeout_s: float = JOIN_TIMEOUT_S,
) -> list[PeerRow]:
    """Browse mDNS for ``timeout_s`` seconds, then ask each mesh found (or only ``mesh``) what its
    nodes host; rows sorted by mesh, then name."""
    announcements = await browse(timeout_s, interfaces)
    by_mesh: dict[str, list[Announcement]] = {}
    for announcement in announcements:
        if mesh is None or announcement.mesh == mesh:
            by_mesh.setdefault(announcement.mesh, []).append(announcement)
    results = await asyncio.gather(*(_inspect_mesh(m, anns, join_timeout_s) for m, anns in by_mesh.items()))
    rows = [row for group in results for row in group]
    return sorted(rows, key=lambda r: (r.mesh, r.name or "~", r.node_id))


def format_table(rows: Sequence[PeerRow]) -> str:
    """Rows as an aligned text table."""
    if not rows:
        return "no agentmesh nodes found"
    header = ("MESH", "NODE ID", "NAME", "ADDRESS", "STATUS", "AGENT TYPES")
    lines = [header]
    for row in rows:
        types = "?" if row.agent_types is None else ", ".join(row.agent_types) or "-"
        status = row.status + (" (secured)" if row.secured else "")
        lines.append((row.mesh, row.node_id, row.name or "?", ", ".join(row.addresses), status, types))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    text = ["  ".join([*(cell.ljust(w) for cell, w in zip(line, widths, strict=False)), line[-1]]) for line in lines]
    notes = [f"{row.node_id}: {row.note}" for row in rows if row.note]
    return "\n".join([t.rstrip() for t in text] + notes)


def run_peers(
    *, timeout_s: float = DEFAULT_TIMEOUT_S, mesh: str | None = None, as_json: bool = False,
    interfaces: Sequence[str] | None = None,
) -> tuple[str, int]:  # fmt: skip
    """What ``peers`` prints, and its exit code (0; 1 when ``--mesh`` was given and not found)."""
    try:
        with quiet_visitor_logs():
            rows = asyncio.run(find_peers(timeout_s, mesh=mesh, interfaces=interfaces))
    except (DiscoveryError, OSError) as exc:  # an unknown interface, an address not on this machine
        raise click.ClickException(f"cannot browse: {exc}") from exc
    text = json.dumps([asdict(r) for r in rows], indent=2) if as_json else format_table(rows)
    return text, 1 if mesh is not None and not rows else 0
