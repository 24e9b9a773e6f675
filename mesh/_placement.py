"""Rendezvous (highest-random-weight) placement of agent keys on nodes.

The weight is a stable hash (BLAKE2b), never Python's salted ``hash()``, so every node of every
process computes the same owner from the same view. When a node leaves, only its keys move; when
one joins, it takes about 1/N of the keys from the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b


def weight(node_id: str, agent_type: str, key: str) -> int:
    data = f"{node_id}\x00{agent_type}\x00{key}".encode("utf-8", "surrogatepass")
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


def owner(nodes: Iterable[str], agent_type: str, key: str) -> str | None:
    """The node among ``nodes`` that owns ``agent_type/key``; ``None`` when there are none.

    Ties (vanishingly rare) go to the greater node id so that the choice stays deterministic.
    """
    best: tuple[int, str] | None = None
    for node_id in nodes:
        candidate = (weight(node_id, agent_type, key), node_id)
        if best is None or candidate > best:
            best = candidate
    return None if best is None else best[1]
