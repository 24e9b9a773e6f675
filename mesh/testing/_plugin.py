"""The pytest plugin registered by the ``agentmesh-zmq`` distribution.

It must never break a user's pytest run: it imports nothing optional at load time.
"""

from __future__ import annotations
