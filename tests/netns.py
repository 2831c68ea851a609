"""Network namespaces for tests: two namespaces joined by a veth pair, made and removed by the test.

Needs root and iproute2. ``namespace_pair()`` yields the two names and addresses; everything is
deleted afterwards (deleting a namespace deletes its end of the veth pair, and the pair with it).
Traffic between them never leaves the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class NamespacePair:
    a: str
    b: str
    addr_a: str
    addr_b: str

    def exec_prefix(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def netns_unavailable_reason() -> str | None:
    """Why namespace tests cannot run here (None: they can)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network-namespace tests need root"
    if shutil.which("ip") is None:
        return "network-namespace tests need iproute2 ('ip')"
    probe = f"kpprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"'ip netns add' fails here: {getattr(exc, 'stderr', exc)}"
    _ip("netns", "del", probe)
    return None


@contextmanager
def namespace_pair(subnet: str = "10.231.0") -> Iterator[NamespacePair]:
    """Two fresh namespaces with loopback up and a veth pair: a = subnet.1, b = subnet.2 (/24)."""
    tag = os.getpid() % 100000
    pair = NamespacePair(f"kpa{tag}", f"kpb{tag}", f"{subnet}.1", f"{subnet}.2")
    veth_a, veth_b = f"kva{tag}", f"kvb{tag}"
    created: list[str] = []
    try:
        for ns in (pair.a, pair.b):
            _ip("netns", "add", ns)
            created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", veth_a, "netns", pair.a, "type", "veth", "peer", "name", veth_b, "netns", pair.b)
        _ip("-n", pair.a, "addr", "add", f"{pair.addr_a}/24", "dev", veth_a)
        _ip("-n", pair.b, "addr", "add", f"{pair.addr_b}/24", "dev", veth_b)
        _ip("-n", pair.a, "link", "set", veth_a, "up")
        _ip("-n", pair.b, "link", "set", veth_b, "up")
        yield pair
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


@dataclass(frozen=True)
class RelayTopology:
    """Two peers' namespaces with no path between them, each linked only to a middle one (``relay``).

    ``a`` (addr_a) and ``relay`` (relay_a) share one subnet, ``b`` (addr_b) and ``relay`` (relay_b) another;
    no namespace has a route to the other subnet and the middle one does not forward (ip_forward=0), so
    ``a`` and ``b`` reach each other only through a program in ``relay`` (a TURN server). ``server`` is an
    address of ``relay`` that both reach (a host route each), as a public TURN server's would be."""

    a: str
    b: str
    relay: str
    addr_a: str
    addr_b: str
    relay_a: str
    relay_b: str
    server: str

    def exec_prefix(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]


@contextmanager
def relay_topology(subnet_a: str = "10.232.1", subnet_b: str = "10.232.2", server: str = "10.232.0.1") -> Iterator[RelayTopology]:
    """Three fresh namespaces (see ``RelayTopology``): a = subnet_a.2, b = subnet_b.2, relay = subnet_a.1, subnet_b.1 and server."""
    tag = os.getpid() % 100000
    topo = RelayTopology(
        f"kta{tag}", f"ktb{tag}", f"ktr{tag}", f"{subnet_a}.2", f"{subnet_b}.2", f"{subnet_a}.1", f"{subnet_b}.1", server
    )
    created: list[str] = []
    try:
        for ns in (topo.a, topo.b, topo.relay):
            _ip("netns", "add", ns)
            created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        subprocess.run([*topo.exec_prefix(topo.relay), "sysctl", "-q", "-w", "net.ipv4.ip_forward=0"], check=True, capture_output=True, timeout=10)
        for peer, peer_addr, relay_addr, side in ((topo.a, topo.addr_a, topo.relay_a, "a"), (topo.b, topo.addr_b, topo.relay_b, "b")):
            veth_peer, veth_relay = f"kt{side}p{tag}", f"kt{side}r{tag}"
            _ip("link", "add", veth_peer, "netns", peer, "type", "veth", "peer", "name", veth_relay, "netns", topo.relay)
            _ip("-n", peer, "addr", "add", f"{peer_addr}/24", "dev", veth_peer)
            _ip("-n", topo.relay, "addr", "add", f"{relay_addr}/24", "dev", veth_relay)
            _ip("-n", peer, "link", "set", veth_peer, "up")
            _ip("-n", topo.relay, "link", "set", veth_relay, "up")
            _ip("-n", peer, "route", "add", f"{server}/32", "via", relay_addr)
        _ip("-n", topo.relay, "addr", "add", f"{server}/32", "dev", "lo")
        yield topo
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
