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
