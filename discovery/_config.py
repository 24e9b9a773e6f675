"""MembershipConfig: the timings of failure detection and gossip."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MembershipConfig:
    """Timings of membership. Defaults: a killed peer is declared dead within about 2.5 s on a
    LAN, and a peer whose event loop stalls for 500 ms is suspected at most, never declared dead.
    """

    # One direct probe per interval to one peer (round robin in random order), so probe traffic
    # per node does not grow with the mesh.
    probe_interval_s: float = 0.5
    # A probe not acknowledged within this is followed by indirect probes through other peers.
    probe_timeout_s: float = 0.25
    # Peers asked to probe indirectly after a direct probe times out.
    indirect_probes: int = 3
    # A suspect that does not refute within this is declared dead. Well above a 500 ms stall
    # plus a probe round, and shortened (Lifeguard) as independent suspicions arrive.
    suspicion_timeout_s: float = 1.5
    suspicion_min_s: float = 1.0
    # Lifeguard local health: a node that misses its own deadlines scales its timeouts by up to
    # (1 + max_local_health) instead of blaming its peers.
    max_local_health: int = 8
    # Anti-entropy: how often a node compares a hash of its version vector with a random peer.
    gossip_interval_s: float = 1.0
    # How often a node knocks on the door of one member it holds dead, or of a seed that is not a
    # member: after a partition heals, this is how the two sides find each other again.
    reconnect_interval_s: float = 2.0
    # A dead member's record is kept (so late gossip cannot resurrect it) for this long.
    dead_retention_s: float = 60.0
    # At most one warning per interval about membership input or actions that failed (the rest are
    # counted): a peer must not be able to flood the log.
    error_log_interval_s: float = 10.0
