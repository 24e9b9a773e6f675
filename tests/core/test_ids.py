"""Id validation (DESIGN §2): agent type ``^[\\w\\-\\.]+\\Z``, topic type ``^[\\w\\-\\.\\:\\=]+\\Z``, keys and
sources free; the same strings are accepted by mesh and autogen_core."""

# No ``from __future__ import annotations``: handlers are defined inside tests with annotations that
# name ``env.api`` objects, and AutoGen resolves them with get_type_hints().

import re
from dataclasses import dataclass

import autogen_core
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import mesh

AGENT_TYPE_RE = re.compile(r"^[\w\-\.]+\Z")
TOPIC_TYPE_RE = re.compile(r"^[\w\-\.\:\=]+\Z")

# Characters at the edges of both regexes, mixed with anything hypothesis comes up with.
EDGE_CHARS = [*"aZ09_-.:=/ \t\n\r\x00é中٣·", "\u200b", "\ufeff"]
id_strings = st.text(alphabet=st.sampled_from(EDGE_CHARS), max_size=8) | st.text(max_size=8)


@dataclass
class Echo:
    text: str


def _accepts(make: object, value: str) -> bool:
    try:
        make(value)  # type: ignore[operator]
    except ValueError:
        return False
    return True


@given(id_strings)
@example("a\n")
@example("")
@example("a.b-c_d")
@example("a:b")
def test_agent_type_validation_matches_regex_and_autogen(value: str) -> None:
    expected = AGENT_TYPE_RE.match(value) is not None
    assert _accepts(lambda v: mesh.AgentId(v, "key"), value) is expected
    assert _accepts(lambda v: autogen_core.AgentId(v, "key"), value) is expected


@given(id_strings)
@example("a\n")
@example("")
@example("t:x=y.z-w_1")
@example("a/b")
def test_topic_type_validation_matches_regex_and_autogen(value: str) -> None:
    expected = TOPIC_TYPE_RE.match(value) is not None
    assert _accepts(lambda v: mesh.TopicId(v, "source"), value) is expected
    assert _accepts(lambda v: autogen_core.TopicId(v, "source"), value) is expected


@given(st.text(), st.text())
def test_keys_and_sources_are_free(key: str, source: str) -> None:
    assert mesh.AgentId("t", key).key == autogen_core.AgentId("t", key).key == key
    assert mesh.TopicId("t", source).source == autogen_core.TopicId("t", source).source == source


@given(st.from_regex(AGENT_TYPE_RE, fullmatch=True), st.text())
def test_agent_id_str_round_trip(agent_type: str, key: str) -> None:
    ours = mesh.AgentId(agent_type, key)
    assert str(ours) == str(autogen_core.AgentId(agent_type, key))
    assert mesh.AgentId.from_str(str(ours)) == ours


async def test_api_ids_validate(env) -> None:
    api = env.api
    with pytest.raises(ValueError):
        api.AgentId("has space", "k")
    with pytest.raises(ValueError):
        api.AgentId("colon:type", "k")
    with pytest.raises(ValueError):
        api.TopicId("slash/type", "s")
    with pytest.raises(ValueError):
        api.TopicId("trailing\n", "s")
    assert api.AgentId("a.b-c_d", "any key / with: spaces\n").key == "any key / with: spaces\n"
    assert api.TopicId("t:x=y", "any source / \n").type == "t:x=y"


async def test_free_keys_and_sources_reach_the_agent(env) -> None:
    """Unusual but valid types, keys and sources travel through the runtime unchanged."""
    api = env.api
    seen = env.recorder()

    @api.type_subscription("t:x=y.z")
    class Agent(api.RoutedAgent):
        def __init__(self) -> None:
            super().__init__("records its key")

        @api.message_handler
        async def on_echo(self, message: Echo, ctx: api.MessageContext) -> str:
            seen.add((self.id.type, self.id.key, ctx.is_rpc))
            return self.id.key

    await Agent.register(env.host("a.b-c_d"), "a.b-c_d", Agent)
    await env.start()
    key = "key / with: spaces\n and é"
    assert await env.caller().send_message(Echo("x"), api.AgentId("a.b-c_d", key)) == key
    await env.caller().publish_message(Echo("y"), api.TopicId("t:x=y.z", "src/é \t"))
    items = await seen.wait_for(2)
    assert sorted(items, key=repr) == sorted([("a.b-c_d", key, True), ("a.b-c_d", "src/é \t", False)], key=repr)
