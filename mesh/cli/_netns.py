"""A private, loopback-only network namespace, for running programs that use mDNS on one machine.

DESIGN §4: multicast from this project's demos must never reach a real network, and restricting
zeroconf's interfaces is not enough (its socket binds every address). So the demo runs inside a
network namespace holding nothing but ``lo`` (up, multicast on, a multicast route), made one of
two ways:

- ``netns``: as root with iproute2, ``ip netns add amesh-demo-<pid>-<hex>``; commands run in it
  with ``ip netns exec``. :meth:`PrivateNetwork.close` kills (by PID) whatever still runs in it
  and deletes it. Namespaces left behind by a demo that was killed are deleted by the next one.
- ``unshare``: without root, where unprivileged user namespaces are allowed: the command runs
  under ``unshare --user --map-root-user --net --pid --fork --kill-child``, and sets ``lo`` up
  itself (:func:`setup_loopback`). The namespaces vanish with the last process in them, and the
  kernel kills every process of the PID namespace when its first one exits.

When neither works, :class:`NamespaceUnavailable` says why in one line: nothing runs.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from types import TracebackType

PREFIX = "amesh-demo-"
# One `ip` or `unshare` command takes milliseconds; a hang means something is badly wrong.
COMMAND_TIMEOUT_S = 15.0
METHODS = ("auto", "netns", "unshare")
_LEFTOVER = re.compile(rf"^{re.escape(PREFIX)}(\d+)-[0-9a-f]+$")
_UNSHARE = ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--"]


class NamespaceUnavailable(RuntimeError):
    """No private network namespace can be made here; the message is one line saying why."""


def _run(args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NamespaceUnavailable(f"`{' '.join(args)}` failed: {exc}") from exc
    if check and result.returncode != 0:
        error = (result.stderr or result.stdout).strip().replace("\n", "; ")
        raise NamespaceUnavailable(f"`{' '.join(args)}` failed: {error}")
    return result


def _netns_reason() -> str | None:
    if sys.platform != "linux":
        return f"network namespaces need Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return "`ip netns` needs root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    return None


def _unshare_reason() -> str | None:
    if sys.platform != "linux":
        return f"network namespaces need Linux, this is {sys.platform}"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "`unshare` (util-linux) or `ip` (iproute2) is missing"
    result = _run([*_UNSHARE, "true"], check=False)
    if result.returncode != 0:
        return f"unprivileged user namespaces are not allowed here ({result.stderr.strip() or 'unshare failed'})"
    return None


def choose_method(preferred: str = "auto") -> str:
    """``"netns"`` or ``"unshare"``: the first that works here (or ``preferred``, if it works).

    Raises:
        NamespaceUnavailable: neither works; the message says why.
    """
    if preferred not in METHODS:
        raise ValueError(f"isolation must be one of {', '.join(METHODS)}, not {preferred!r}")
    reasons = []
    for method, reason_of in (("netns", _netns_reason), ("unshare", _unshare_reason)):
        if preferred in ("auto", method):
            reason = reason_of()
            if reason is None:
                return method
            reasons.append(f"{method}: {reason}")
    raise NamespaceUnavailable(
        "cannot create a private network namespace (" + "; ".join(reasons) + "), and mDNS must not run on the "
        "real network: run as root with iproute2 installed, or where unprivileged user namespaces are allowed"
    )


def only_loopback() -> bool:
    """Whether this process's network namespace has no interface but ``lo``."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def setup_loopback() -> None:
    """Inside a fresh namespace (as its root): ``lo`` up, multicast on, multicast routed to it."""
    _run(["ip", "link", "set", "lo", "up", "multicast", "on"])
    _run(["ip", "route", "add", "224.0.0.0/4", "dev", "lo"])


def _pids_in(name: str) -> list[int]:
    result = _run(["ip", "netns", "pids", name], check=False)
    return [int(word) for word in result.stdout.split() if word.isdigit()]


def _kill_all_in(name: str) -> None:
    for pid in _pids_in(name):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it exited meanwhile


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: an existence check, nothing is sent
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_leftovers() -> list[str]:
    """Delete the namespaces of earlier demos whose process is gone (killed before its clean-up),
    with whatever still runs in them; the names deleted."""
    deleted = []
    for line in _run(["ip", "netns", "list"], check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        match = _LEFTOVER.match(name)
        if match is not None and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            _kill_all_in(name)
            if _run(["ip", "netns", "delete", name], check=False).returncode == 0:
                deleted.append(name)
    return deleted


class PrivateNetwork:
    """A loopback-only network namespace for the commands run with :meth:`command`; a context
    manager whose exit kills what still runs inside and removes the namespace.

    Args:
        method: ``"auto"``, ``"netns"`` or ``"unshare"`` (see the module docstring).
    """

    def __init__(self, method: str = "auto") -> None:
        self.method = choose_method(method)
        self.name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}" if self.method == "netns" else "unshare"
        self._created = False

    def create(self) -> PrivateNetwork:
        if self.method == "netns":
            delete_leftovers()
            _run(["ip", "netns", "add", self.name])
            self._created = True
            try:
                _run(["ip", "-n", self.name, "link", "set", "lo", "up", "multicast", "on"])
                _run(["ip", "-n", self.name, "route", "add", "224.0.0.0/4", "dev", "lo"])
            except BaseException:
                self.close()
                raise
        return self

    @property
    def needs_loopback_setup(self) -> bool:
        """Whether the command must call :func:`setup_loopback` itself (``unshare``)."""
        return self.method == "unshare"

    def command(self, args: list[str]) -> list[str]:
        """``args`` prefixed to run inside the namespace."""
        if self.method == "netns":
            return ["ip", "netns", "exec", self.name, *args]
        return [*_UNSHARE, *args]

    def close(self) -> None:
        """Kill (SIGKILL, by PID) what still runs inside, and delete the namespace. Idempotent.

        Raises:
            NamespaceUnavailable: the namespace could not be deleted.
        """
        if self.method != "netns" or not self._created:
            return
        _kill_all_in(self.name)
        result = _run(["ip", "netns", "delete", self.name], check=False)
        if result.returncode != 0 and self.exists():
            raise NamespaceUnavailable(f"could not delete network namespace {self.name}: {result.stderr.strip()}")
        self._created = False

    def exists(self) -> bool:
        listed = _run(["ip", "netns", "list"], check=False).stdout.split()
        return self.method == "netns" and self.name in listed

    def __enter__(self) -> PrivateNetwork:
        return self.create()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
