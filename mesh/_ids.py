"""Agent ids, agent types and topic ids, with AutoGen's validation rules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ._context import MessageHandlerContext

_AGENT_TYPE_RE = re.compile(r"^[\w\-\.]+\Z")
_TOPIC_TYPE_RE = re.compile(r"^[\w\-\.\:\=]+\Z")


# Types seen valid, so that the hot path does not run the regex for every message (bounded).
_VALID_AGENT_TYPES: set[str] = set()
_VALID_TOPIC_TYPES: set[str] = set()
_VALID_CACHE_SIZE = 4096


def is_valid_agent_type(value: str) -> bool:
    if type(value) is not str:
        return False
    if value in _VALID_AGENT_TYPES:
        return True
    if _AGENT_TYPE_RE.match(value) is None:
        return False
    if len(_VALID_AGENT_TYPES) >= _VALID_CACHE_SIZE:
        _VALID_AGENT_TYPES.clear()
    _VALID_AGENT_TYPES.add(value)
    return True


def is_valid_topic_type(value: str) -> bool:
    if type(value) is not str:
        return False
    if value in _VALID_TOPIC_TYPES:
        return True
    if _TOPIC_TYPE_RE.match(value) is None:
        return False
    if len(_VALID_TOPIC_TYPES) >= _VALID_CACHE_SIZE:
        _VALID_TOPIC_TYPES.clear()
    _VALID_TOPIC_TYPES.add(value)
    return True


@dataclass(eq=True, frozen=True)
class AgentType:
    """The name under which a factory or agent instances are registered."""

    type: str


class AgentId:
    """Identifies one agent: its type and a key within that type.

    The type must match ``^[\\w\\-\\.]+\\Z``; the key is free text.
    """

    __slots__ = ("_key", "_type")

    def __init__(self, type: str | AgentType, key: str) -> None:
        name: Any = type
        if not isinstance(name, str) and isinstance(getattr(name, "type", None), str):
            name = name.type  # an AgentType, the mesh's or autogen_core's
        if not is_valid_agent_type(name):
            raise ValueError(rf"Invalid agent type: {name}. Allowed values MUST match the regex: `^[\w\-\.]+\Z`")
        self._type: str = name
        self._key: str = key

    @classmethod
    def from_str(cls, agent_id: str) -> AgentId:
        """Parse ``"type/key"``."""
        items = agent_id.split("/", maxsplit=1)
        if len(items) != 2:
            raise ValueError(f"Invalid agent id: {agent_id}")
        return cls(items[0], items[1])

    @property
    def type(self) -> str:
        return self._type

    @property
    def key(self) -> str:
        return self._key

    def __hash__(self) -> int:
        return hash((self._type, self._key))

    def __eq__(self, value: object) -> bool:
        if not isinstance(value, AgentId):
            return False
        return self._type == value._type and self._key == value._key

    def __str__(self) -> str:
        return f"{self._type}/{self._key}"

    def __repr__(self) -> str:
        return f'AgentId(type="{self._type}", key="{self._key}")'

    def __reduce__(self) -> tuple[Any, ...]:
        return (AgentId, (self._type, self._key))


@dataclass(eq=True, frozen=True)
class TopicId:
    """The scope of a publish: a topic type (``^[\\w\\-\\.\\:\\=]+\\Z``) and a free-text source."""

    type: str
    source: str

    def __post_init__(self) -> None:
        if not is_valid_topic_type(self.type):
            raise ValueError(f"Invalid topic type: {self.type}. Must match the pattern: ^[\\w\\-\\.\\:\\=]+\\Z")

    def __str__(self) -> str:
        return f"{self.type}/{self.source}"

    @classmethod
    def from_str(cls, topic_id: str) -> TopicId:
        """Parse ``"type/source"``."""
        items = topic_id.split("/", maxsplit=1)
        if len(items) != 2:
            raise ValueError(f"Invalid topic id: {topic_id}")
        return cls(items[0], items[1])


class DefaultTopicId(TopicId):
    """A topic of type ``"default"`` unless given, whose source is the handling agent's key
    inside a message handler and ``"default"`` elsewhere."""

    def __init__(self, type: str = "default", source: str | None = None) -> None:
        if source is None:
            try:
                source = MessageHandlerContext.agent_id().key
            except RuntimeError:
                source = "default"
        super().__init__(type, source)
