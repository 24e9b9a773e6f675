"""The routing table: a pure data structure built from every live node's registrations.

Each node describes what it hosts in a :class:`NodeInfo` (carried as opaque metadata by
``discovery``). The table merges them: subscriptions are mesh-global and de-duplicated by AutoGen's
equality (same kind, topic and agent type), so one subscription may be held by several nodes; a
publish maps every matching subscription to an AgentId and every AgentId to its owner.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack

from ._ids import AgentId, is_valid_agent_type, is_valid_topic_type
from ._placement import owner as hrw_owner

SubKind = Literal["type", "prefix"]
TypeKind = Literal["factory", "instance"]


@dataclass(frozen=True)
class SubInfo:
    """A shareable subscription: kind, topic type (or prefix), agent type, and the holder's id."""

    kind: SubKind
    topic: str
    agent_type: str
    id: str

    @property
    def key(self) -> tuple[str, str, str]:
        """AutoGen's equality for subscriptions of one kind: same topic (or prefix) and agent type."""
        return (self.kind, self.topic, self.agent_type)


@dataclass(frozen=True)
class TypeInfo:
    """How a node hosts an agent type: a factory, or registered instances with their keys."""

    kind: TypeKind
    fingerprint: str
    keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class NodeInfo:
    """What one node hosts; encoded into its member record's metadata."""

    types: Mapping[str, TypeInfo] = field(default_factory=dict)
    subscriptions: tuple[SubInfo, ...] = ()
    capabilities: frozenset[str] = frozenset()
    # The flow-control window this node grants each sender (messages, bytes); (0, 0): unknown.
    window: tuple[int, int] = (0, 0)

    def encode(self) -> bytes:
        data: bytes = msgpack.packb(
            {
                "t": {
                    name: [info.kind, info.fingerprint, sorted(info.keys)] for name, info in sorted(self.types.items())
                },
                "s": [[s.kind, s.topic, s.agent_type, s.id] for s in self.subscriptions],
                "c": sorted(self.capabilities),
                "w": list(self.window),
            },
            use_bin_type=True,
        )
        return data

    @classmethod
    def decode(cls, data: bytes) -> NodeInfo:
        """Parse metadata from a peer; raises ``ValueError`` on anything malformed."""
        if not data:
            return cls()
        try:
            raw = msgpack.unpackb(data, raw=False)
        except Exception as exc:
            raise ValueError(f"node metadata is not msgpack: {exc}") from exc
        if not isinstance(raw, dict):
            raise ValueError("node metadata is not a map")
        types: dict[str, TypeInfo] = {}
        for name, spec in _as_dict(raw.get("t", {})).items():
            if not (is_valid_agent_type(name) and isinstance(spec, list) and len(spec) == 3):
                raise ValueError("bad agent type entry in node metadata")
            kind, fingerprint, keys = spec
            if kind not in ("factory", "instance") or not isinstance(fingerprint, str) or not isinstance(keys, list):
                raise ValueError(f"bad agent type entry {name!r} in node metadata")
            if not all(isinstance(k, str) for k in keys):
                raise ValueError(f"bad instance key in agent type {name!r}")
            types[name] = TypeInfo(kind, fingerprint, frozenset(keys))
        subs: list[SubInfo] = []
        for spec in _as_list(raw.get("s", [])):
            if not (isinstance(spec, list) and len(spec) == 4 and all(isinstance(x, str) for x in spec)):
                raise ValueError("bad subscription entry in node metadata")
            if spec[0] not in ("type", "prefix"):
                raise ValueError(f"unknown subscription kind {spec[0]!r}")
            if not is_valid_agent_type(spec[2]):
                raise ValueError(f"invalid agent type {spec[2]!r} in a subscription")
            if spec[0] == "type" and not is_valid_topic_type(spec[1]):
                raise ValueError(f"invalid topic type {spec[1]!r} in a subscription")
            subs.append(SubInfo(spec[0], spec[1], spec[2], spec[3]))
        caps = _as_list(raw.get("c", []))
        if not all(isinstance(c, str) for c in caps):
            raise ValueError("bad capability in node metadata")
        window = _as_list(raw.get("w", [0, 0]))
        if len(window) != 2 or not all(type(w) is int and 0 <= w < 1 << 40 for w in window):
            raise ValueError("bad flow-control window in node metadata")
        return cls(types=types, subscriptions=tuple(subs), capabilities=frozenset(caps), window=(window[0], window[1]))


def _as_dict(value: Any) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise ValueError("expected a map in node metadata")
    return value


def _as_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError("expected a list in node metadata")
    return value


class RoutingTable:
    """Who owns which agent and which agents a topic reaches, for one view of the live nodes.

    Immutable once built; the node builds a new one whenever the view changes. Lookups are cached.
    """

    def __init__(self, nodes: Mapping[str, NodeInfo]) -> None:
        self.nodes = dict(nodes)
        # (kind, topic, agent type) -> holders; exact-type subscriptions indexed by topic type.
        self.subscription_holders: dict[tuple[str, str, str], set[str]] = {}
        self._exact: dict[str, list[str]] = {}
        self._prefix: list[tuple[str, str]] = []
        self.type_hosts: dict[str, list[str]] = {}
        self.instances: dict[tuple[str, str], str] = {}
        self.fingerprints: dict[str, dict[str, str]] = {}
        for node_id in sorted(self.nodes):
            info = self.nodes[node_id]
            for name, tinfo in info.types.items():
                self.type_hosts.setdefault(name, []).append(node_id)
                self.fingerprints.setdefault(name, {})[node_id] = tinfo.fingerprint
                if tinfo.kind == "instance":
                    for key in tinfo.keys:
                        self.instances.setdefault((name, key), node_id)
            for sub in info.subscriptions:
                holders = self.subscription_holders.get(sub.key)
                if holders is None:
                    self.subscription_holders[sub.key] = {node_id}
                    if sub.kind == "type":
                        self._exact.setdefault(sub.topic, []).append(sub.agent_type)
                    else:
                        self._prefix.append((sub.topic, sub.agent_type))
                else:
                    holders.add(node_id)
        self._owner_cache: dict[tuple[str, str], str | None] = {}
        self._topic_cache: dict[tuple[str, str], list[AgentId]] = {}

    def has_type(self, agent_type: str) -> bool:
        return agent_type in self.type_hosts

    def owner(self, agent_type: str, key: str) -> str | None:
        """The node that owns ``agent_type/key``, or ``None`` if no live node hosts the type."""
        cache_key = (agent_type, key)
        try:
            return self._owner_cache[cache_key]
        except KeyError:
            pass
        node = self.instances.get(cache_key)
        if node is None:
            hosts = self.type_hosts.get(agent_type)
            node = hrw_owner(hosts, agent_type, key) if hosts else None
        if len(self._owner_cache) > 100_000:
            self._owner_cache.clear()
        self._owner_cache[cache_key] = node
        return node

    def owner_skipping(self, agent_type: str, key: str, skip: Collection[str]) -> str | None:
        """The owner of ``agent_type/key`` once the nodes in ``skip`` are left out: the next node in
        the key's HRW ranking (used to hand an agent on when its first choice refuses it)."""
        node = self.instances.get((agent_type, key))
        if node is not None:
            return None if node in skip else node
        hosts = [n for n in self.type_hosts.get(agent_type, ()) if n not in skip]
        return hrw_owner(hosts, agent_type, key) if hosts else None

    def recipients(self, topic_type: str, topic_source: str) -> list[AgentId]:
        """Every AgentId a publish to the topic reaches, once per matching subscription."""
        cache_key = (topic_type, topic_source)
        cached = self._topic_cache.get(cache_key)
        if cached is not None:
            return cached
        result = [AgentId(agent_type, topic_source) for agent_type in self._exact.get(topic_type, ())]
        result.extend(
            AgentId(agent_type, topic_source) for prefix, agent_type in self._prefix if topic_type.startswith(prefix)
        )
        if len(self._topic_cache) > 10_000:
            self._topic_cache.clear()
        self._topic_cache[cache_key] = result
        return result

    def subscriptions(self) -> Iterable[tuple[tuple[str, str, str], set[str]]]:
        return self.subscription_holders.items()
