"""CURVE encryption and authentication of a node's connections, with pyzmq's own machinery.

Two models:

- **one shared mesh key**: every node uses the same key pair (one ``secret_key_file``); a peer is
  admitted when it proves it holds that key. Simple to deploy; rotating means replacing the file
  on every node.
- **per-node keys**: each node has its own key pair and an allowlist directory
  (``authorized_keys_dir``) of the public keys it admits. A node is added or removed by adding or
  removing its public key file on the others (then ``reload_authorized_keys()``).

Certificates are the files ``python -m zmq.curve_keygen`` / ``zmq.auth.create_certificates`` /
``agentmesh keygen`` write. With security on, a node runs its own ZeroMQ context with a ZAP
authenticator: every connection in or out is encrypted, a client whose key is not allowed cannot
complete its handshake (so it can neither join, gossip, publish nor call), and an unencrypted peer
fails the handshake too (no downgrade). Outgoing connections verify the server: with per-node keys
an endpoint must name its server key (``tcp://host:port#<z85 key>``) and that key must be allowed,
so a spoofed announcement cannot make this node send data to an unauthenticated endpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator

from ._errors import SecurityConfigError

logger = logging.getLogger("mesh")

ENV_SECRET_KEY_FILE = "AGENTMESH_SECRET_KEY_FILE"
ENV_AUTHORIZED_KEYS_DIR = "AGENTMESH_AUTHORIZED_KEYS_DIR"
MAX_SOCKETS = 16_384
ZAP_DOMAIN = "agentmesh"


def split_endpoint(endpoint: str) -> tuple[str, str | None]:
    """``tcp://host:port#key`` -> (``tcp://host:port``, ``key``)."""
    address, _, key = endpoint.partition("#")
    return address, key or None


def generate_keys(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Write ``<name>.key`` (public) and ``<name>.key_secret`` (secret, mode 600) into ``directory``,
    replacing files of those names; a missing ``directory`` is created with mode 700.

    The files are in the format of ``zmq.auth.create_certificates`` (read by
    ``zmq.auth.load_certificate``), but the secret one is created with its final mode: it never
    exists, not even for an instant, readable by others.
    """
    folder = Path(directory)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # an existing directory keeps its mode
    public, secret = zmq.curve_keypair()
    public_file, secret_file = folder / f"{name}.key", folder / f"{name}.key_secret"
    _write_certificate(public_file, _certificate(public, None), 0o644)
    _write_certificate(secret_file, _certificate(public, secret), 0o600)
    return public_file, secret_file


def _certificate(public: bytes, secret: bytes | None) -> str:
    lines = [
        f"#   ZeroMQ CURVE {'Secret' if secret else 'Public'} Certificate (written by agentmesh)",
        "#   Keep this file private: it holds the secret key." if secret else "#   The node's public key.",
        "",
        "metadata",
        "curve",
        f'    public-key = "{public.decode()}"',
    ]
    if secret:
        lines.append(f'    secret-key = "{secret.decode()}"')
    return "\n".join(lines) + "\n"


def _write_certificate(path: Path, text: str, mode: int) -> None:
    """Write a new file created with ``mode`` (less what the umask removes), then rename it over
    ``path``: no chmod afterwards, so no window in which it has broader permissions."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        with open(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class CurveSecurity:
    """The keys, the allowlist and the ZAP authenticator of one secured node."""

    def __init__(self, secret_key_file: str | os.PathLike[str], authorized_keys_dir: str | os.PathLike[str] | None):
        path = Path(secret_key_file)
        if not path.is_file():
            raise SecurityConfigError(
                f"secret key file {path} does not exist: create one with `agentmesh keygen DIR NAME` "
                "(or python -m zmq.curve_keygen)"
            )
        try:
            public, secret = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as exc:
            raise SecurityConfigError(f"cannot read the secret key file {path}: {exc}") from exc
        if not secret:
            raise SecurityConfigError(
                f"{path} holds only a public key; give the node its secret key file (NAME.key_secret)"
            )
        self.public_key: bytes = public
        self.secret_key: bytes = secret
        self._keys_dir = Path(authorized_keys_dir) if authorized_keys_dir is not None else None
        if self._keys_dir is not None and not self._keys_dir.is_dir():
            raise SecurityConfigError(f"authorized keys directory {self._keys_dir} does not exist")
        self.allowed: set[bytes] = set()
        self.reload()
        self._context: zmq.Context[Any] | None = None
        self._authenticator: AsyncioAuthenticator | None = None

    @classmethod
    def from_options(
        cls, secret_key_file: str | os.PathLike[str] | None, authorized_keys_dir: str | os.PathLike[str] | None
    ) -> CurveSecurity | None:
        """From the node's arguments, else from ``AGENTMESH_SECRET_KEY_FILE`` and
        ``AGENTMESH_AUTHORIZED_KEYS_DIR``; None when no secret key is configured."""
        secret = secret_key_file or os.environ.get(ENV_SECRET_KEY_FILE) or None
        keys_dir = authorized_keys_dir or os.environ.get(ENV_AUTHORIZED_KEYS_DIR) or None
        if secret is None:
            if keys_dir is not None:
                raise SecurityConfigError(
                    "authorized_keys_dir is set but no secret key file: give the node its own secret key too"
                )
            return None
        return cls(secret, keys_dir)

    @property
    def model(self) -> str:
        return "per-node" if self._keys_dir is not None else "shared"

    def reload(self) -> None:
        """Read the allowlist again (after adding or removing public key files)."""
        allowed = {self.public_key}
        if self._keys_dir is not None:
            for path in sorted(self._keys_dir.iterdir()):
                if not path.is_file() or path.name.endswith("_secret"):
                    continue
                try:
                    public, _ = zmq.auth.load_certificate(path)
                except (OSError, ValueError) as exc:
                    logger.warning("ignoring %s in the authorized keys directory: %s", path, exc)
                    continue
                allowed.add(public)
        self.allowed = allowed

    # -- the credentials provider interface of pyzmq's authenticator -----------------------------------

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.allowed:
            return True
        logger.warning("refused a connection from a client whose key %s is not allowed", key.decode(errors="replace"))
        return False

    # -- sockets ----------------------------------------------------------------------------------

    @property
    def context(self) -> zmq.Context[Any]:
        """This node's own ZeroMQ context (ZAP handlers are per context)."""
        if self._context is None or self._context.closed:
            ctx: zmq.Context[Any] = zmq.Context()
            ctx.set(zmq.MAX_SOCKETS, MAX_SOCKETS)  # a context option, before the first socket
            self._context = ctx
        return self._context

    def start(self) -> None:
        """Start the ZAP authenticator (on the running event loop)."""
        if self._authenticator is None:
            authenticator = AsyncioAuthenticator(self.context)
            authenticator.start()
            authenticator.configure_curve_callback(ZAP_DOMAIN, credentials_provider=self)
            self._authenticator = authenticator

    def stop(self) -> None:
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        if self._context is not None:
            self._context.destroy(linger=0)
            self._context = None

    def allows_client(self, user_id: str) -> bool:
        """Whether a connection's ZAP User-Id (the z85 key it authenticated with) is still allowed."""
        return user_id.encode("ascii", "replace") in self.allowed

    def allows_endpoint(self, endpoint: str) -> bool:
        """Whether the key an endpoint names (per-node keys) is still allowed."""
        try:
            self.server_key_for(endpoint)
        except SecurityConfigError:
            return False
        return True

    def server_key_for(self, endpoint: str) -> bytes:
        """The key the server at ``endpoint`` must prove it holds.

        Raises:
            SecurityConfigError: the endpoint names no key (per-node model) or a key not allowed.
        """
        _, key = split_endpoint(endpoint)
        if key is None:
            if self._keys_dir is None:
                return self.public_key  # one shared mesh key: every server holds it
            raise SecurityConfigError(
                f"endpoint {endpoint} names no server key: with per-node keys write it as "
                "tcp://host:port#<the node's z85 public key>"
            )
        server_key = key.encode()
        if server_key not in self.allowed:
            raise SecurityConfigError(f"endpoint {endpoint} names a server key that is not in the allowlist")
        return server_key

    def setup_socket(self, sock: zmq.Socket[Any], server: bool, endpoint: str | None = None) -> None:
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public_key)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret_key)
        if server:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
        else:
            assert endpoint is not None
            sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_key_for(endpoint))
