"""Member records: what every node knows about every other, and their wire form."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ._errors import RecordDecodeError

_NODE_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}\Z")
MAX_METADATA_BYTES = 1024 * 1024
MAX_TEXT = 1024
_Z85 = re.escape("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")
# A host name is at most 253 characters (RFC 1035) of labels checked one by one below.
_ENDPOINT_RE = re.compile(
    r"tcp://(?:\[(?P<ipv6>[0-9A-Fa-f:.]{2,45})\]|(?P<host>[A-Za-z0-9_.\-]{1,253}))"
    rf":(?P<port>[1-9][0-9]{{0,4}})(?:#[{_Z85}]{{40}})?\Z"
)
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_\-]{0,61}[A-Za-z0-9])?\Z")


def is_valid_node_id(value: object) -> bool:
    return isinstance(value, str) and _NODE_ID_RE.match(value) is not None


def is_valid_endpoint(value: object) -> bool:
    """Whether ``value`` is an endpoint a node may dial: ``tcp://host:port``, optionally followed by
    ``#`` and a 40-character z85 CURVE server key; the host is an IPv4 address, an IPv6 address in
    brackets or a DNS name, the port 1-65535. Nothing else (no other transport, no ZeroMQ interface
    or source-address syntax) ever reaches ``connect``."""
    if not isinstance(value, str):
        return False
    match = _ENDPOINT_RE.match(value)
    if match is None or int(match["port"]) > 65_535:
        return False
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            return False
        return True
    host = match["host"]
    labels = host.split(".")
    if labels[-1].isdigit():  # a DNS name never ends in a numeric label: it must be an IPv4 address
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return all(_LABEL_RE.match(label) for label in labels)


class MemberStatus(IntEnum):
    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3

    @property
    def gone(self) -> bool:
        return self >= MemberStatus.DEAD


@dataclass(frozen=True)
class MemberRecord:
    """One node as the mesh knows it.

    ``incarnation`` changes at every start of the node; ``version`` grows with every change of its
    metadata (and when it refutes a suspicion). A record with a greater (incarnation, version)
    supersedes the other. ``metadata`` is opaque here.
    """

    node_id: str
    incarnation: int
    version: int
    endpoint: str
    name: str
    mesh: str
    protocol: tuple[int, int]
    metadata: bytes = b""

    @property
    def stamp(self) -> tuple[int, int]:
        return (self.incarnation, self.version)

    def encode(self) -> list[Any]:
        return [
            self.node_id,
            self.incarnation,
            self.version,
            self.endpoint,
            self.name,
            self.mesh,
            self.protocol[0],
            self.protocol[1],
            self.metadata,
        ]

    @classmethod
    def decode(cls, raw: Any) -> MemberRecord:
        """Parse a record from a peer; raises :class:`RecordDecodeError` on anything malformed."""
        if not isinstance(raw, list) or len(raw) != 9:
            raise RecordDecodeError("member record must be a list of 9 fields")
        node_id, incarnation, version, endpoint, name, mesh, major, minor, metadata = raw
        if not is_valid_node_id(node_id):
            raise RecordDecodeError("member record has an invalid node id")
        for value, what in ((incarnation, "incarnation"), (version, "version"), (major, "major"), (minor, "minor")):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value >= 1 << 63:
                raise RecordDecodeError(f"member record has an invalid {what}")
        for value, what in ((endpoint, "endpoint"), (name, "name"), (mesh, "mesh")):
            if not isinstance(value, str) or len(value) > MAX_TEXT:
                raise RecordDecodeError(f"member record has an invalid {what}")
        if not is_valid_endpoint(endpoint):
            # Every member's endpoint is dialled: one ZeroMQ cannot parse must never get that far.
            raise RecordDecodeError("member record has an invalid endpoint (not tcp://host:port[#key])")
        if not isinstance(metadata, bytes) or len(metadata) > MAX_METADATA_BYTES:
            raise RecordDecodeError("member record has invalid metadata")
        return cls(node_id, incarnation, version, endpoint, name, mesh, (major, minor), metadata)
