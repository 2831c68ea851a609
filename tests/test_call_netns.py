"""A call between two network namespaces (made by the test) with aioice's own host candidates.

The in-process tests use the "loopback" candidate policy; this one runs server + sender in namespace
A and the receiver in namespace B, three separate processes, with the unpatched ("default") host
discovery, as on two real machines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netns import namespace_pair, netns_unavailable_reason

pytestmark = pytest.mark.netns
REPO = Path(__file__).resolve().parent.parent
PORT = 18080


@pytest.fixture(scope="module")
def netns_ok() -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def _wait_http(prefix: list[str], url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    probe = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)"
    while time.monotonic() < deadline:
        if subprocess.run([*prefix, sys.executable, "-c", probe, url], capture_output=True).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"{url} did not come up within {timeout_s} s")


def test_call_between_two_namespaces(netns_ok: None, tmp_path: Path) -> None:
    frames = 50
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "receiver.json"
    procs: list[subprocess.Popen[bytes]] = []
    with namespace_pair() as ns:
        try:
            url = f"http://{ns.addr_a}:{PORT}"
            a, b = ns.exec_prefix(ns.a), ns.exec_prefix(ns.b)
            procs.append(subprocess.Popen([*a, sys.executable, "-m", "signaling", "--host", ns.addr_a, "--port", str(PORT)], cwd=REPO, env=env))
            _wait_http(b, url + "/healthz", 20)
            common = ["--url", url, "--room", "ns", "--host-candidates", "default"]
            receiver = subprocess.Popen(
                [*b, sys.executable, "-m", "tests.call_fakes", "receiver", *common, "--frames", str(frames), "--json", str(out)],
                cwd=REPO, env=env,
            )
            procs.append(receiver)
            procs.append(subprocess.Popen([*a, sys.executable, "-m", "tests.call_fakes", "sender", *common, "--frames", "400"], cwd=REPO, env=env))
            assert receiver.wait(60) == 0
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    result = json.loads(out.read_text())
    assert result["end"] == "max_frames"
    outputs = result["outputs"]
    assert [o["slot"] for o in outputs] == list(range(frames))
    assert [o["seq"] for o in outputs] == list(range(outputs[0]["seq"], outputs[0]["seq"] + frames))
    assert sum(o["concealed"] for o in outputs) <= 3
    assert result["stats"]["frames_rendered"] >= frames - 3
