"""TLS for the gRPC side: server credentials for host mode, channel credentials for the bridge, and
the check that keeps host mode from serving a CURVE-secured mesh to unauthenticated clients.

Host mode gives every connected worker a proxy node that holds the mesh's keys, so whoever can
open a channel to it can call and publish to the mesh's agents: on a secured mesh, a non-loopback
address must authenticate its clients (mutual TLS) unless the caller explicitly accepts the risk.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import SecurityConfigError

if TYPE_CHECKING:
    from .._node import MeshNode

logger = logging.getLogger("mesh.bridge")

FilePath = str | os.PathLike[str]

# Warnings already logged in this process (each kind once, as MeshNode's insecure-bind warning).
_warned: set[str] = set()


def _read(path: FilePath, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"cannot read the {what} {os.fspath(path)!r}: {exc}") from exc


@dataclass(frozen=True)
class ServerTls:
    """Host mode's certificate and key (PEM), and the CA whose client certificates it admits
    (mutual TLS); without ``client_ca_file`` any TLS client is admitted."""

    cert_file: FilePath
    key_file: FilePath
    client_ca_file: FilePath | None = None

    @classmethod
    def from_files(
        cls, cert_file: FilePath | None, key_file: FilePath | None, client_ca_file: FilePath | None
    ) -> ServerTls | None:
        """The TLS set-up the arguments name (None: plaintext), or ValueError on an incomplete one."""
        if cert_file is None and key_file is None:
            if client_ca_file is not None:
                raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file (the server's own)")
            return None
        if cert_file is None or key_file is None:
            raise ValueError("give both tls_cert_file and tls_key_file (PEM) to serve with TLS")
        return cls(cert_file, key_file, client_ca_file)

    @property
    def authenticates_clients(self) -> bool:
        return self.client_ca_file is not None

    def credentials(self, grpc: Any) -> Any:
        """``grpc.ServerCredentials`` from the files (read now).

        Raises:
            SecurityConfigError: a file cannot be read.
        """
        pair = (_read(self.key_file, "TLS private key"), _read(self.cert_file, "TLS certificate"))
        roots = _read(self.client_ca_file, "TLS client CA file") if self.client_ca_file is not None else None
        return grpc.ssl_server_credentials([pair], root_certificates=roots, require_client_auth=roots is not None)


@dataclass(frozen=True)
class ChannelTls:
    """How the bridge verifies a TLS host (``ca_file``; None: the system's roots) and, for mutual
    TLS, the client certificate and key it presents."""

    ca_file: FilePath | None = None
    cert_file: FilePath | None = None
    key_file: FilePath | None = None

    @classmethod
    def from_files(
        cls, tls: bool, ca_file: FilePath | None, cert_file: FilePath | None, key_file: FilePath | None
    ) -> ChannelTls | None:
        """The TLS set-up the arguments name (None: plaintext), or ValueError on an incomplete one."""
        if (cert_file is None) != (key_file is None):
            raise ValueError("give both tls_cert_file and tls_key_file (PEM) to present a client certificate")
        if not tls and ca_file is None and cert_file is None:
            return None
        return cls(ca_file, cert_file, key_file)

    def credentials(self, grpc: Any) -> Any:
        """``grpc.ChannelCredentials`` from the files (read now).

        Raises:
            SecurityConfigError: a file cannot be read.
        """
        roots = _read(self.ca_file, "TLS CA file") if self.ca_file is not None else None
        key = _read(self.key_file, "TLS private key") if self.key_file is not None else None
        chain = _read(self.cert_file, "TLS certificate") if self.cert_file is not None else None
        return grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=chain)


def _warn_once(kind: str, message: str, *args: object) -> None:
    if kind not in _warned:
        _warned.add(kind)
        logger.warning(message, *args)


def check_exposure(node: MeshNode, address: str, tls: ServerTls | None, allow_insecure: bool) -> None:
    """Refuse (secured node) or warn once about (open node) host mode serving ``address`` to clients
    it does not authenticate. Loopback addresses are left alone.

    Raises:
        SecurityConfigError: ``node`` is secured with CURVE, ``address`` is not loopback, clients
            are not authenticated by mutual TLS, and ``allow_insecure`` is false.
    """
    from .._node import _is_loopback

    host = address.rpartition(":")[0]
    if _is_loopback(host) or (tls is not None and tls.authenticates_clients):
        return
    how = "in plaintext" if tls is None else "with TLS but without client certificates"
    if node.public_key is not None:
        if not allow_insecure:
            fix = (
                "give tls_client_ca_file (mutual TLS: only workers with a certificate from that CA connect)"
                if tls is not None
                else "give tls_cert_file, tls_key_file and tls_client_ca_file (mutual TLS)"
            )
            raise SecurityConfigError(
                f"node {node.name} is secured with CURVE, but host mode would serve {address} {how}: anyone who "
                f"can reach it could connect a worker and call the mesh's agents with the mesh's keys. {fix}, "
                "or bind 127.0.0.1, or pass allow_insecure=True (--allow-insecure) to accept this"
            )
        _warn_once(
            "secured",
            "host mode serves %s %s for CURVE-secured node %s (allow_insecure): anyone who can reach it can "
            "connect a worker and call and publish to the mesh's agents",
            address,
            how,
            node.name,
        )
        return
    _warn_once(
        "open",
        "host mode serves %s %s: anyone who can reach it can connect a worker and call and publish to the "
        "mesh's agents; give TLS credentials with a client CA (see the README, Security)",
        address,
        how,
    )
