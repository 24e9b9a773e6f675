"""Hostile bytes and records on the decode paths (issue 8 part 2; DESIGN §3; STYLE 11).

- ``decode_records`` raises only ``FrameDecodeError``, for any bytes and any msgpack value.
- A joined peer's records, whatever they hold, make the link's record handler raise nothing but
  ``FrameDecodeError``/``ValueError``/``TypeError`` (which the frame handler counts and drops), and
  the node keeps serving: its callbacks raise nothing and a call from the peer is still answered.
- A stranger's handshake frame never raises out of the frame handler (the transport would log
  each one with a traceback, unrated).
- A reply to a call in flight, whatever it holds, either leaves the call waiting (malformed reply,
  dropped) or ends it: the caller never hangs on a reply that was taken and not delivered.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh import (
    AgentId,
    MeshNode,
    MessageContext,
    RoutedAgent,
    TypeSubscription,
    event,
    rpc,
    try_get_known_serializers_for_type,
)
from mesh import _codec as wire
from mesh._codec import FrameDecodeError, decode_records
from mesh.testing import LocalMesh, quiesce

# More examples than the quick profile's 25: each one is cheap (a plain call, or a record and a
# round trip on loopback). HYPOTHESIS_PROFILE=long raises it further.
EXAMPLES = max(300, settings().max_examples)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # One mesh serves every example of a test: its state between examples is part of what is tested.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
ALLOWED = (FrameDecodeError, ValueError, TypeError)


@contextmanager
def production_recursion_limit() -> Iterator[None]:
    """The interpreter's default recursion limit (hypothesis raises it by 2 000 while a test runs):
    a node's handlers run under the default, and a peer's nested values hit it there."""
    raised = sys.getrecursionlimit()
    sys.setrecursionlimit(DEFAULT_RECURSION_LIMIT)
    try:
        yield
    finally:
        sys.setrecursionlimit(raised)


DEFAULT_RECURSION_LIMIT = 1000


@dataclass(frozen=True)
class Deep:
    """Stands for a list nested ``depth`` deep (msgpack decodes up to 1 024 levels, more than repr()
    survives under the default recursion limit); :func:`real` builds it. A marker, so that
    hypothesis can print a failing example."""

    depth: int


def real(value: Any) -> Any:
    """``value`` with every :class:`Deep` replaced by the nested list it stands for."""
    if isinstance(value, Deep):
        nested: Any = None
        for _ in range(value.depth):
            nested = [nested]
        return nested
    if isinstance(value, list):
        return [real(v) for v in value]
    if isinstance(value, dict):
        return {k: real(v) for k, v in value.items()}
    return value


scalars = (
    st.builds(Deep, st.integers(min_value=900, max_value=1020))
    | st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=40)
    | st.binary(max_size=64)
    | st.sampled_from(["echo", "listener", "news", "k", "", "a b", "x" * 5000, "application/json", "int"])
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)

# Every record kind, and some that do not exist.
kinds = st.sampled_from([*range(13), -1, 1 << 40, "1", None, 2.0, True])


def _templates(req_id: int = 7) -> list[list[Any]]:
    """A well-formed record of every kind (bodies of registered types), for mutation."""
    payload = b'{"text": "hi"}'
    return [
        [
            wire.PUBLISH,
            "m1",
            "news",
            "k1",
            None,
            [["listener", "k1"]],
            "Text",
            "application/json",
            payload,
            0,
            0,
            False,
        ],
        [wire.RPC, req_id, "someone", "m2", ["echo", "k2"], None, "Text", "application/json", payload, 0, 0],
        [wire.REPLY, req_id, wire.OK, "Text", "application/json", payload],
        [wire.CANCEL, req_id, "someone"],
        [wire.CREDIT, 1, 100],
        [wire.MEMBER, [3, 1]],
        [wire.HANDOVER, req_id, "echo", "k3", b"\x80"],
        [wire.AGENT_OP, req_id, "someone", "metadata", "echo", "k4", None],
        [wire.STATS, req_id, "someone"],
        [wire.CANCEL_PUBLISH, "m1", "someone"],
    ]


@st.composite
def records(draw: st.DrawFn) -> Any:
    """Mostly near-valid records (a template with fields replaced, cut or added), some pure junk."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(values)
    if choice == 1:
        return [draw(kinds), *draw(st.lists(values, max_size=13))]
    record = list(draw(st.sampled_from(_templates(draw(st.integers(0, 20))))))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.integers(0, 3))
        if op <= 1 and len(record) > 1:
            record[draw(st.integers(1, len(record) - 1))] = draw(values)
        elif op == 2:
            record = record[: draw(st.integers(0, len(record)))]
        else:
            record.append(draw(values))
    return record


# -- the codec ------------------------------------------------------------------------------------


@FUZZ
@given(body=st.binary(max_size=4096), limit=st.integers(min_value=0, max_value=8192))
def test_decode_records_of_any_bytes_raises_only_frame_decode_error(body: bytes, limit: int) -> None:
    try:
        result = decode_records(body, "peer", limit)
    except FrameDecodeError:
        return
    assert isinstance(result, list) and len(body) <= limit


@FUZZ
@given(value=values, cut=st.integers(min_value=0, max_value=64), flip=st.integers(min_value=0, max_value=255))
def test_decode_records_of_any_msgpack_value_raises_only_frame_decode_error(value: Any, cut: int, flip: int) -> None:
    value = real(value)
    try:
        packed = msgpack.packb(value, use_bin_type=True)
    except ValueError:
        return  # deeper than msgpack encodes (or decodes): no such frame exists
    result = decode_records(packed, "peer", len(packed)) if isinstance(value, list) else None
    if result is not None:
        assert len(result) == len(value)
    else:
        with pytest.raises(FrameDecodeError):
            decode_records(packed, "peer", len(packed))
    with pytest.raises(FrameDecodeError, match="over the limit of"):
        decode_records(packed, "peer", len(packed) - 1)
    # Truncated and corrupted encodings of the same value.
    for body in (packed[: max(0, len(packed) - 1 - cut)], bytes([packed[0] ^ flip]) + packed[1:]):
        try:
            decode_records(body, "peer", len(body))
        except FrameDecodeError:
            pass


# -- a node's record handlers -----------------------------------------------------------------------


@dataclass
class Text:
    text: str


class Echo(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("echo")

    @rpc
    async def echo(self, message: Text, ctx: MessageContext) -> Text:
        return message

    async def save_state(self) -> dict[str, Any]:
        return {}

    async def load_state(self, state: Any) -> None:
        pass


class Listener(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("listener")

    @event
    async def on_text(self, message: Text, ctx: MessageContext) -> None:
        pass


@dataclass
class Pair:
    a: MeshNode
    b: MeshNode
    callback_errors: list[dict[str, Any]]

    async def healthy(self) -> None:
        """``a`` answers ``b`` and none of its loop callbacks raised."""
        assert not self.callback_errors, self.callback_errors[:3]
        reply = await self.b.send_message(Text("ping"), AgentId("echo", "health"), timeout=10.0)
        assert reply == Text("ping")
        assert self.a.peers and self.b.peers, "the two nodes lost each other"


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        async with LocalMesh(2) as mesh:
            a, b = mesh.nodes
            await Echo.register(a, "echo", Echo)
            await Listener.register(a, "listener", Listener)
            await a.add_subscription(TypeSubscription("news", "listener"))
            b.add_message_serializer(try_get_known_serializers_for_type(Text))  # only a hosts echo
            pair = Pair(a, b, errors)
            await pair.healthy()
            yield pair
    finally:
        loop.set_exception_handler(previous)


def _peer(pair: Pair) -> Any:
    peer = pair.a._link.peer(pair.b.node_id)
    assert peer is not None
    return peer


@FUZZ
@given(record=records())
async def test_any_record_from_a_joined_peer_is_refused_cleanly_and_the_node_keeps_serving(
    pair: Pair, record: Any
) -> None:
    record = real(record)
    link = pair.a._link
    try:
        with production_recursion_limit():
            link._on_record(_peer(pair), record)
    except ALLOWED:
        pass
    # The same record inside a frame: the frame handler counts and drops whatever is wrong with it.
    try:
        body = msgpack.packb([record], use_bin_type=True)
    except ValueError:
        body = b""  # deeper than msgpack encodes: such a frame cannot exist
    if body:
        with production_recursion_limit():
            link._on_frame(pair.b.node_id, pair.b.incarnation, wire.CLS_DATA, memoryview(body))
    await pair.healthy()


@FUZZ
@given(record=records())
async def test_any_handshake_frame_from_a_stranger_is_dropped_without_an_error(pair: Pair, record: Any) -> None:
    record = real(record)
    messages = [record, [wire.MEMBER, record], [wire.MEMBER, [1, record]], [wire.MEMBER, [2, [[record, 0]], True]]]
    for message in messages:
        try:
            body = msgpack.packb([message], use_bin_type=True)
        except ValueError:
            continue
        with production_recursion_limit():
            pair.a._link._on_frame("stranger", 1, wire.CLS_HANDSHAKE, memoryview(body))
    await pair.healthy()


@FUZZ
@given(status=values, a=values, b=values, c=values)
async def test_a_reply_to_a_call_in_flight_either_ends_the_call_or_leaves_it_waiting(
    pair: Pair, status: Any, a: Any, b: Any, c: Any
) -> None:
    status, a, b, c = real([status, a, b, c])
    link = pair.a._link
    req_id, future = link.new_call(pair.b.node_id, AgentId("echo", "k"))
    try:
        for record in ([wire.REPLY, req_id, status, a, b, c], [wire.REPLY, req_id, wire.ERROR, a, b, c]):
            try:
                with production_recursion_limit():
                    link._on_record(_peer(pair), record)
            except ALLOWED:
                pass
            # Taken means answered: a caller must never wait forever for a reply that was consumed.
            assert req_id in link._calls or future.done(), f"call {req_id} taken by {record!r:.200} but never ended"
            if future.done():
                break
    finally:
        link.forget_call(req_id)
        if future.done() and not future.cancelled():
            future.exception()  # retrieved: no "exception was never retrieved" at collection
        future.cancel()
    await pair.healthy()


async def test_the_templates_are_valid_records(pair: Pair) -> None:
    """The fuzz starts from valid records: the publish template fed to the handler is delivered."""
    before = pair.a.statistics()
    pair.a._link._on_record(_peer(pair), _templates()[0])
    await quiesce([pair.a, pair.b])
    after = pair.a.statistics()
    assert after["delivered"] == before["delivered"] + 1 and after["bad_frames"] == before["bad_frames"]
