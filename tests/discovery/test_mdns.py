"""The mDNS module's pure parts (DESIGN §4): what a node announces, what it accepts from others, and
which addresses and IP versions it uses. Nothing here opens a socket: the LAN behaviour itself is
tested across network namespaces (tests/lan/).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo

from discovery import SERVICE_TYPE, Announcement, DiscoveryError, MdnsDiscovery
from discovery._mdns import MAX_TXT_BYTES, _ip_version_for, announcement_from, interfaces_from, parse_txt

# Each TXT string holds at most 255 bytes: reach the record's limit with several.
PADDING = {f"p{i}": "x" * 250 for i in range(MAX_TXT_BYTES // 250 + 1)}


def discovery_for(bound_host: str, interfaces: list[str]) -> MdnsDiscovery:
    return MdnsDiscovery(
        node_id="n1", mesh="m", protocol=(1, 0), port=7400, on_peer=lambda e: None,
        interfaces=interfaces, bound_host=bound_host,
    )  # fmt: skip


def service(properties: dict[str, str], addresses: list[str], port: int = 7400) -> AsyncServiceInfo:
    return AsyncServiceInfo(
        SERVICE_TYPE, f"x.{SERVICE_TYPE}", port=port, properties=properties, parsed_addresses=addresses
    )


def test_the_txt_record_holds_only_what_a_peer_needs_to_connect() -> None:
    announcement = Announcement("n1", "m", (1, 2), 7400, ("10.0.0.5",), public_key="K" * 40)
    assert announcement.txt() == {"id": "n1", "mesh": "m", "v": "1.2", "k": "K" * 40}
    assert announcement.endpoints() == ["tcp://10.0.0.5:7400#" + "K" * 40]
    assert Announcement("n1", "m", (1, 0), 7400, ("fd77::1",)).endpoints() == ["tcp://[fd77::1]:7400"]


def test_a_resolved_service_becomes_an_announcement() -> None:
    found = announcement_from(service({"id": "n2", "mesh": "m", "v": "1.3"}, ["10.77.0.2", "fd77::2"]))
    assert found == Announcement("n2", "m", (1, 3), 7400, ("10.77.0.2", "fd77::2"))


@pytest.mark.parametrize(
    ("properties", "error"),
    [
        ({"mesh": "m", "v": "1.0"}, "valid node id"),
        ({"id": "bad id!", "mesh": "m", "v": "1.0"}, "valid node id"),
        ({"id": "n", "mesh": "m", "v": "one"}, "invalid protocol version"),
        ({"id": "n", "mesh": "m", "v": "1.0", **PADDING}, "too large"),
    ],
)
def test_malformed_announcements_are_refused(properties: dict[str, str], error: str) -> None:
    with pytest.raises(DiscoveryError, match=error):
        announcement_from(service(properties, ["10.77.0.2"]))


@given(st.dictionaries(st.binary(max_size=40), st.none() | st.binary(max_size=400), max_size=8))
def test_any_txt_bytes_parse_or_raise_discovery_error(properties: dict[bytes, bytes | None]) -> None:
    try:
        parse_txt(properties)
    except DiscoveryError:
        pass


@pytest.mark.parametrize(
    ("host", "version"),
    [
        ("0.0.0.0", IPVersion.V4Only),  # the transport binds it IPv4 only
        ("*", IPVersion.V4Only),
        ("::", IPVersion.All),  # dual-stack
        ("10.77.0.1", IPVersion.V4Only),
        ("fd77::1", IPVersion.V6Only),
        ("127.0.0.1", IPVersion.V4Only),
    ],
)
def test_the_ip_version_follows_what_the_node_is_reachable_on(host: str, version: IPVersion) -> None:
    assert _ip_version_for(host) is version


def test_a_node_bound_to_all_addresses_does_not_announce_loopback() -> None:
    # A peer on another machine that connects to 127.0.0.1 reaches itself, not us.
    assert discovery_for("0.0.0.0", ["127.0.0.1", "10.77.0.1"]).announcement.addresses == ("10.77.0.1",)
    assert discovery_for("0.0.0.0", ["127.0.0.1"]).announcement.addresses == ("127.0.0.1",)  # one-machine mesh


def test_a_node_bound_to_one_address_announces_that_address_only() -> None:
    assert discovery_for("10.77.0.1", ["10.77.0.1", "10.0.0.9"]).announcement.addresses == ("10.77.0.1",)
    assert discovery_for("127.0.0.1", ["10.77.0.1"]).announcement.addresses == ("127.0.0.1",)


def test_mdns_interfaces_come_from_the_environment_and_unknown_names_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTMESH_MDNS_INTERFACES", " 10.77.0.1 , fd77::1 ")
    assert interfaces_from(None) == ["10.77.0.1", "fd77::1"]
    assert interfaces_from(["10.0.0.9"]) == ["10.0.0.9"]  # the argument wins over the environment
    with pytest.raises(DiscoveryError, match="mDNS interface 'no-such-interface0' does not exist here"):
        interfaces_from(["no-such-interface0"])
