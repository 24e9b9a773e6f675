"""Dataclass bodies keep their exact values across the wire, whichever JSON encoder wrote them
(orjson on the fast path, the json module where orjson would change a value)."""

from __future__ import annotations

import dataclasses
import json
import math
import tracemalloc

import autogen_core
import pytest

from mesh._serialization import SerializerRegistry


@dataclasses.dataclass
class Exact:
    name: str
    count: int
    flag: bool
    tags: list[str]


@dataclasses.dataclass
class Measured:
    value: float
    counts: dict[str, int]


def round_trip(message: object) -> tuple[object, bytes]:
    sender, receiver = SerializerRegistry(), SerializerRegistry()
    type_name, content_type, payload = sender.encode(message)
    receiver.learn_type(type(message))
    return receiver.decode(type_name, content_type, payload), payload


@pytest.mark.parametrize(
    "message",
    [
        Measured(math.inf, {}),
        Measured(-math.inf, {}),
        Measured(1.5, {"big": 2**70, "small": -(2**64) - 1}),
        Exact("big", 2**64 + 1, True, []),
        Exact("\ud800 lone surrogate", 1, False, ["\udfff"]),
        Exact("digits in a string 12345678901234567890", 3, False, []),
    ],
    ids=["inf", "-inf", "big-ints-in-a-dict", "big-int-field", "surrogates", "long-digits-in-text"],
)
def test_values_survive_exactly(message: object) -> None:
    decoded, payload = round_trip(message)
    assert decoded == message
    assert type(decoded) is type(message)
    # And AutoGen's own deserializer reads what we wrote.
    theirs = autogen_core.try_get_known_serializers_for_type(type(message))[0]
    assert theirs.deserialize(payload) == message


def test_nan_survives() -> None:
    decoded, _ = round_trip(Measured(math.nan, {}))
    assert isinstance(decoded, Measured) and math.isnan(decoded.value)


def test_we_read_what_autogen_writes_nan_literals_included() -> None:
    theirs = autogen_core.try_get_known_serializers_for_type(Measured)[0]
    payload = theirs.serialize(Measured(math.nan, {"n": 2**65}))
    receiver = SerializerRegistry()
    receiver.learn_type(Measured)
    decoded = receiver.decode("Measured", "application/json", payload)
    assert math.isnan(decoded.value) and decoded.counts == {"n": 2**65}
    assert json.loads(payload)["counts"] == {"n": 2**65}


@dataclasses.dataclass
class Padded:
    seq: int
    pad: str


@pytest.mark.parametrize("size", [80, 8192, 100_000])
def test_an_encoded_body_holds_about_its_own_size(size: int) -> None:
    """Encoded bodies stay in memory while in flight: they must not keep an encoder's growth
    buffer (one JSON library keeps 4 KiB for a 100-byte message, 128 KiB for 8 KiB)."""
    registry = SerializerRegistry()
    message = Padded(1, "x" * size)
    tracemalloc.start()
    try:
        bodies = [registry.encode(message)[2] for _ in range(50)]
        held = tracemalloc.get_traced_memory()[0] / len(bodies)
    finally:
        tracemalloc.stop()
    assert held < 2 * size + 512, held
