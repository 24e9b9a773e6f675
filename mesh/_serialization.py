"""Message serializers and the per-node registry that picks one for a message or a type name.

Bodies travel as (type name, content type, bytes). Dataclasses and pydantic models use AutoGen's
JSON encoding and type names, protobuf messages are packed in ``google.protobuf.Any``, and
msgpack-native values (``str``, ``int``, ``dict``, ...) are msgpack. Nothing is ever unpickled.
pydantic and protobuf are optional: a class can only be one of theirs if its library is imported.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, get_args, get_origin, get_type_hints

import msgpack
import orjson

from ._errors import SerializationError

T = TypeVar("T")

JSON_DATA_CONTENT_TYPE = "application/json"
"""JSON data content type"""
PROTOBUF_DATA_CONTENT_TYPE = "application/x-protobuf"
"""Protobuf data content type"""
MSGPACK_DATA_CONTENT_TYPE = "application/x-msgpack"
"""msgpack, for msgpack-native values (str, int, float, bool, None, bytes, list, tuple, dict)"""


class MessageSerializer(Protocol[T]):
    @property
    def data_content_type(self) -> str: ...

    @property
    def type_name(self) -> str: ...

    def deserialize(self, payload: bytes) -> T: ...

    def serialize(self, message: T) -> bytes: ...


@dataclass
class UnknownPayload:
    """A received body whose type this node cannot decode. Sending or publishing one sends the
    original body on unchanged (a relay that lacks the class still forwards it)."""

    type_name: str
    data_content_type: str
    payload: bytes


class PayloadDecodeError(SerializationError):
    """A body claimed a known type but its bytes do not decode as that type."""


def _pydantic_base() -> type[Any] | None:
    module = sys.modules.get("pydantic")
    return getattr(module, "BaseModel", None) if module is not None else None


def _protobuf_base() -> type[Any] | None:
    module = sys.modules.get("google.protobuf.message")
    return getattr(module, "Message", None) if module is not None else None


def is_pydantic_model(cls: Any) -> bool:
    base = _pydantic_base()
    return base is not None and isinstance(cls, type) and issubclass(cls, base)


def is_protobuf_message(cls: Any) -> bool:
    base = _protobuf_base()
    return base is not None and isinstance(cls, type) and issubclass(cls, base)


def type_name_of(cls: type[Any]) -> str:
    """AutoGen's type name: the protobuf full name, else the class name."""
    if is_protobuf_message(cls):
        return str(cls.DESCRIPTOR.full_name)
    return cls.__name__


def qualified_name(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# -- dataclasses ------------------------------------------------------------------------------------


def _build(tp: Any, value: Any) -> Any:
    """Rebuild ``value`` (decoded JSON) as ``tp`` where ``tp`` names nested dataclasses or models.

    AutoGen's own JSON decoder passes top-level fields through as decoded; this one also rebuilds
    nested dataclasses and pydantic models, so it reads everything AutoGen writes.
    """
    if value is None:
        return None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return _build_dataclass(tp, value)
    if is_pydantic_model(tp) and isinstance(value, dict):
        return tp.model_validate(value)
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (typing.Union, types.UnionType):
        # Only an Optional[X] is unambiguous; other unions keep the decoded value.
        non_none = [a for a in args if a is not type(None)]
        return _build(non_none[0], value) if len(non_none) == 1 else value
    if origin in (list, Sequence) and args and isinstance(value, list):
        return [_build(args[0], v) for v in value]
    if (tp is tuple or origin is tuple) and isinstance(value, list):
        if not args:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v) for v in value)
        return tuple(_build(a, v) for a, v in zip(args, value, strict=False))
    if (tp in (set, frozenset) or origin in (set, frozenset)) and isinstance(value, list):
        kind = origin or tp
        return kind(_build(args[0], v) for v in value) if args else kind(value)
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return {k: _build(args[1], v) for k, v in value.items()}
    return value


def _needs_build(tp: Any, depth: int = 0) -> bool:
    """Whether values of type ``tp`` hold a dataclass or a model that JSON alone cannot rebuild."""
    if depth > 8 or tp is None:
        return False
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or is_pydantic_model(tp)):
        return True
    if tp in (tuple, set, frozenset) or get_origin(tp) in (tuple, set, frozenset):
        return True  # JSON has lists only
    return any(_needs_build(arg, depth + 1) for arg in get_args(tp))


# Per dataclass: the fields that need rebuilding (most classes have none: decoding is cls(**data)).
_PLANS: dict[type[Any], dict[str, Any]] = {}


def _build_dataclass(cls: type[Any], data: dict[str, Any]) -> Any:
    plan = _PLANS.get(cls)
    if plan is None:
        try:
            hints = get_type_hints(cls)
        except Exception:
            hints = {}
        plan = _PLANS[cls] = {name: tp for name, tp in hints.items() if _needs_build(tp)}
    for name, tp in plan.items():
        if name in data:
            data[name] = _build(tp, data[name])
    return cls(**data)


def _json_default(value: Any) -> Any:
    """Nested dataclasses and models for the JSON encoder (what ``asdict`` would give)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if is_pydantic_model(type(value)):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset):
        return list(value)  # rebuilt as a set from the field's type hint on receipt
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# Same output as json.dumps(asdict(message)) without asdict's deep copy of every field.
_JSON_ENCODER = json.JSONEncoder(default=_json_default)
_JSON_DECODER = json.JSONDecoder()
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS  # int keys become strings, as json.dumps does


def _exact_in_orjson(tp: Any, depth: int = 0) -> bool:
    """Whether orjson writes every value of type ``tp`` as json.dumps would (same values): not for
    floats (orjson writes NaN and infinities as null), nor for types it does not know."""
    if depth > 8:
        return False
    if tp in (str, int, bool, type(None)):
        return True
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        try:
            hints = get_type_hints(tp)
        except Exception:
            return False
        return all(_exact_in_orjson(hints.get(f.name), depth + 1) for f in dataclasses.fields(tp))
    origin = get_origin(tp)
    if origin in (list, tuple, dict, typing.Union, types.UnionType, Sequence):
        return all(arg is Ellipsis or _exact_in_orjson(arg, depth + 1) for arg in get_args(tp))
    return False


def dumps_json(message: Any, fields: tuple[str, ...], fast: bool) -> bytes:
    """AutoGen's dataclass JSON: the same values (orjson writes no spaces). orjson, about twenty
    times faster, for classes whose fields it writes exactly (``fast``), else the json module."""
    if fast:
        try:
            # orjson's bytes keep its growth buffer (4 KiB for a 100-byte message, 128 KiB for
            # 8 KiB): copy into an exact-size one, as these stay in memory while in flight.
            return bytes(memoryview(orjson.dumps(message, option=_ORJSON_OPTIONS)))
        except (TypeError, orjson.JSONEncodeError):
            pass  # an int beyond 64 bits, or a value not of its declared type
    return _JSON_ENCODER.encode({name: getattr(message, name) for name in fields}).encode("utf-8")


# orjson reads integers beyond 64 bits as floats, silently: a number that long goes to json instead.
_LONG_NUMBER = re.compile(rb"[0-9]{19}")


def loads_json(payload: bytes) -> Any:
    if _LONG_NUMBER.search(payload) is None:
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            pass  # NaN and Infinity literals (json.dumps writes them) are not JSON; json reads them
    return _JSON_DECODER.decode(payload.decode("utf-8"))


class DataclassJsonMessageSerializer(MessageSerializer[T]):
    """AutoGen's dataclass encoding: ``json.dumps(asdict(message))``."""

    def __init__(self, cls: type[T]) -> None:
        self.cls = cls
        self._type_name = type_name_of(cls)
        self._fields = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        self._fast = _exact_in_orjson(cls)

    @property
    def data_content_type(self) -> str:
        return JSON_DATA_CONTENT_TYPE

    @property
    def type_name(self) -> str:
        return self._type_name

    def deserialize(self, payload: bytes) -> T:
        data = loads_json(payload)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object for {self._type_name}, got {type(data).__name__}")
        result: T = _build_dataclass(self.cls, data)
        return result

    def serialize(self, message: T) -> bytes:
        return dumps_json(message, self._fields, self._fast)


class PydanticJsonMessageSerializer(MessageSerializer[T]):
    """AutoGen's pydantic encoding: ``model_dump_json()``."""

    def __init__(self, cls: type[T]) -> None:
        self.cls = cls
        self._type_name = type_name_of(cls)

    @property
    def data_content_type(self) -> str:
        return JSON_DATA_CONTENT_TYPE

    @property
    def type_name(self) -> str:
        return self._type_name

    def deserialize(self, payload: bytes) -> T:
        result: T = self.cls.model_validate_json(payload)  # type: ignore[attr-defined]
        return result

    def serialize(self, message: T) -> bytes:
        data: str = message.model_dump_json()  # type: ignore[attr-defined]
        return data.encode("utf-8")


class ProtobufMessageSerializer(MessageSerializer[T]):
    """AutoGen's protobuf encoding: the message packed in a ``google.protobuf.Any``."""

    def __init__(self, cls: type[T]) -> None:
        self.cls = cls
        self._type_name = type_name_of(cls)

    @property
    def data_content_type(self) -> str:
        return PROTOBUF_DATA_CONTENT_TYPE

    @property
    def type_name(self) -> str:
        return self._type_name

    def deserialize(self, payload: bytes) -> T:
        from google.protobuf import any_pb2

        any_proto = any_pb2.Any()
        any_proto.ParseFromString(payload)
        message = self.cls()
        if not any_proto.Unpack(message):
            raise ValueError(f"Failed to unpack payload into {self.cls}")
        return message

    def serialize(self, message: T) -> bytes:
        from google.protobuf import any_pb2

        any_proto = any_pb2.Any()
        any_proto.Pack(message)
        data: bytes = any_proto.SerializeToString()
        return data


NATIVE_TYPES: dict[str, type[Any]] = {
    t.__name__: t for t in (str, int, float, bool, bytes, list, tuple, dict, type(None))
}


class MsgpackMessageSerializer(MessageSerializer[T]):
    """msgpack for msgpack-native values; tuples come back as tuples."""

    def __init__(self, cls: type[T]) -> None:
        self.cls = cls
        self._type_name = cls.__name__

    @property
    def data_content_type(self) -> str:
        return MSGPACK_DATA_CONTENT_TYPE

    @property
    def type_name(self) -> str:
        return self._type_name

    def deserialize(self, payload: bytes) -> T:
        value = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        if self.cls is tuple and isinstance(value, list):
            value = tuple(value)
        if type(value) is not self.cls:
            raise ValueError(f"expected {self._type_name}, payload holds {type(value).__name__}")
        result: T = value
        return result

    def serialize(self, message: T) -> bytes:
        try:
            data: bytes = msgpack.packb(message, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(
                f"cannot encode {type(message).__name__} value as msgpack ({exc}); nested values must be "
                "msgpack-native too (str, int, float, bool, None, bytes, list, tuple, dict)"
            ) from exc
        return data


def _agentchat_serializer(cls: type[Any]) -> MessageSerializer[Any] | None:
    if not cls.__module__.startswith("autogen_agentchat"):
        return None
    from . import autogen

    return autogen.agentchat_serializer(cls)


def try_get_known_serializers_for_type(cls: type[Any]) -> list[MessageSerializer[Any]]:
    """The serializers the mesh derives by itself for ``cls`` (empty if none fits)."""
    serializers: list[MessageSerializer[Any]] = []
    if not isinstance(cls, type):
        return serializers
    if is_pydantic_model(cls):
        agentchat = _agentchat_serializer(cls)
        serializers.append(agentchat if agentchat is not None else PydanticJsonMessageSerializer(cls))
    elif dataclasses.is_dataclass(cls):
        serializers.append(DataclassJsonMessageSerializer(cls))
    elif is_protobuf_message(cls):
        serializers.append(ProtobufMessageSerializer(cls))
    elif NATIVE_TYPES.get(cls.__name__) is cls:
        serializers.append(MsgpackMessageSerializer(cls))
    return serializers


# Every (type name, content type) a registry of this process learned, as a fallback for the others:
# a node that hosts no agent of a reply's type still decodes the reply when another node of the
# same process knows the class. A name two different classes claim is ambiguous: never guessed.
_PROCESS_SERIALIZERS: dict[tuple[str, str], MessageSerializer[Any] | None] = {}


def _share(key: tuple[str, str], serializer: MessageSerializer[Any]) -> None:
    known = _PROCESS_SERIALIZERS.get(key, serializer)
    if known is not None and getattr(known, "cls", None) is not getattr(serializer, "cls", None):
        _PROCESS_SERIALIZERS[key] = None
    elif key not in _PROCESS_SERIALIZERS:
        _PROCESS_SERIALIZERS[key] = serializer


class SerializerRegistry:
    """One node's serializers: derives one per class to encode, resolves type names on receipt.

    A type name may stand for one class only: when a second class with the same name must be
    encoded, :class:`SerializationError` names both. Names this node does not know are looked up
    among the serializers other nodes of this process learned, then become :class:`UnknownPayload`.
    """

    def __init__(self) -> None:
        self._by_name: dict[tuple[str, str], MessageSerializer[Any]] = {}
        self._by_class: dict[type[Any], MessageSerializer[Any]] = {}
        self._class_by_name: dict[str, type[Any]] = {}

    def add_serializer(self, serializer: MessageSerializer[Any] | Sequence[MessageSerializer[Any]]) -> None:
        if isinstance(serializer, Sequence):
            for s in serializer:
                self.add_serializer(s)
            return
        cls = getattr(serializer, "cls", None)
        if isinstance(cls, type) and is_pydantic_model(cls):
            # AgentChat's models need AgentChat's own message factory to decode (see mesh.autogen).
            serializer = _agentchat_serializer(cls) or serializer
        key = (serializer.type_name, serializer.data_content_type)
        self._by_name[key] = serializer
        _share(key, serializer)
        if isinstance(cls, type):
            self._class_by_name.setdefault(serializer.type_name, cls)
            self._by_class.setdefault(cls, serializer)

    def learn_type(self, cls: Any) -> None:
        """Make ``cls`` decodable by its type name (called with handler type hints)."""
        if not isinstance(cls, type) or cls in self._by_class:
            return
        serializers = try_get_known_serializers_for_type(cls)
        if serializers:
            name = serializers[0].type_name
            if name not in self._class_by_name:
                self.add_serializer(serializers)

    def serializer_for(self, message: Any) -> MessageSerializer[Any]:
        cls = type(message)
        serializer = self._by_class.get(cls)
        if serializer is not None:
            return serializer
        registered = self._registered_for_name(type_name_of(cls))
        if registered is not None and getattr(registered, "cls", cls) is cls:
            # A serializer added for this type name (AutoGen's protocol names no class).
            self._by_class[cls] = registered
            return registered
        serializers = try_get_known_serializers_for_type(cls)
        if not serializers:
            raise SerializationError(
                f"no serializer for {qualified_name(cls)}: send dataclasses, pydantic models, protobuf messages "
                "or msgpack-native values, or register a MessageSerializer with add_message_serializer()"
            )
        serializer = serializers[0]
        other = self._class_by_name.get(serializer.type_name)
        if other is not None and other is not cls:
            raise SerializationError(
                f"two classes share the message type name {serializer.type_name!r}: {qualified_name(other)} and "
                f"{qualified_name(cls)}; rename one of them (AutoGen names message types by class name)"
            )
        self._class_by_name[serializer.type_name] = cls
        self._by_class[cls] = serializer
        key = (serializer.type_name, serializer.data_content_type)
        self._by_name.setdefault(key, serializer)
        _share(key, serializer)
        return serializer

    def _registered_for_name(self, type_name: str) -> MessageSerializer[Any] | None:
        matches = [s for (name, _), s in self._by_name.items() if name == type_name]
        if not matches:
            return None
        # Prefer AutoGen's JSON when a type has several encodings, as the bridge's Python peers do.
        return next((s for s in matches if s.data_content_type == JSON_DATA_CONTENT_TYPE), matches[0])

    def encode(self, message: Any) -> tuple[str, str, bytes]:
        """(type name, content type, bytes) for ``message``.

        An :class:`UnknownPayload` is sent on as the body it arrived as, so a node that does not
        know a type (the gRPC bridge, a relay) can still forward it to one that does.
        """
        if type(message) is UnknownPayload:
            return message.type_name, message.data_content_type, message.payload
        serializer = self.serializer_for(message)
        try:
            payload = serializer.serialize(message)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(f"cannot encode {qualified_name(type(message))}: {exc}") from exc
        return serializer.type_name, serializer.data_content_type, payload

    def decode(self, type_name: str, content_type: str, payload: bytes) -> Any:
        """The message, or :class:`UnknownPayload` when this node knows no such type.

        Raises:
            PayloadDecodeError: the type is known but the bytes do not decode as it.
        """
        serializer = self._by_name.get((type_name, content_type)) or _PROCESS_SERIALIZERS.get((type_name, content_type))
        if serializer is None:
            native = NATIVE_TYPES.get(type_name) if content_type == MSGPACK_DATA_CONTENT_TYPE else None
            if native is None:
                return UnknownPayload(type_name, content_type, payload)
            serializer = MsgpackMessageSerializer(native)
            self._by_name[(type_name, content_type)] = serializer
        try:
            return serializer.deserialize(payload)
        except Exception as exc:
            raise PayloadDecodeError(
                f"payload of type {type_name!r} ({content_type}, {len(payload)} bytes) does not decode: {exc}"
            ) from exc

    def is_registered(self, type_name: str, content_type: str) -> bool:
        return (type_name, content_type) in self._by_name
