"""Floods a mesh node with hostile frames from raw ZeroMQ DEALER sockets (tests/hardening/test_flood.py).

Run: ``python tests/support/flooder.py ENDPOINT --incarnation N --frames 100000 [--seed 1]
[--oversized 0 --oversized-bytes B]``

It is a stranger: it never joins. Its sockets use random routing ids (most of them malformed for
the mesh, a few in its form, ``mesh._transport.routing_id``; the malformed ones are replaced
every few thousand frames) and send, mixed at random: random bytes, random headers, empty frames,
frames of several parts, valid headers of another major version, and valid headers of data and
handshake frames with junk bodies (random bytes, or msgpack lists of junk records that each hold at
least one record the node must refuse). With ``--oversized K`` it first sends K frames of
``--oversized-bytes`` each (over the node's maximum message size) from one more socket.

It prints one JSON line: how many frames of each kind it handed to ZeroMQ, how many must be refused
(every one of them must show in the node's counters), and the time it took. Every send is bounded
(``SNDTIMEO``); at the end it waits (bounded, ``LINGER``) for its sockets to flush.

With ``--hold`` it keeps every connection open after printing that line, until its standard input
closes (or ``--hold-timeout`` passes). A caller that needs every frame to reach the node must use
it and close the input only once the node has counted them: with a socket closed while the node had
not read all it was sent, the node was seen (under load) never to count the rest. The sockets a
churn replaces stay open until the end for the same reason.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import sys
import time
from collections import Counter
from typing import Any

import msgpack
import zmq

# The wire's own definitions, so that "valid" keeps meaning valid when the format changes.
from mesh._codec import CLS_DATA, CLS_HANDSHAKE, FORWARDED, HEADER, MAGIC, MEMBER
from mesh._codec import PROTOCOL_MAJOR as MAJOR
from mesh._transport import routing_id

REFUSE = 14  # a stranger's REFUSE is logged by the node: tests/hardening/test_hostile_peers.py covers it
SEND_TIMEOUT_MS = 10_000
LINGER_MS = 10_000
CHURN_EVERY = 5_000  # frames between replacing one malformed routing id
MALFORMED_SOCKETS = 8
WELL_FORMED_SOCKETS = 2

KINDS = {  # kind -> weight
    "random_bytes": 20,
    "random_header": 15,
    "empty": 2,
    "multipart": 3,
    "wrong_major": 2,
    "junk_data": 25,
    "junk_handshake": 33,
}


class Flood:
    def __init__(self, endpoint: str, incarnation: int, rng: random.Random) -> None:
        self.endpoint = endpoint
        self.incarnation = incarnation
        self.rng = rng
        self.context = zmq.Context()
        self.malformed = [self._socket(self._malformed_rid()) for _ in range(MALFORMED_SOCKETS)]
        self.well_formed = [self._socket(self._well_formed_rid()) for _ in range(WELL_FORMED_SOCKETS)]
        self.retired: list[zmq.Socket[Any]] = []  # replaced by a churn, closed with the rest
        self.sent: Counter[str] = Counter()
        self.must_refuse = 0
        self.routing_ids = MALFORMED_SOCKETS + WELL_FORMED_SOCKETS

    def _socket(self, rid: bytes) -> zmq.Socket[Any]:
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, rid)
        sock.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
        sock.setsockopt(zmq.LINGER, LINGER_MS)
        sock.connect(self.endpoint)
        return sock

    def _malformed_rid(self) -> bytes:
        # Never a NUL first (ZeroMQ reserves those); nearly never the mesh's form by chance.
        return bytes([self.rng.randrange(1, 256)]) + self.rng.randbytes(self.rng.randrange(0, 40))

    def _well_formed_rid(self) -> bytes:
        return routing_id("flood-" + self.rng.randbytes(6).hex(), self.rng.randrange(1, 1 << 62))

    def _header(self, cls: int, major: int = MAJOR) -> bytes:
        target = self.incarnation if cls == CLS_DATA else 0
        return HEADER.pack(MAGIC, major, 0, cls, target)

    def _junk_value(self, depth: int = 0) -> Any:
        rng = self.rng
        pick = rng.randrange(8 if depth < 3 else 6)
        if pick == 0:
            return rng.randrange(-(1 << 40), 1 << 40)
        if pick == 1:
            return rng.randbytes(rng.randrange(0, 64))
        if pick == 2:
            return rng.randbytes(rng.randrange(0, 32)).hex()
        if pick == 3:
            return None
        if pick == 4:
            return rng.random()
        if pick == 5:
            return rng.choice([True, False, "echo", "probe", "news", "", 0, 1, 2, 3])
        if pick == 6:
            return [self._junk_value(depth + 1) for _ in range(rng.randrange(0, 6))]
        return {rng.randbytes(4).hex(): self._junk_value(depth + 1) for _ in range(rng.randrange(0, 4))}

    def _junk_record(self) -> list[Any]:
        rng = self.rng
        kind = rng.choice([*range(1, FORWARDED + 1), 99, -1])  # every kind the wire defines, and others
        if kind == MEMBER:
            code = rng.choice([c for c in range(16) if c != REFUSE])
            return [MEMBER, [code, *(self._junk_value() for _ in range(rng.randrange(0, 4)))]]
        return [kind, *(self._junk_value() for _ in range(rng.randrange(0, 12)))]

    def _junk_body(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.4:
            return b"\xc1" + rng.randbytes(rng.randrange(0, 2048))  # 0xc1: never valid msgpack
        records = [self._junk_record() for _ in range(rng.randrange(0, 6))]
        # At least one record no node may accept: an unknown kind.
        records.insert(rng.randrange(0, len(records) + 1), [1000 + rng.randrange(1000), self._junk_value()])
        return msgpack.packb(records, use_bin_type=True)

    def one(self) -> None:
        rng = self.rng
        kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
        well_formed_only = kind in ("wrong_major", "junk_data", "junk_handshake")
        sock = rng.choice(self.well_formed if well_formed_only or rng.random() < 0.3 else self.malformed)
        if kind == "random_bytes":
            frames = [rng.randbytes(rng.randrange(1, 600))]
        elif kind == "random_header":
            major = MAJOR if rng.random() < 0.5 else rng.randrange(256)
            header = HEADER.pack(MAGIC, major, rng.randrange(256), rng.randrange(2, 256), rng.randrange(1 << 64))
            frames = [header + rng.randbytes(rng.randrange(0, 256))]
        elif kind == "empty":
            frames = [b""]
        elif kind == "multipart":
            frames = [rng.randbytes(rng.randrange(0, 64)) for _ in range(rng.randrange(2, 4))]
        elif kind == "wrong_major":
            frames = [self._header(rng.choice([CLS_DATA, CLS_HANDSHAKE]), rng.randrange(2, 256)) + b"\x90"]
        elif kind == "junk_data":
            frames = [self._header(CLS_DATA) + self._junk_body()]
        else:
            frames = [self._header(CLS_HANDSHAKE) + self._junk_body()]
        sock.send_multipart(frames)
        self.sent[kind] += 1
        self.must_refuse += 1

    def churn(self) -> None:
        i = self.rng.randrange(len(self.malformed))
        self.retired.append(self.malformed[i])  # idle from now on; closed at the end (see --hold)
        self.malformed[i] = self._socket(self._malformed_rid())
        self.routing_ids += 1

    def oversized(self, count: int, size: int) -> None:
        sock = self._socket(self._well_formed_rid())
        frame = self._header(CLS_DATA) + bytes(size)
        for _ in range(count):
            sock.send(frame)
            self.sent["oversized"] += 1
        sock.close()

    def close(self) -> None:
        for sock in [*self.malformed, *self.well_formed, *self.retired]:
            sock.close()  # lingers until what it queued is written (bounded by LINGER_MS)
        self.context.term()  # bounded: every socket lingers at most LINGER_MS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint")
    parser.add_argument("--incarnation", type=int, required=True, help="the node's incarnation")
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--oversized", type=int, default=0, help="frames over the node's maximum size, first")
    parser.add_argument("--oversized-bytes", type=int, default=0)
    parser.add_argument("--hold", action="store_true", help="keep the connections open until stdin closes")
    parser.add_argument("--hold-timeout", type=float, default=300.0, help="the longest --hold waits, in seconds")
    args = parser.parse_args(argv)
    flood = Flood(args.endpoint, args.incarnation, random.Random(args.seed))
    started = time.monotonic()
    try:
        if args.oversized:
            flood.oversized(args.oversized, args.oversized_bytes)
        oversized_s = time.monotonic() - started
        for i in range(args.frames):
            flood.one()
            if i and i % CHURN_EVERY == 0:
                flood.churn()
        sent_s = time.monotonic() - started
        result = {
            "sent": dict(flood.sent),
            "frames": sum(n for kind, n in flood.sent.items() if kind != "oversized"),
            "must_refuse": flood.must_refuse,
            "routing_ids": flood.routing_ids,
            "oversized_s": round(oversized_s, 3),
            "sent_s": round(sent_s, 3),
        }
        if args.hold:
            print(json.dumps(result), flush=True)
            _wait_for_eof(sys.stdin.fileno(), args.hold_timeout)
    finally:
        flood.close()
    if not args.hold:
        result["flushed_s"] = round(time.monotonic() - started, 3)
        print(json.dumps(result), flush=True)
    return 0


def _wait_for_eof(fd: int, timeout_s: float) -> None:
    """Read ``fd`` until end of file, for at most ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:  # bounded by the deadline
        ready, _, _ = select.select([fd], [], [], left)
        if ready and not os.read(fd, 4096):
            return


if __name__ == "__main__":
    sys.exit(main())
