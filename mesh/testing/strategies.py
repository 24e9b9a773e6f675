"""Hypothesis strategies for routing tests: valid agent types, keys, topics, subscriptions, and
messages of your own dataclasses.

Importing this module imports hypothesis (install the ``testing`` extra); ``mesh.testing`` itself
does not. Every strategy draws only values the runtime accepts (agent types match
``^[\\w\\-\\.]+\\Z``, topic types ``^[\\w\\-\\.\\:\\=]+\\Z``; keys and sources are free text), and
shrinks towards short ASCII names.

Example::

    from hypothesis import given, strategies as st
    from mesh.testing import strategies as mst

    @given(mst.agent_ids(types=st.sampled_from(["shop", "audit"])), mst.messages(Order))
    def test_...(agent_id, order): ...
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any, TypeVar

from hypothesis import strategies as st

from .._ids import AgentId, TopicId
from .._subscriptions import TypePrefixSubscription, TypeSubscription

__all__ = [
    "agent_ids",
    "agent_keys",
    "agent_types",
    "messages",
    "subscriptions",
    "topic_ids",
    "topic_sources",
    "topic_types",
]

T = TypeVar("T")

_AGENT_TYPE_CHAR = re.compile(r"[\w\-\.]")
_TOPIC_TYPE_CHAR = re.compile(r"[\w\-\.\:\=]")


def _name_text(char: re.Pattern[str], extra: str, max_size: int) -> st.SearchStrategy[str]:
    if max_size < 1:
        raise ValueError(f"max_size must be at least 1, not {max_size}")
    # Letters and digits of every script (what Python's \w matches beyond "_"), plus the
    # punctuation the pattern allows; the filter removes the few characters \w does not match.
    alphabet = st.characters(categories=("L", "N"), include_characters="_" + extra).filter(
        lambda c: char.fullmatch(c) is not None
    )
    return st.text(alphabet, min_size=1, max_size=max_size)


def agent_types(*, max_size: int = 20) -> st.SearchStrategy[str]:
    """Valid agent type names (``^[\\w\\-\\.]+\\Z``; Unicode letters and digits included)."""
    return _name_text(_AGENT_TYPE_CHAR, "-.", max_size)


def topic_types(*, max_size: int = 20) -> st.SearchStrategy[str]:
    """Valid topic types (``^[\\w\\-\\.\\:\\=]+\\Z``), also usable as subscription prefixes."""
    return _name_text(_TOPIC_TYPE_CHAR, "-.:=", max_size)


_any_agent_type = agent_types
_any_topic_type = topic_types


def agent_keys(*, max_size: int = 20) -> st.SearchStrategy[str]:
    """Agent keys: any text, the empty string included."""
    return st.text(max_size=max_size)


def topic_sources(*, max_size: int = 20) -> st.SearchStrategy[str]:
    """Topic sources: any text, the empty string included (a source becomes the recipient's key)."""
    return st.text(max_size=max_size)


def agent_ids(
    types: st.SearchStrategy[str] | None = None, keys: st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[AgentId]:
    """AgentIds; pass ``types=st.sampled_from([...])`` to address your own agent types."""
    return st.builds(AgentId, types if types is not None else agent_types(), keys if keys is not None else agent_keys())


def topic_ids(
    types: st.SearchStrategy[str] | None = None, sources: st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[TopicId]:
    """TopicIds; pass ``types=st.sampled_from([...])`` for your own topic types."""
    return st.builds(
        TopicId, types if types is not None else topic_types(), sources if sources is not None else topic_sources()
    )


def subscriptions(
    agent_types: st.SearchStrategy[str] | None = None,
    topic_types: st.SearchStrategy[str] | None = None,
    *,
    kinds: tuple[str, ...] = ("type", "prefix"),
) -> st.SearchStrategy[TypeSubscription | TypePrefixSubscription]:
    """``TypeSubscription`` and ``TypePrefixSubscription`` objects (the kinds shared mesh-wide)
    with ids drawn by hypothesis, so a failing example replays exactly. ``kinds`` picks
    ``"type"``, ``"prefix"`` or both. Mirror one in the model with ``ModelSubscription.of(sub)``."""
    if not kinds or set(kinds) - {"type", "prefix"}:
        raise ValueError(f"kinds must be a non-empty subset of ('type', 'prefix'), not {kinds!r}")
    agents = agent_types if agent_types is not None else _any_agent_type()
    topics = topic_types if topic_types is not None else _any_topic_type()
    ids = st.uuids().map(str)
    options: list[st.SearchStrategy[TypeSubscription | TypePrefixSubscription]] = []
    if "type" in kinds:
        options.append(st.builds(TypeSubscription, topics, agents, ids))
    if "prefix" in kinds:
        options.append(st.builds(TypePrefixSubscription, topics, agents, ids))
    return st.one_of(options)


def messages(cls: type[T], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[T]:
    """Instances of the message class ``cls`` (a dataclass, or anything ``st.builds`` can build).

    Every field of a dataclass is drawn, those with defaults too: from ``fields`` when given,
    else with ``st.from_type`` of its annotation, except that ``float`` fields draw only finite
    numbers (NaN is not equal to itself, so a NaN message never compares equal after delivery)
    and dataclass fields are drawn with :func:`messages` too. Give a strategy for fields whose
    values your agents bound (``quantity=st.integers(1, 1000)``) or that hold floats in
    containers. (Dataclasses cross nodes as AutoGen's JSON, in which a plain ``tuple`` field
    arrives as a list.)
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        return st.builds(cls, **fields)
    hints = typing.get_type_hints(cls)
    drawn: dict[str, st.SearchStrategy[Any]] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in fields:
            drawn[f.name] = fields[f.name]
        elif hints.get(f.name) is float:
            drawn[f.name] = st.floats(allow_nan=False, allow_infinity=False)
        elif isinstance(hints.get(f.name), type) and dataclasses.is_dataclass(hints[f.name]):
            drawn[f.name] = messages(hints[f.name])
        else:
            drawn[f.name] = st.from_type(hints.get(f.name, object))
    unknown = set(fields) - set(drawn)
    if unknown:
        raise TypeError(f"{cls.__name__} has no init fields named {sorted(unknown)}")
    return st.builds(cls, **drawn)
