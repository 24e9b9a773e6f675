"""Linux network namespaces for the tests that use mDNS (DESIGN §4: multicast never reaches a real
network from this project's machines).

:class:`Network` builds ``n`` node namespaces joined by a Linux bridge that lives in a dedicated
"switch" namespace, so the root namespace's interfaces are never touched::

    node ns <prefix>n0: lo, eth0 10.77.0.1/24 [fd77::1/64]  --veth--  p0 ┐
    node ns <prefix>n1: lo, eth0 10.77.0.2/24 [fd77::2/64]  --veth--  p1 ├ br0 (switch ns <prefix>sw)
    ...                                                                  ┘

Multicast is on (with a multicast route) on every ``eth0`` and on ``lo``; the bridge does not
snoop multicast, so mDNS reaches every port like on a plain switch. ``cut(i)`` unplugs node i's
cable at the switch (its switch port goes down; the node keeps its own configuration, as when a
cable is pulled) and ``restore(i)`` plugs it back. ``Network(0)`` (``loopback_only=True``) is a
single namespace with nothing but ``lo``, for one-machine runs.

Every namespace name starts with ``amesh-<pid>-<random>-``: unique per run, and namespaces left
behind by a run whose process is gone (killed before its clean-up) are deleted by the next run
(:func:`delete_leftovers`). :meth:`Network.delete` is idempotent and always tries everything.

Run a command in a fresh loopback-only namespace (deleted afterwards), e.g. a one-machine mDNS demo::

    python tests/support/netns.py -- python examples/some_demo.py
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

PREFIX = "amesh-"
IPV4_NET = "10.77.0"
IPV6_NET = "fd77::"
# Bound on one `ip` command: they take milliseconds; a hang means something is badly wrong.
IP_TIMEOUT_S = 15.0
_LEFTOVER = re.compile(rf"^{re.escape(PREFIX)}(\d+)-[0-9a-f]+-")


class NetnsUnavailable(RuntimeError):
    """Namespaces cannot be built here; the message is one line saying why."""


@dataclass(frozen=True)
class Namespace:
    """One node's namespace."""

    name: str
    index: int
    ipv4: str | None  # None in a loopback-only namespace
    ipv6: str | None
    switch_port: str | None
    interface: str = "eth0"

    def exec_prefix(self) -> list[str]:
        """Prefix a command with this to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]


def unavailable_reason() -> str | None:
    """Why namespaces cannot be built here (one line), or None if they can."""
    if sys.platform != "linux":
        return f"network namespaces need Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return "network namespaces need root (the netns tests create and delete them): run the tests as root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing: install iproute2 (`make test` does when it can)"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsUnavailable(f"`ip {' '.join(args)}` failed: {exc}") from exc
    if check and result.returncode != 0:
        error = (result.stderr or result.stdout).strip().replace("\n", "; ")
        raise NetnsUnavailable(f"`ip {' '.join(args)}` failed: {error}")
    return result


def list_namespaces() -> list[str]:
    result = _ip("netns", "list", check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only, nothing is sent
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_leftovers() -> list[str]:
    """Delete namespaces of earlier runs whose process is gone; the names deleted."""
    deleted = []
    for name in list_namespaces():
        match = _LEFTOVER.match(name)
        stale = match is not None and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1)))
        if stale and _ip("netns", "delete", name, check=False).returncode == 0:
            deleted.append(name)
    return deleted


class Network:
    """``n`` namespaces joined by a bridge (see the module docstring); a context manager.

    Args:
        n: node namespaces (with ``loopback_only``, exactly 1).
        ipv6: also give every node an IPv6 ULA address (``fd77::<i+1>/64``).
        loopback_only: one namespace with only ``lo`` (no bridge, no switch namespace).
    """

    def __init__(self, n: int, *, ipv6: bool = False, loopback_only: bool = False) -> None:
        if loopback_only and n != 1:
            raise ValueError("a loopback-only network has exactly one namespace")
        if not 1 <= n <= 200:
            raise ValueError("between 1 and 200 namespaces")
        self.prefix = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}-"
        self.switch = f"{self.prefix}sw"
        self._loopback_only = loopback_only
        self._ipv6 = ipv6
        self.nodes: list[Namespace] = [
            Namespace(
                name=f"{self.prefix}n{i}",
                index=i,
                ipv4=None if loopback_only else f"{IPV4_NET}.{i + 1}",
                ipv6=f"{IPV6_NET}{i + 1}" if ipv6 and not loopback_only else None,
                switch_port=None if loopback_only else f"p{i}",
            )
            for i in range(n)
        ]
        self._created: list[str] = []

    def __getitem__(self, index: int) -> Namespace:
        return self.nodes[index]

    def __len__(self) -> int:
        return len(self.nodes)

    def create(self) -> Network:
        """Build everything; on any failure delete what was built and raise NetnsUnavailable."""
        reason = unavailable_reason()
        if reason is not None:
            raise NetnsUnavailable(reason)
        delete_leftovers()
        try:
            if not self._loopback_only:
                self._add_namespace(self.switch)
                _ip("-n", self.switch, "link", "set", "lo", "up")
                # No STP (ports forward at once) and no multicast snooping: mDNS floods every
                # port, as on a plain unmanaged switch.
                _ip(
                    "-n", self.switch, "link", "add", "br0", "type", "bridge",
                    "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0",
                )  # fmt: skip
                _ip("-n", self.switch, "link", "set", "br0", "up")
            for node in self.nodes:
                self._add_node(node)
        except BaseException:
            self.delete()
            raise
        return self

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self._created.append(name)

    def _add_node(self, node: Namespace) -> None:
        self._add_namespace(node.name)
        _ip("-n", node.name, "link", "set", "lo", "up", "multicast", "on")
        if node.switch_port is None:
            _ip("-n", node.name, "route", "add", "224.0.0.0/4", "dev", "lo")
            return
        # Created inside the switch namespace with its peer end straight in the node's namespace:
        # no interface ever appears in the root namespace.
        _ip("-n", self.switch, "link", "add", node.switch_port, "type", "veth", "peer", "name", node.interface,
            "netns", node.name)  # fmt: skip
        _ip("-n", self.switch, "link", "set", node.switch_port, "master", "br0", "up")
        _ip("-n", node.name, "addr", "add", f"{node.ipv4}/24", "dev", node.interface)
        if node.ipv6 is not None:
            try:
                # nodad: usable at once (no duplicate address detection delay); the addresses are unique.
                _ip("-n", node.name, "addr", "add", f"{node.ipv6}/64", "dev", node.interface, "nodad")
            except NetnsUnavailable as exc:
                raise NetnsUnavailable(f"IPv6 cannot be set up inside the namespaces: {exc}") from exc
        _ip("-n", node.name, "link", "set", node.interface, "up", "multicast", "on")
        _ip("-n", node.name, "route", "add", "224.0.0.0/4", "dev", node.interface)

    def cut(self, index: int) -> None:
        """Unplug node ``index``'s cable at the switch."""
        self._port(index, "down")

    def restore(self, index: int) -> None:
        """Plug node ``index``'s cable back in."""
        self._port(index, "up")

    def _port(self, index: int, state: str) -> None:
        port = self.nodes[index].switch_port
        if port is None:
            raise ValueError("a loopback-only namespace has no link to cut")
        _ip("-n", self.switch, "link", "set", port, state)

    def delete(self) -> None:
        """Delete every namespace this network created (their veths and the bridge go with them).
        Idempotent; raises after trying them all if one could not be deleted."""
        failures = []
        for name in reversed(self._created):
            result = _ip("netns", "delete", name, check=False)
            if result.returncode != 0 and name in list_namespaces():
                failures.append(f"{name}: {result.stderr.strip()}")
        self._created.clear()
        if failures:
            raise RuntimeError(f"could not delete network namespaces: {'; '.join(failures)}")

    def __enter__(self) -> Network:
        return self.create()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.delete()

    def describe(self) -> str:
        """Addresses, links and routes of every namespace, for a failing test's report."""
        sections = []
        for name in self._created:
            out = [_ip("-n", name, *cmd, check=False).stdout for cmd in (("-br", "addr"), ("-br", "link"), ("route",))]
            sections.append(f"--- {name}\n" + "".join(out))
        return "\n".join(sections) or "<no namespaces>"


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command in a fresh loopback-only namespace, then delete it; the command's exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: netns.py -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    try:
        with Network(1, loopback_only=True) as net:
            return subprocess.run([*net[0].exec_prefix(), *args], check=False).returncode
    except NetnsUnavailable as exc:
        print(f"netns.py: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
