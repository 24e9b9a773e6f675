"""Peer discovery and membership: who is in the mesh, and who is alive.

This package never imports ``mesh``: a member's metadata is opaque bytes here.
"""

from ._config import MembershipConfig
from ._errors import DiscoveryError, RecordDecodeError

__all__ = ["DiscoveryError", "MembershipConfig", "RecordDecodeError"]
