"""Discovery's own errors."""

from __future__ import annotations


class DiscoveryError(Exception):
    """Root of discovery's errors."""


class RecordDecodeError(DiscoveryError, ValueError):
    """A membership message from a peer is malformed."""
