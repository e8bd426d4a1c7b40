"""Hosts for tests, made of Linux network namespaces (iproute2's `ip netns`, root only).

A bridge in the main namespace is the LAN and carries the gateway address, where the shared services
listen; each host is a namespace with a veth into the bridge, its own address and, run through
`unshare --uts`, its own hostname. Tearing a host down kills every process in its namespace (the kernel
closes their sockets) and then pulls its link. The gateway stays up whichever hosts go.

Only addresses of the subnet made here are ever used, every name carries the test process's pid, and a
run that died without its teardown is swept by the next one (names of dead pids only).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time

PREFIX = "sqmh"  # stockq multi-host: every namespace and link made here starts with it
_NAME = re.compile(rf"^{PREFIX}(\d+)")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def unsupported() -> str | None:
    """Why this machine cannot make network namespaces (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    probe = f"{PREFIX}{os.getpid()}probe"
    try:
        made = _ip("netns", "add", probe, check=False)
    except FileNotFoundError:
        return "iproute2's `ip` is not installed"
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _ours(name: str) -> int | None:
    found = _NAME.match(name)
    return int(found.group(1)) if found else None


def sweep_stale() -> None:
    """Remove namespaces and links left by a run of this module whose process is gone."""
    for line in _ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        pid = _ours(name)
        if pid is not None and not _pid_alive(pid):
            _kill_netns(name)
            _ip("netns", "del", name, check=False)
    for line in _ip("-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        pid = _ours(name)
        if pid is not None and not _pid_alive(pid):
            _ip("link", "del", name, check=False)


def _kill_netns(netns: str) -> list[int]:
    """SIGKILL every process in `netns` and wait until none is left; the pids killed."""
    pids = [int(p) for p in _ip("netns", "pids", netns, check=False).stdout.split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while _ip("netns", "pids", netns, check=False).stdout.split() and time.monotonic() < deadline:
        time.sleep(0.05)
    return pids


def _free_subnet() -> int:
    """A third octet n whose 10.213.n.0/24 nothing on this machine routes yet."""
    used = _ip("-4", "route", "show", "table", "all").stdout + _ip("-4", "addr", "show").stdout
    for offset in range(250):
        n = (os.getpid() + offset) % 250 + 1
        if f"10.213.{n}." not in used:
            return n
    raise RuntimeError("no free 10.213.n.0/24 subnet")


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


class Host:
    """One namespace on the LAN: address `address`, hostname `hostname`."""

    def __init__(self, lan: Lan, name: str, index: int) -> None:
        self.hostname = f"host-{name}"
        self.netns = f"{lan.tag}-{name}"
        self.link = f"{lan.tag}{name}"  # the veth's end in the main namespace (<= 15 characters)
        self.address = f"{lan.prefix}.{index}"
        self.bridge = lan.bridge

    def create(self) -> None:
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.link, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        _ip("link", "set", self.link, "master", self.bridge, "up")
        _ip("-n", self.netns, "addr", "add", f"{self.address}/24", "dev", "eth0")
        _ip("-n", self.netns, "link", "set", "eth0", "up")
        _ip("-n", self.netns, "link", "set", "lo", "up")

    def wrap(self) -> list[str]:
        """Prefix of a command that runs it on this host: its namespace and its hostname."""
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts", "--",
                "sh", "-c", 'hostname "$0" && exec "$@"', self.hostname]  # fmt: skip

    def tear_down(self) -> list[int]:
        """The host dies: every process SIGKILLed, then its link pulled. The pids killed."""
        pids = _kill_netns(self.netns)
        # The kernel closes a killed process's connections, but a FIN still queued on the veth is dropped
        # when the link goes down: the peers would then learn of the death only by their timeouts.
        time.sleep(0.5)
        _ip("link", "set", self.link, "down", check=False)
        return pids

    def remove(self) -> None:
        _kill_netns(self.netns)
        _ip("link", "del", self.link, check=False)  # takes its peer in the namespace along
        _ip("netns", "del", self.netns, check=False)


class Lan:
    """A bridge with the gateway address `gateway`; hosts join it with `add`."""

    def __init__(self) -> None:
        sweep_stale()
        self.tag = f"{PREFIX}{os.getpid()}"
        self.bridge = f"{self.tag}br"
        self.prefix = f"10.213.{_free_subnet()}"
        self.gateway = f"{self.prefix}.1"
        self.hosts: list[Host] = []
        self._made = 0  # addresses are never reused: .2, .3, ... in the order hosts are made
        _ip("link", "add", self.bridge, "type", "bridge")
        try:
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except subprocess.CalledProcessError:
            self.close()
            raise

    def add(self, name: str) -> Host:
        self._made += 1
        host = Host(self, name, self._made + 1)
        self.hosts.append(host)  # first, so that close() removes a half-made host too
        host.create()
        return host

    def remove(self, host: Host) -> None:
        host.remove()
        self.hosts.remove(host)

    def close(self) -> None:
        for host in list(self.hosts):
            self.remove(host)
        _ip("link", "del", self.bridge, check=False)
