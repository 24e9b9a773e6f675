"""Finding peers on the LAN with mDNS (python-zeroconf), with no configuration.

Each node announces ``<node id>._agentmesh._tcp.local.`` with a TXT record holding only what a
peer needs to connect -- node id, mesh name, protocol version, and the CURVE public key when
security is on -- never routing state. Browsing nodes hand every endpoint of their own mesh and
protocol major version to membership, which joins through it exactly as through a seed. mDNS
only finds peers: a crashed node's records can linger for a long time, so liveness stays with
the failure detector, and with security on an announced key is only a hint (the node never
connects to a key it does not trust).

Registration skips RFC 6762 probing (``cooperating_responders``): probing exists to resolve two
hosts claiming one name, and our instance names carry the node id, unique by construction, so it
would only add about a second before others see the node (measured here: ~1.2 s with probing,
~0.15 s without).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ifaddr
from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from ._errors import DiscoveryError
from ._record import is_valid_node_id

logger = logging.getLogger("discovery")

SERVICE_TYPE = "_agentmesh._tcp.local."
ENV_INTERFACES = "AGENTMESH_MDNS_INTERFACES"
RESOLVE_TIMEOUT_MS = 3_000  # how long a browser waits for a discovered service's details
MAX_TXT_BYTES = 1_300


@dataclass(frozen=True)
class Announcement:
    """What one node announces."""

    node_id: str
    mesh: str
    protocol: tuple[int, int]
    port: int
    addresses: tuple[str, ...]
    public_key: str | None = None

    def txt(self) -> dict[str, str]:
        props = {"id": self.node_id, "mesh": self.mesh, "v": f"{self.protocol[0]}.{self.protocol[1]}"}
        if self.public_key:
            props["k"] = self.public_key
        return props

    def endpoints(self) -> list[str]:
        suffix = f"#{self.public_key}" if self.public_key else ""
        return [_endpoint(a, self.port) + suffix for a in self.addresses]


def _endpoint(address: str, port: int) -> str:
    return f"tcp://[{address}]:{port}" if ":" in address else f"tcp://{address}:{port}"


def parse_txt(properties: dict[bytes, bytes | None]) -> dict[str, str]:
    """TXT properties as text; raises DiscoveryError on anything that is not a small text record."""
    if sum(len(k) + len(v or b"") for k, v in properties.items()) > MAX_TXT_BYTES:
        raise DiscoveryError("TXT record too large")
    out: dict[str, str] = {}
    for key, value in properties.items():
        try:
            out[key.decode()] = (value or b"").decode()
        except UnicodeDecodeError as exc:
            raise DiscoveryError("TXT record is not UTF-8") from exc
    return out


def announcement_from(info: AsyncServiceInfo) -> Announcement:
    """The announcement a resolved service carries; raises DiscoveryError when malformed."""
    props = parse_txt(info.properties)
    node_id, mesh, version = props.get("id", ""), props.get("mesh", ""), props.get("v", "")
    if not is_valid_node_id(node_id):
        raise DiscoveryError("announcement without a valid node id")
    try:
        major, minor = (int(p) for p in version.split(".", 1))
    except ValueError as exc:
        raise DiscoveryError(f"announcement with an invalid protocol version {version!r}") from exc
    if info.port is None or not 0 < info.port < 65_536:
        raise DiscoveryError("announcement without a valid port")
    addresses = tuple(str(a) for a in info.ip_addresses_by_version(IPVersion.All))
    key = props.get("k") or None
    return Announcement(node_id, mesh, (major, minor), info.port, addresses, key)


def interfaces_from(spec: Sequence[str] | None) -> list[str] | InterfaceChoice:
    """The addresses mDNS should use: from ``spec`` (interface names or addresses), else from the
    ``AGENTMESH_MDNS_INTERFACES`` environment variable (comma separated), else all interfaces."""
    if spec is None:
        env = os.environ.get(ENV_INTERFACES, "").strip()
        spec = [s.strip() for s in env.split(",") if s.strip()] or None
    if not spec:
        return InterfaceChoice.All
    by_name: dict[str, list[str]] = {}
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            address = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            by_name.setdefault(adapter.nice_name, []).append(address)
    addresses: list[str] = []
    for item in spec:
        try:
            ipaddress.ip_address(item)
            addresses.append(item)
        except ValueError:
            if item not in by_name:
                raise DiscoveryError(
                    f"mDNS interface {item!r} does not exist here (known: {', '.join(sorted(by_name))})"
                ) from None
            addresses.extend(by_name[item])
    return addresses


def local_addresses_for(interfaces: Sequence[str] | None, *, ipv6: bool) -> list[str]:
    """The addresses of the chosen interfaces (as for mDNS), IPv4 only unless ``ipv6``."""
    return local_addresses(interfaces_from(interfaces), IPVersion.All if ipv6 else IPVersion.V4Only)


def local_addresses(interfaces: list[str] | InterfaceChoice, ip_version: IPVersion) -> list[str]:
    """The addresses to announce: those of the chosen interfaces, never a wildcard."""
    if isinstance(interfaces, list):
        candidates = interfaces
    else:
        candidates = [
            ip.ip if isinstance(ip.ip, str) else ip.ip[0] for adapter in ifaddr.get_adapters() for ip in adapter.ips
        ]
    result = []
    for address in candidates:
        parsed = ipaddress.ip_address(address.split("%")[0])
        if parsed.is_unspecified or (parsed.version == 6 and parsed.is_link_local):
            continue  # link-local v6 needs a scope id that ZeroMQ endpoints cannot carry
        if (parsed.version == 4 and ip_version is IPVersion.V6Only) or (
            parsed.version == 6 and ip_version is IPVersion.V4Only
        ):
            continue
        result.append(str(parsed))
    return result


class MdnsDiscovery:
    """Announce this node and report peers of the same mesh (``on_peer(endpoint)``).

    Args:
        node_id, mesh, protocol, port: what to announce.
        on_peer: called with each endpoint of every peer found (of this mesh and protocol major).
        interfaces: interface names or addresses (default: env, else all).
        bound_host: the address the node listens on; a loopback-bound node announces loopback only.
        public_key: the node's CURVE public key, announced as a hint.
    """

    def __init__(
        self,
        *,
        node_id: str,
        mesh: str,
        protocol: tuple[int, int],
        port: int,
        on_peer: Callable[[str], None],
        interfaces: Sequence[str] | None = None,
        bound_host: str = "0.0.0.0",
        public_key: str | None = None,
        ip_version: IPVersion | None = None,
    ) -> None:
        if ip_version is None:
            ip_version = _ip_version_for(bound_host)
        self._interfaces = interfaces_from(interfaces)
        self._ip_version = ip_version
        addresses = local_addresses(self._interfaces, ip_version)
        if bound_host not in ("0.0.0.0", "::", "*", ""):
            # A node bound to one address can only be reached there.
            addresses = [bound_host] if bound_host in addresses or _is_loopback(bound_host) else addresses
        else:
            # A peer on another machine cannot reach our loopback: its 127.0.0.1 is itself.
            addresses = [a for a in addresses if not ipaddress.ip_address(a).is_loopback] or addresses
        if not addresses:
            raise DiscoveryError("no address to announce on the chosen mDNS interfaces")
        self.announcement = Announcement(node_id, mesh, protocol, port, tuple(addresses), public_key)
        self._on_peer = on_peer
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.seen: dict[str, Announcement] = {}

    @property
    def service_name(self) -> str:
        return f"{self.announcement.node_id}.{SERVICE_TYPE}"

    async def start(self) -> None:
        """Start browsing, and announce in the background (never blocks the node's start)."""
        self._zc = AsyncZeroconf(interfaces=self._interfaces, ip_version=self._ip_version)
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, [SERVICE_TYPE], handlers=[self._on_change])
        self._info = AsyncServiceInfo(
            SERVICE_TYPE,
            self.service_name,
            port=self.announcement.port,
            properties=self.announcement.txt(),
            server=f"{self.announcement.node_id}.local.",
            parsed_addresses=list(self.announcement.addresses),
        )
        self._spawn(self._register(self._info))

    async def _register(self, info: AsyncServiceInfo) -> None:
        assert self._zc is not None
        try:
            await await_registration(await self._zc.async_register_service(info, cooperating_responders=True))
        except Exception as exc:  # a failing announcement must not break the node
            logger.error("mDNS announcement of %s failed: %s", self.service_name, exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_change(self, zeroconf: Any, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated) and name != self.service_name:
            self._spawn(self._resolve(service_type, name))

    async def _resolve(self, service_type: str, name: str) -> None:
        if self._zc is None:
            return
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(self._zc.zeroconf, RESOLVE_TIMEOUT_MS):
            return
        try:
            found = announcement_from(info)
        except DiscoveryError as exc:
            logger.debug("ignoring mDNS service %s: %s", name, exc)
            return
        self.seen[found.node_id] = found
        mine = self.announcement
        if found.node_id == mine.node_id or found.mesh != mine.mesh or found.protocol[0] != mine.protocol[0]:
            return
        for endpoint in found.endpoints():
            self._on_peer(endpoint)

    async def close(self) -> None:
        """Say goodbye (so peers drop the records at once) and stop."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._zc is not None:
            if self._browser is not None:
                await self._browser.async_cancel()
            if self._info is not None:
                try:
                    await self._zc.async_unregister_service(self._info)
                except Exception as exc:  # already gone, or the network is down
                    logger.debug("mDNS goodbye failed: %s", exc)
            await self._zc.async_close()
        self._zc = None
        self._browser = None


async def await_registration(task: Any) -> None:
    """python-zeroconf returns a task for the registration itself: wait for it too."""
    if asyncio.isfuture(task) or asyncio.iscoroutine(task):
        await task


def _ip_version_for(host: str) -> IPVersion:
    """A node bound to an IPv4 address is reachable over IPv4 only (and likewise for IPv6). The
    transport binds ``0.0.0.0`` and ``*`` as IPv4 only and ``::`` as dual-stack."""
    if host in ("0.0.0.0", "*", ""):
        return IPVersion.V4Only
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return IPVersion.All
    if address.is_unspecified:
        return IPVersion.All if address.version == 6 else IPVersion.V4Only
    return IPVersion.V4Only if address.version == 4 else IPVersion.V6Only


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost" or host == socket.gethostname()


async def browse(duration_s: float, interfaces: Sequence[str] | None = None) -> list[Announcement]:
    """Every agentmesh node announced on the network within ``duration_s`` (any mesh)."""
    found: dict[str, Announcement] = {}
    chosen = interfaces_from(interfaces)
    try:  # IPv6 too, so that nodes bound to IPv6 addresses are listed
        zc = AsyncZeroconf(interfaces=chosen, ip_version=IPVersion.All)
    except OSError:  # no IPv6 on this machine
        zc = AsyncZeroconf(interfaces=chosen, ip_version=IPVersion.V4Only)
    pending: set[asyncio.Task[Any]] = set()

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            task = asyncio.get_running_loop().create_task(resolve(service_type, name))
            pending.add(task)
            task.add_done_callback(pending.discard)

    async def resolve(service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        if await info.async_request(zc.zeroconf, RESOLVE_TIMEOUT_MS):
            try:
                announcement = announcement_from(info)
            except DiscoveryError:
                return
            found[announcement.node_id] = announcement

    browser = AsyncServiceBrowser(zc.zeroconf, [SERVICE_TYPE], handlers=[on_change])
    try:
        await asyncio.sleep(duration_s)  # browsing for a while is the point: answers arrive over time
        if pending:
            await asyncio.wait(pending, timeout=RESOLVE_TIMEOUT_MS / 1000)
    finally:
        await browser.async_cancel()
        await zc.async_close()
    return sorted(found.values(), key=lambda a: (a.mesh, a.node_id))
