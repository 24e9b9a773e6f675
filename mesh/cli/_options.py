"""Options shared by the commands that run a node (``node``) or join a mesh briefly (``watch``,
``top``), each also read from an ``AGENTMESH_*`` environment variable shown in ``--help``."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from discovery import DiscoveryError, is_valid_endpoint, local_addresses_for

from .._config import MeshConfig
from .._errors import MeshError
from .._node import MeshNode

F = TypeVar("F", bound=Callable[..., Any])
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _split_seeds(ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> tuple[str, ...]:
    """Seeds from repeated ``--seed`` options, or ``AGENTMESH_SEEDS`` separated by commas or spaces."""
    seeds = tuple(part for item in value for part in item.replace(",", " ").split())
    for seed in seeds:
        if not is_valid_endpoint(seed):
            raise click.BadParameter(
                f"{seed!r} is not a ZeroMQ TCP endpoint such as tcp://10.0.0.5:7400 (tcp://HOST:PORT[#KEY])"
            )
    return seeds


def join_options(func: F) -> F:
    """The options that say which mesh to join and how."""
    options = [
        click.option("--mesh", default="default", show_default=True, envvar="AGENTMESH_MESH", show_envvar=True,
                     help="The mesh name: nodes of other meshes on the network are ignored."),
        click.option("--seed", "seeds", multiple=True, envvar="AGENTMESH_SEEDS", show_envvar=True,
                     callback=_split_seeds, metavar="ENDPOINT",
                     help="A node to join through, tcp://HOST:PORT[#KEY] (repeatable; in the variable, separated "
                          "by commas or spaces). Seeds and mDNS combine."),
        click.option("--discovery", type=click.Choice(["mdns", "none"]), default="mdns", show_default=True,
                     envvar="AGENTMESH_DISCOVERY", show_envvar=True,
                     help="mdns: find the mesh's nodes on the LAN; none: seeds only."),
        click.option("--host", default=None, envvar="AGENTMESH_HOST", show_envvar=True,
                     help="The address to bind: 0.0.0.0 for every IPv4 address, :: for IPv6 too [default: loopback "
                          "for node; for watch and top an address the mesh can reach back: towards the first seed, "
                          "else the first LAN address of the mDNS interfaces]."),
        click.option("--mdns-interface", "mdns_interfaces", multiple=True, metavar="NAME",
                     help="An interface (name or address) mDNS announces and browses on (repeatable; default: env "
                          "AGENTMESH_MDNS_INTERFACES, comma separated, else all)."),
        click.option("--secret-key-file", type=click.Path(dir_okay=False), default=None,
                     envvar="AGENTMESH_SECRET_KEY_FILE", show_envvar=True,
                     help="This node's CURVE secret key (from `agentmesh keygen`): turns on encryption and "
                          "authentication. Alone, the one key shared by the mesh."),
        click.option("--authorized-keys-dir", type=click.Path(file_okay=False), default=None,
                     envvar="AGENTMESH_AUTHORIZED_KEYS_DIR", show_envvar=True,
                     help="The public keys this node admits (per-node keys)."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


@dataclass(frozen=True)
class JoinOptions:
    mesh: str
    seeds: tuple[str, ...]
    discovery: str
    host: str | None
    mdns_interfaces: tuple[str, ...]
    secret_key_file: str | None
    authorized_keys_dir: str | None

    @classmethod
    def pop(cls, kwargs: dict[str, Any]) -> JoinOptions:
        """Take the join options out of a command's keyword arguments."""
        return cls(**{name: kwargs.pop(name) for name in cls.__dataclass_fields__})

    def node(self, *, host: str, **options: Any) -> MeshNode:
        """A node with these options.

        Raises:
            click.ClickException: the options do not make a node (e.g. a missing key file).
        """
        try:
            return MeshNode(
                mesh=self.mesh,
                host=host,
                seeds=self.seeds,
                discovery=self.discovery,
                mdns_interfaces=self.mdns_interfaces or None,
                secret_key_file=self.secret_key_file,
                authorized_keys_dir=self.authorized_keys_dir,
                **options,
            )
        except (ValueError, MeshError) as exc:
            raise click.ClickException(str(exc)) from exc

    def visitor(self, command: str, config: MeshConfig | None = None) -> MeshNode:
        """A temporary node that joins the mesh to look at it (``watch``, ``top``): it listens on an
        address the mesh can reach back, never a fixed port."""
        return self.node(
            host=self.host or self._reachable_host(),
            name=f"agentmesh-{command}-{socket.gethostname()}-{os.getpid()}",
            config=config,
        )

    def _reachable_host(self) -> str:
        """Raises:
        click.ClickException: the first seed cannot be resolved or reached, or an mDNS interface
            does not exist here."""
        if self.seeds:
            try:
                return _local_address_towards(self.seeds[0])
            except (OSError, ValueError) as exc:
                raise click.ClickException(
                    f"cannot reach the seed {self.seeds[0]}: {getattr(exc, 'strerror', None) or exc} "
                    "(or give --host, the address the mesh can reach this machine at)"
                ) from exc
        if self.discovery == "mdns":
            # The first LAN address of the interfaces mDNS uses; none (a machine, or a namespace,
            # with loopback only): the mesh can only be on this machine.
            try:
                addresses = local_addresses_for(self.mdns_interfaces or None, ipv6=False)
            except (DiscoveryError, OSError) as exc:
                raise click.ClickException(str(exc)) from exc
            lan = [a for a in addresses if not ipaddress.ip_address(a).is_loopback]
            return lan[0] if lan else "127.0.0.1"
        return "127.0.0.1"


def _local_address_towards(endpoint: str) -> str:
    """This machine's address that a node at ``endpoint`` can reach back (the kernel's choice of
    source address; connecting a UDP socket sends nothing)."""
    host = endpoint.removeprefix("tcp://").partition("#")[0].rpartition(":")[0].strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a host name
        address = ipaddress.ip_address(socket.getaddrinfo(host, None)[0][4][0])
    if address.is_loopback:
        return str(address)
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((str(address), 9))
        return str(probe.getsockname()[0])


async def start_or_explain(node: MeshNode, command: str) -> bool:
    """Start ``node``; on failure (the port is taken, the address is not this machine's, ...) say
    why on stderr, in one line, and return False."""
    try:
        await node.start()
    except Exception as exc:
        click.echo(f"agentmesh {command}: cannot start the node: {type(exc).__name__}: {exc}", err=True)
        return False
    return True


@contextlib.contextmanager
def quiet_visitor_logs() -> Iterator[None]:
    """While a temporary node looks at the mesh: it binds a LAN address without keys on purpose (it
    hosts nothing and leaves soon), and zeroconf logs every failed IPv6 send with a traceback where
    there is no IPv6 route; that would only be noise, unless the user chose a log level. The levels
    are put back afterwards (the commands may run inside a longer-lived process)."""
    ctx = click.get_current_context(silent=True)
    chosen = ctx is not None and ctx.find_root().params.get("log_level") is not None
    loggers = [] if chosen else [logging.getLogger(name) for name in ("mesh", "zeroconf")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def with_join_options(func: F) -> F:
    """``join_options``, and the command receives them as one ``JoinOptions`` (``join=``)."""

    @join_options
    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        join = JoinOptions.pop(kwargs)
        return func(join=join, **kwargs)

    return wrapper  # type: ignore[return-value]
