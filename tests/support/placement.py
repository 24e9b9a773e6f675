"""Finding keys that placement gives to a node, for tests that need an agent on a given node."""

from __future__ import annotations

from collections.abc import Iterator

from mesh._routing import RoutingTable

SEARCHED = 5000  # keys tried: with a handful of nodes, each gets hundreds of them


def keys_owned_by(table: RoutingTable, agent_type: str, node_id: str, prefix: str = "k") -> Iterator[str]:
    """The keys ``{prefix}{i}`` (i < SEARCHED) of ``agent_type`` that ``table`` places on ``node_id``."""
    return (key for key in (f"{prefix}{i}" for i in range(SEARCHED)) if table.owner(agent_type, key) == node_id)


def key_owned_by(table: RoutingTable, agent_type: str, node_id: str, prefix: str = "k") -> str:
    """The first such key; fails the test if placement gives the node none."""
    key = next(keys_owned_by(table, agent_type, node_id, prefix), None)
    assert key is not None, f"placement gave {node_id} no key of {agent_type} among {SEARCHED}"
    return key
