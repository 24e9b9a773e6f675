"""The messages every scenario sends unless it says otherwise."""

from __future__ import annotations

from dataclasses import dataclass

# 64 characters make a Payload about 100 bytes whichever way it is encoded (msgpack 94, compact JSON 105).
BODY = "agentmesh benchmark payload: sixty-four characters of plain text"
assert len(BODY) == 64

PAYLOAD_DESCRIPTION = "Payload(seq: int, source: str, body: str), a dataclass of ~100 bytes (msgpack 94, JSON 105)"


@dataclass
class Payload:
    """The standard message."""

    seq: int
    source: str
    body: str


@dataclass
class Ack:
    """The standard small reply to an RPC."""

    seq: int


def payload(seq: int = 0) -> Payload:
    return Payload(seq=seq, source="bench", body=BODY)
