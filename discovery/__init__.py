"""Peer discovery and membership: who is in the mesh, and who is alive.

This package never imports ``mesh``: a member's metadata is opaque bytes here.
"""

from ._channel import GossipChannel
from ._config import MembershipConfig
from ._errors import DiscoveryError, RecordDecodeError
from ._mdns import SERVICE_TYPE, Announcement, MdnsDiscovery, browse, local_addresses_for
from ._membership import Membership
from ._record import MemberRecord, MemberStatus, is_valid_endpoint, is_valid_node_id
from ._swim import Event as MembershipEvent

__all__ = [
    "SERVICE_TYPE",
    "Announcement",
    "DiscoveryError",
    "GossipChannel",
    "MdnsDiscovery",
    "MemberRecord",
    "MemberStatus",
    "Membership",
    "MembershipConfig",
    "MembershipEvent",
    "RecordDecodeError",
    "browse",
    "is_valid_endpoint",
    "is_valid_node_id",
    "local_addresses_for",
]
