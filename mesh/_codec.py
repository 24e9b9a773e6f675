"""The wire format: pure functions from records to frames and back. No sockets, no event loop.

A frame is a 13-byte header -- magic ``AM``, protocol major and minor, frame class, and the
incarnation of the node it is addressed to -- followed by a msgpack array of records. Records
are msgpack arrays whose first item is the record kind. Bodies travel as (type name, content
type, bytes), encoded by the node's serializer registry. Nothing is ever unpickled or evaluated:
every field read from a peer is checked for type and size here, and anything malformed raises
:class:`FrameDecodeError`, the one error this module raises for bad input.
"""

from __future__ import annotations

import builtins
import struct
import sys
import traceback
from typing import Any

import msgpack

from ._errors import MeshError, RemoteAgentError, compat
from ._ids import AgentId, TopicId, is_valid_agent_type, is_valid_topic_type

PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 1  # 1: SETTLED, FORWARDED
MAGIC = b"AM"
HEADER = struct.Struct(">2sBBBQ")
CLS_DATA = 0
CLS_HANDSHAKE = 1  # membership handshakes, accepted from nodes that are not members yet

# Record kinds. Receivers ignore trailing fields they do not know (newer minor versions may add some).
PUBLISH = 1  # [PUBLISH, message_id, topic_type, topic_source, sender, recipients, type, ctype, payload, view, hops,
#              cancellable]
RPC = 2  # [RPC, req_id, origin, message_id, recipient, sender, type, ctype, payload, view, hops]
REPLY = 3  # [REPLY, req_id, status, a, b, c]
CANCEL = 4  # [CANCEL, req_id, origin]
CREDIT = 5  # [CREDIT, messages, bytes]
MEMBER = 6  # [MEMBER, membership message]
HANDOVER = 7  # [HANDOVER, req_id, agent_type, key, state]
AGENT_OP = 8  # [AGENT_OP, req_id, origin, op, agent_type, key, argument]
STATS = 9  # [STATS, req_id, origin]
CANCEL_PUBLISH = 10  # [CANCEL_PUBLISH, message_id, origin]: the publisher cancelled its token
# [SETTLED, incarnation, agent types]: the sender has handed over every live agent of these types
# that the receiver (in that incarnation) owns in the sender's view (protocol 1.1 and later).
SETTLED = 11
# [FORWARDED, req_id, agent_type, key]: the sender holds the receiver's call req_id (to that agent),
# which reached it forwarded, and answers it; the caller waits on the sender from now on (1.1).
FORWARDED = 12

DATA_KINDS = frozenset({PUBLISH, RPC})

# Reply statuses.
OK = 0  # a=type name, b=content type, c=payload
ERROR = 1  # a=exception type's qualified name, b=args, c=remote traceback
RETRY = 2  # a=reason: the receiver does not own the recipient in its view
NOT_RUN = 3  # a=reason: cancelled before it started, or the node is stopping
UNKNOWN_TYPE = 4  # a=reason: no live node hosts the type in the receiver's view

MAX_TEXT = 4096
MAX_TRACEBACK = 16 * 1024
MAX_RECIPIENTS = 100_000


class FrameDecodeError(MeshError, ValueError):
    """A frame or record from a peer is malformed. Names the peer, the record and what was wrong."""


def decode_records(
    body: memoryview | bytes, peer: str, max_size: int, container_budget: int | None = None
) -> list[Any]:
    """The records of a frame body.

    ``container_budget`` bounds the lists and maps the body may decode into (for frames from
    strangers): msgpack spends one byte on an empty list that costs Python over fifty.
    """
    if len(body) > max_size:
        raise FrameDecodeError(f"frame from {peer} is {len(body)} bytes, over the limit of {max_size}")
    options: dict[str, Any] = {}
    if container_budget is not None:
        left = [container_budget]

        def count(value: Any) -> Any:
            left[0] -= 1
            if left[0] < 0:
                raise FrameDecodeError(f"frame from {peer} holds more than {container_budget} lists and maps")
            return value

        options = {"list_hook": count, "object_hook": count}
    try:
        records = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True, **options)
    except FrameDecodeError:
        raise
    except Exception as exc:
        raise FrameDecodeError(f"frame from {peer} is not valid msgpack at offset ~{_offset(exc)}: {exc}") from None
    if not isinstance(records, list):
        raise FrameDecodeError(f"frame from {peer} does not hold a list of records")
    return records


def _offset(exc: Exception) -> str:
    return str(getattr(exc, "pos", "?"))


def _str(value: Any, what: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise FrameDecodeError(f"{what} must be a string of at most {limit} characters")
    return value


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 63:
        raise FrameDecodeError(f"{what} must be a non-negative integer")
    return value


def _bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise FrameDecodeError(f"{what} must be bytes")
    return value


def agent_id_to_wire(agent_id: AgentId | None) -> list[str] | None:
    return None if agent_id is None else [agent_id.type, agent_id.key]


# AgentIds recently read from the wire, so that the hot path does not build and validate one per
# message (bounded; the key strings are checked before they are looked up).
_IDS: dict[tuple[str, str], AgentId] = {}
_IDS_SIZE = 8192


def agent_id_from_wire(value: Any, what: str) -> AgentId:
    if type(value) is list and len(value) == 2:
        agent_type, key = value
        if type(agent_type) is str and type(key) is str:
            known = _IDS.get((agent_type, key))
            if known is not None:
                return known
    if not (isinstance(value, list) and len(value) == 2):
        raise FrameDecodeError(f"{what} must be [type, key]")
    agent_type, key = value
    if not is_valid_agent_type(agent_type):
        raise FrameDecodeError(f"{what} has an invalid agent type")
    agent_id = AgentId(agent_type, _str(key, f"{what} key"))
    if len(_IDS) >= _IDS_SIZE:
        _IDS.clear()
    _IDS[(agent_type, key)] = agent_id
    return agent_id


def optional_agent_id(value: Any, what: str) -> AgentId | None:
    return None if value is None else agent_id_from_wire(value, what)


_TOPICS: dict[tuple[str, str], TopicId] = {}


def topic_from_wire(topic_type: Any, source: Any) -> TopicId:
    if type(topic_type) is str and type(source) is str:
        known = _TOPICS.get((topic_type, source))
        if known is not None:
            return known
    if not is_valid_topic_type(topic_type):
        raise FrameDecodeError("invalid topic type")
    topic_id = TopicId(topic_type, _str(source, "topic source"))
    if len(_TOPICS) >= _IDS_SIZE:
        _TOPICS.clear()
    _TOPICS[(topic_type, source)] = topic_id
    return topic_id


class Body:
    """A received body, decoded at most once however many local recipients share it."""

    __slots__ = ("content_type", "payload", "type_name", "value")

    def __init__(self, type_name: str, content_type: str, payload: bytes) -> None:
        self.type_name = type_name
        self.content_type = content_type
        self.payload = payload
        self.value: Any = _UNSET


_UNSET: Any = object()


def body_from_wire(type_name: Any, content_type: Any, payload: Any) -> Body:
    return Body(_str(type_name, "type name", 1024), _str(content_type, "content type", 256), _bytes(payload, "payload"))


# -- errors across the wire ------------------------------------------------------------------------


def error_to_wire(exc: BaseException) -> tuple[str, list[Any], str]:
    """(qualified type name, args made msgpack-safe, formatted traceback)."""
    if isinstance(exc, RemoteAgentError):
        # Passing on an error from further away: keep its own type name, message and traceback.
        return exc.type_name, [exc.remote_message], exc.remote_traceback[-MAX_TRACEBACK:]
    cls = type(exc)
    name = f"{cls.__module__}.{cls.__qualname__}"
    args = [_wire_arg(a) for a in exc.args[:16]]
    tb = "".join(traceback.format_exception(exc))[-MAX_TRACEBACK:]
    return name, args, tb


def _wire_arg(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str | bytes):
        if isinstance(value, int) and not -(1 << 63) <= value < 1 << 64:
            return repr(value)
        if isinstance(value, str | bytes) and len(value) > MAX_TEXT:
            return value[:MAX_TEXT]
        return value
    return repr(value)[:MAX_TEXT]


def _shape(value: Any) -> str:
    """A short description of a value from a peer, never its repr (which may recurse or be huge)."""
    return f"<{type(value).__name__}>"


def reason(value: Any) -> str:
    """A reason text a peer sent, or a placeholder when it is not text."""
    return value[:MAX_TEXT] if isinstance(value, str) else _shape(value)


def error_from_wire(name: Any, args: Any, tb: Any, allowed: dict[str, type[BaseException]]) -> BaseException:
    """Rebuild a remote exception: same type when it is allowed, otherwise RemoteAgentError."""
    name = _str(name, "exception type name", 1024)
    tb = _str(tb, "traceback", MAX_TRACEBACK + 1024) if tb is not None else ""
    if not isinstance(args, list):
        args = [_shape(args)]
    args = [a if a is None or isinstance(a, bool | int | float | str | bytes) else _shape(a) for a in args[:16]]
    cls = resolve_exception_type(name, allowed)
    message = str(args[0]) if len(args) == 1 else (str(tuple(args)) if args else "")
    if cls is not None:
        if cls.__module__ == "mesh._errors":
            cls = compat(cls)
        try:
            exc = cls(*args)
        except Exception:
            exc = None
        if exc is not None:
            if tb:
                exc.add_note(f"Remote traceback:\n{tb}")
            return exc
    return RemoteAgentError(name, message, tb)


def resolve_exception_type(name: str, allowed: dict[str, type[BaseException]]) -> type[BaseException] | None:
    """The allow-list: builtin Exception subclasses, mesh's own errors, and registered types."""
    cls = allowed.get(name)
    if cls is not None:
        return cls
    module, _, qualname = name.rpartition(".")
    if module == "autogen_core.exceptions":
        # autogen_core's own four, for unmodified autogen_core agents (only if it is imported).
        candidate = getattr(sys.modules.get(module), qualname, None)
        if isinstance(candidate, type) and issubclass(candidate, Exception):
            return candidate
    if module == "builtins":
        candidate = getattr(builtins, qualname, None)
        if isinstance(candidate, type) and issubclass(candidate, Exception):
            return candidate
    return None
