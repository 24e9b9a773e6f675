"""MeshConfig: every size, bound and timing of a node in one place, so tests can tighten them."""

from __future__ import annotations

from dataclasses import dataclass, field

from discovery import MembershipConfig

MIB = 1024 * 1024


@dataclass(frozen=True)
class MeshConfig:
    """Sizes, bounds and timings of a node. Defaults suit a LAN; tests pass faster timings."""

    # Handlers running at once on a node. Beyond it the node stops starting handlers and stops
    # reading data from peers, so memory stays bounded; high, because handlers that await are cheap.
    max_running_handlers: int = 10_000
    # Items waiting for a worker before publishers outside handlers are made to wait.
    max_queued: int = 10_000
    # Largest encoded message accepted or sent; larger frames are refused before allocation.
    max_message_size: int = 4 * MIB
    # Per-peer flow-control window: data messages and bytes in flight before a sender waits.
    window_messages: int = 1_000
    window_bytes: int = 16 * MIB
    # How long a sender out of credit waits before SendTimeoutError; None waits for as long as
    # the peer is alive (failure detection still ends the wait when it dies).
    send_timeout_s: float | None = None
    # Default bound on send_message; None means no limit (a live handler may run long).
    rpc_timeout_s: float | None = None
    # How long stop() lets queued and running handlers finish before cancelling them.
    stop_timeout_s: float = 5.0
    # start() waits at most this long for the first full state sync with a seed.
    join_timeout_s: float = 5.0
    # How long register()/add_subscription() wait for peers to acknowledge a change; a slow peer
    # is repaired by gossip afterwards.
    visibility_timeout_s: float = 3.0
    # After a node starts hosting an agent type (it starts, registers the type, or rejoins), how
    # long a message for an agent of that type that is not live on it may wait for the other nodes
    # hosting the type to say they handed over every agent it now owns, before it is created afresh.
    settle_timeout_s: float = 5.0
    # Bad frames from peers: at most one warning per interval, the rest only counted.
    bad_frame_log_interval_s: float = 10.0
    membership: MembershipConfig = field(default_factory=MembershipConfig)
