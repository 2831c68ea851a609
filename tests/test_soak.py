"""A long call (slow suite): the sender's, receiver's and signaling server's RSS, open files and threads stay flat.

Three processes (server, sender with the built-in trace, receiver with the instant test renderer) for
``KPCALL_SOAK_S`` seconds (default 1800: issue 22's 30 minutes); every 10 s this test reads each one's VmRSS,
thread count and open fds from /proc, and the receiver's cache directory size. Flat = the last fifth of the call
within 15 % (RSS) / 2 (threads, fds) of the second fifth (the first is warm-up), cache size unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_faults import ENV, REPO, free_port, start_server

pytestmark = pytest.mark.slow
SOAK_S = float(os.environ.get("KPCALL_SOAK_S", "1800"))
SAMPLE_S = 10.0


def sample(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_kb": int(fields["VmRSS"].split()[0]),
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_a_long_call_keeps_memory_files_and_threads_flat(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(port)
    frames = int(SOAK_S * 25) + 250
    cache = tmp_path / "cache"
    common = ["--url", url, "--room", "soak", "--frames", str(frames)]
    receiver = subprocess.Popen([sys.executable, "-m", "tests.call_fakes", "receiver", *common, "--json", str(tmp_path / "r.json"),
                                 "--cache-dir", str(cache)], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sender = subprocess.Popen([sys.executable, "-m", "tests.call_fakes", "sender", *common], cwd=REPO, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = {"server": server, "sender": sender, "receiver": receiver}
    samples: list[dict[str, object]] = []
    try:
        start = time.monotonic()
        while time.monotonic() - start < SOAK_S:
            time.sleep(SAMPLE_S)
            dead = [name for name, p in procs.items() if p.poll() is not None]
            assert not dead, f"{dead} ended during the soak"
            samples.append({"t_s": round(time.monotonic() - start, 1), "cache_bytes": dir_bytes(cache),
                            **{name: sample(p.pid) for name, p in procs.items()}})
    finally:
        for p in procs.values():
            p.kill()
            p.wait(10)
    out = Path(os.environ.get("KPCALL_SOAK_JSON", tmp_path / "soak.json"))
    out.write_text(json.dumps(samples, indent=1))
    n = len(samples)
    assert n >= 10
    early, late = samples[n // 5: 2 * n // 5], samples[4 * n // 5:]
    for name in procs:
        for key, slack in (("rss_kb", None), ("threads", 2), ("fds", 2)):
            a = max(s[name][key] for s in early)  # type: ignore[index]
            b = max(s[name][key] for s in late)  # type: ignore[index]
            limit = a * 1.15 if slack is None else a + slack
            print(f"{name} {key}: {a} -> {b}")
            assert b <= limit, f"{name} {key} grew from {a} to {b} over the call"
    assert samples[-1]["cache_bytes"] == samples[n // 5]["cache_bytes"]
