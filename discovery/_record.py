"""Member records: what every node knows about every other, and their wire form."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ._errors import RecordDecodeError

_NODE_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}\Z")
MAX_METADATA_BYTES = 1024 * 1024
MAX_TEXT = 1024


def is_valid_node_id(value: object) -> bool:
    return isinstance(value, str) and _NODE_ID_RE.match(value) is not None


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
        if not isinstance(metadata, bytes) or len(metadata) > MAX_METADATA_BYTES:
            raise RecordDecodeError("member record has invalid metadata")
        return cls(node_id, incarnation, version, endpoint, name, mesh, (major, minor), metadata)
