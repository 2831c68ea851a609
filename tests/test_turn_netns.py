"""TURN through coturn: two peers in namespaces with no path between them connect only through relay candidates.

Topology (``tests.netns.relay_topology``): namespace A (10.232.1.2) and B (10.232.2.2) are each linked
only to a middle namespace (10.232.1.1 / 10.232.2.1) that does not forward; coturn and the signaling
server run there, on an address both reach (10.232.0.1, a host route each), as on a public server. The signaling server hands each peer time-limited TURN credentials
(``--turn-url``, ``--turn-secret-file``); the peers (``tests.turn_peer``, ``signaling.rtc.PeerLink`` with
aioice's own host candidates and no ICE server of their own) open a data channel and trade messages.
Skipped without root, ``ip netns`` or coturn's ``turnserver``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.coturn import LocalCoturn, coturn_missing
from tests.netns import RelayTopology, netns_unavailable_reason, relay_topology

pytestmark = pytest.mark.netns
REPO = Path(__file__).resolve().parent.parent
SIGNALING_PORT = 18090
TURN_PORT = 3478
SECRET = "kpcall-test-turn-secret-0123456789"


@pytest.fixture(scope="module")
def can_run() -> None:
    reason = netns_unavailable_reason() or coturn_missing()
    if reason is not None:
        pytest.skip(reason)


def _reachable(prefix: list[str], host: str, port: int) -> bool:
    probe = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()"
    return subprocess.run([*prefix, sys.executable, "-c", probe, host, str(port)], capture_output=True, timeout=20).returncode == 0


def _wait_reachable(prefix: list[str], host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not _reachable(prefix, host, port):
        assert time.monotonic() < deadline, f"{host}:{port} not reachable within {timeout_s} s"
        time.sleep(0.2)


def _call(topo: RelayTopology, env: dict[str, str], out_dir: Path, port: int, timeout_s: float) -> dict[str, dict[str, Any]]:
    """Run the two peers (receiver in B, sender in A) against the signaling server on ``port``; their JSON results."""
    url = f"http://{topo.server}:{port}"
    outs = {side: out_dir / f"{side}-{port}.json" for side in ("sender", "receiver")}
    peers = [
        subprocess.Popen([*topo.exec_prefix(ns), sys.executable, "-m", "tests.turn_peer", side, "--url", url, "--json", str(outs[side]),
                          "--timeout-s", str(timeout_s)], cwd=REPO, env=env)
        for ns, side in ((topo.b, "receiver"), (topo.a, "sender"))
    ]
    try:
        for proc in peers:
            proc.wait(timeout_s + 30)
    finally:
        _stop(peers)
    return {side: json.loads(path.read_text()) for side, path in outs.items() if path.exists()}


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_peers_without_a_path_connect_through_coturn_s_relay(can_run: None, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    secret_file = tmp_path / "turn.secret"
    secret_file.write_text(SECRET + "\n")
    servers: list[subprocess.Popen[bytes]] = []
    with relay_topology() as topo:
        a, b, mid = topo.exec_prefix(topo.a), topo.exec_prefix(topo.b), topo.exec_prefix(topo.relay)
        coturn = LocalCoturn(tmp_path / "coturn", SECRET, listen=[topo.server], relay_ip=topo.server, port=TURN_PORT, prefix=mid)
        try:
            coturn.start()
            signaling = [sys.executable, "-m", "signaling", "--host", "0.0.0.0", "--static-dir", str(tmp_path)]
            turn = ["--turn-url", f"turn:{topo.server}:{TURN_PORT}?transport=udp", "--turn-secret-file", str(secret_file), "--turn-ttl", "10m"]
            servers.append(subprocess.Popen([*mid, *signaling, "--port", str(SIGNALING_PORT), *turn], cwd=REPO, env=env))
            servers.append(subprocess.Popen([*mid, *signaling, "--port", str(SIGNALING_PORT + 1)], cwd=REPO, env=env))  # no TURN
            for port in (SIGNALING_PORT, SIGNALING_PORT + 1):
                _wait_reachable(a, topo.server, port, 30)
                _wait_reachable(b, topo.server, port, 30)
            assert not _reachable(a, topo.relay_b, SIGNALING_PORT), "A reaches B's subnet: the test would prove nothing"
            results = _call(topo, env, tmp_path, SIGNALING_PORT, timeout_s=30)
            control = _call(topo, env, tmp_path, SIGNALING_PORT + 1, timeout_s=6)
        finally:
            _stop(servers)
            coturn.stop()
    assert set(results) == {"sender", "receiver"}, (results, coturn.log_tail())
    sender, receiver = results["sender"], results["receiver"]
    assert sender["done"] and receiver["done"], (results, coturn.log_tail())
    assert sender["messages"] == [f"pong {i}" for i in range(5)] and receiver["messages"] == [f"ping {i}" for i in range(5)]
    assert sender["ice_servers"] == [[f"turn:{topo.server}:{TURN_PORT}?transport=udp"]]  # from the signaling server
    for result in (sender, receiver):  # the pair ICE chose goes through coturn: one end (at least) is a relayed address
        assert "relay" in (result["local_type"], result["remote_type"]), result
    assert topo.server in (sender["local"].split(":")[0], sender["remote"].split(":")[0]), sender
    # The control: the same peers through a server that hands out no TURN find no path at all.
    assert not control["sender"]["done"] and not control["receiver"]["done"], control
    assert "ice_servers" not in control["sender"] and "local_type" not in control["sender"], control
