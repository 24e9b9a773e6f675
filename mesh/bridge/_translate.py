"""Payload translation between mesh bodies and AutoGen's ``Payload`` and ``CloudEvent`` messages.

A mesh body is (type name, content type, bytes), and the mesh encodes dataclasses and pydantic
models exactly as AutoGen does (``application/json``, the class name) and protobuf messages as
AutoGen does (``application/x-protobuf``, a packed ``google.protobuf.Any``), so translation never
re-encodes and never guesses: JSON bytes travel as they are, protobuf bytes move between the
``Any`` the mesh carries and the ``proto_data`` field of a CloudEvent. A content type AutoGen's
workers cannot decode (msgpack, the mesh's encoding of ``str``, ``int``, ``dict``...) is refused
with an error that names the type and the fix.
"""

from __future__ import annotations

from typing import Any

from .._errors import RemoteAgentError, SerializationError
from .._ids import AgentId, TopicId, is_valid_agent_type
from .._serialization import (
    JSON_DATA_CONTENT_TYPE,
    PROTOBUF_DATA_CONTENT_TYPE,
    UnknownPayload,
    qualified_name,
    try_get_known_serializers_for_type,
)
from ._protos import (
    AGENT_SENDER_KEY_ATTR,
    AGENT_SENDER_TYPE_ATTR,
    DATA_CONTENT_TYPE_ATTR,
    DATA_SCHEMA_ATTR,
    MESSAGE_KIND_ATTR,
    MESSAGE_KIND_PUBLISH,
    Protos,
)

Body = tuple[str, str, bytes]
TRANSLATABLE = (JSON_DATA_CONTENT_TYPE, PROTOBUF_DATA_CONTENT_TYPE)
UNKNOWN_SENDER = "unknown"  # what AutoGen's worker puts in the sender attributes of a publish without sender


def check_translatable(body: Body, what: str) -> Body:
    type_name, content_type, _ = body
    if content_type not in TRANSLATABLE:
        raise SerializationError(
            f"{what}: message type {type_name!r} is encoded as {content_type or 'nothing'}, which AutoGen's gRPC "
            "runtime cannot carry (it decodes application/json and application/x-protobuf only); send a "
            "dataclass, a pydantic model or a protobuf message across the bridge"
        )
    return body


def body_of(message: Any, what: str) -> Body:
    """The body AutoGen's side receives for ``message``: its original bytes for an
    :class:`UnknownPayload`, else the encoding the mesh derives for its class."""
    if type(message) is UnknownPayload:
        return check_translatable((message.type_name, message.data_content_type, message.payload), what)
    serializers = try_get_known_serializers_for_type(type(message))
    if not serializers:
        raise SerializationError(
            f"{what}: {qualified_name(type(message))} has no AutoGen encoding; send a dataclass, a pydantic "
            "model or a protobuf message across the bridge"
        )
    serializer = serializers[0]
    body = (serializer.type_name, serializer.data_content_type, b"")
    check_translatable(body, what)
    return serializer.type_name, serializer.data_content_type, serializer.serialize(message)


def as_message(body: Body) -> UnknownPayload:
    """The object a relay hands to the mesh: the mesh sends its body on unchanged."""
    return UnknownPayload(*body)


# -- RPC payloads ----------------------------------------------------------------------------------


def body_from_payload(payload: Any, what: str) -> Body:
    body: Body = (str(payload.data_type), str(payload.data_content_type), bytes(payload.data))
    return check_translatable(body, what)


def payload_from_body(protos: Protos, body: Body) -> Any:
    type_name, content_type, data = body
    return protos.pb.Payload(data_type=type_name, data_content_type=content_type, data=data)


def agent_id_from_proto(value: Any, what: str) -> AgentId:
    if not is_valid_agent_type(value.type):
        raise ValueError(f"{what}: invalid agent type {value.type!r}")
    return AgentId(value.type, value.key)


# -- CloudEvents -----------------------------------------------------------------------------------


def _attr(event: Any, name: str) -> str | None:
    if name not in event.attributes:
        return None
    value = event.attributes[name]
    kind = value.WhichOneof("attr")
    return str(getattr(value, kind)) if kind is not None else None


def body_from_event(protos: Protos, event: Any) -> Body:
    """The body of a CloudEvent from AutoGen's side (JSON in ``binary_data`` or ``text_data``,
    protobuf in ``proto_data``)."""
    content_type = _attr(event, DATA_CONTENT_TYPE_ATTR) or ""
    type_name = _attr(event, DATA_SCHEMA_ATTR) or ""
    what = f"event {event.id!r} on topic {event.type}/{event.source}"
    data_case = event.WhichOneof("data")
    if content_type == PROTOBUF_DATA_CONTENT_TYPE:
        if data_case != "proto_data":
            raise SerializationError(f"{what}: content type {content_type} but no proto_data")
        if not type_name:
            # The full name is also in the Any's type URL (".../package.Message").
            type_name = event.proto_data.type_url.rpartition("/")[2]
        return type_name, content_type, bytes(event.proto_data.SerializeToString())
    if data_case == "binary_data":
        data = bytes(event.binary_data)
    elif data_case == "text_data":
        data = str(event.text_data).encode("utf-8")
    else:
        data = b""
    return check_translatable((type_name, content_type, data), what)


def event_from_body(
    protos: Protos, body: Body, topic_id: TopicId, sender: AgentId | None, event_id: str, extra: dict[str, str]
) -> Any:
    """A CloudEvent as AutoGen's worker publishes it, for a translatable body."""
    type_name, content_type, data = body
    value = protos.ce.CloudEvent.CloudEventAttributeValue
    attributes = {
        DATA_CONTENT_TYPE_ATTR: value(ce_string=content_type),
        DATA_SCHEMA_ATTR: value(ce_string=type_name),
        AGENT_SENDER_TYPE_ATTR: value(ce_string=sender.type if sender is not None else UNKNOWN_SENDER),
        AGENT_SENDER_KEY_ATTR: value(ce_string=sender.key if sender is not None else UNKNOWN_SENDER),
        MESSAGE_KIND_ATTR: value(ce_string=MESSAGE_KIND_PUBLISH),
    }
    for name, text in extra.items():
        attributes[name] = value(ce_string=text)
    event = protos.ce.CloudEvent(
        id=event_id, spec_version="1.0", type=topic_id.type, source=topic_id.source, attributes=attributes
    )
    if content_type == PROTOBUF_DATA_CONTENT_TYPE:
        packed = protos.any_pb2.Any()
        try:
            packed.ParseFromString(data)
        except Exception as exc:
            raise SerializationError(f"protobuf body of {type_name!r} is not a packed google.protobuf.Any") from exc
        event.proto_data.CopyFrom(packed)
    else:
        event.binary_data = data
    return event


def sender_from_event(event: Any) -> AgentId | None:
    sender_type = _attr(event, AGENT_SENDER_TYPE_ATTR)
    sender_key = _attr(event, AGENT_SENDER_KEY_ATTR)
    if sender_type is None or sender_key is None or not is_valid_agent_type(sender_type):
        return None
    if sender_type == UNKNOWN_SENDER and sender_key == UNKNOWN_SENDER:
        return None
    return AgentId(sender_type, sender_key)


# -- errors ------------------------------------------------------------------------------------------


def error_text(exc: BaseException) -> str:
    """The text AutoGen's protocol carries for an error (it has no field for the type)."""
    if isinstance(exc, RemoteAgentError):
        return str(exc)
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
