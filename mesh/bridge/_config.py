"""BridgeConfig: every bound and timing of the gRPC bridge and of host mode, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from discovery import is_valid_endpoint

MIB = 1024 * 1024


@dataclass(frozen=True)
class BridgeConfig:
    """Bounds and timings of the bridge. Defaults suit a LAN; tests pass faster ones."""

    # Bound on every RPC that crosses the bridge, in both directions. The stock host silently
    # drops a request for a type nobody registered, and an AutoGen worker never answers when its
    # handler returns None, so without a bound such a caller would wait forever.
    rpc_timeout_s: float = 30.0
    # Bound on each unary control call to the host (RegisterAgent, AddSubscription, ...). A call
    # that fails for lack of an answer counts as a lost connection.
    call_timeout_s: float = 5.0
    # Bound on one attempt to open the channel to the host.
    connect_timeout_s: float = 5.0
    # How often the host's subscriptions are polled (to learn the standard side's agent types)
    # and registrations the host refused are retried. The mesh side is pushed, not polled.
    poll_interval_s: float = 1.0
    # Reconnection back-off after the host went away: doubles from initial up to max, +-20%.
    reconnect_initial_s: float = 0.1
    reconnect_max_s: float = 2.0
    # How often the election is checked again when no view change signals it (a stopped node).
    supervise_interval_s: float = 0.5
    # Largest gRPC message sent or accepted (the mesh's own limit applies inside the mesh).
    max_message_size: int = 4 * MIB
    # Publishes remembered to forward each one once although several proxies receive it.
    dedup_window: int = 4096
    # Events from the host queued for injection into the mesh before the reader waits.
    max_queued_events: int = 1024


def check_host_address(address: str) -> str:
    """``address`` if it is an AutoGen host's gRPC address, ``HOST:PORT`` (``[v6]:PORT`` too): the
    members' endpoint rule, without ``tcp://`` and key.

    Raises:
        ValueError: it names no host or no port 1-65535 (a URL, a bare host name, port 0...).
    """
    if "#" in address or not is_valid_endpoint(f"tcp://{address}"):
        raise ValueError(f"the AutoGen host address must be HOST:PORT with a port 1-65535, not {address!r}")
    return address
