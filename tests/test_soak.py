"""A long call (slow suite): the sender's, receiver's and signaling server's RSS, open files and threads stay flat.

Three processes (server, sender with the built-in trace, receiver with the instant test renderer) for
``KPCALL_SOAK_S`` seconds (default 1800: issue 22's 30 minutes); every 10 s this test reads each one's VmRSS,
thread count and open fds from /proc, and the receiver's cache directory size. Flat = RSS growing by at most
0.5 MB a minute from the second fifth of the call (the first is warm-up) to the end, the last fifth's threads and
fds within 2 of the second fifth's, the cache size unchanged.

Measured 2026-12-06 (30 min, Intel Xeon, training beside it), before the fix: the receiver's RSS grew ~2.6 MB a
minute. Not the receiver's: this test's renderer double (tests.call_fakes.FakeSynthesizer) kept every motion it
rendered (now its last 1000), and the receiver's per-frame records were capped at 200,000 each (~90 MB; now 15,000,
10 minutes, with slots). After: 5 min, receiver +0.66 MB a minute while its records fill (they stop at 10 min),
sender +0.36, server, threads, fds and cache flat. The full 30 minutes then passed (sender +0.36 MB a minute, the rest
flat); the sender's creep was its rate controller keeping every packet's wire total (fixed: flat over 7 minutes).
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
        start_rss, end_rss = samples[n // 5][name]["rss_kb"], samples[-1][name]["rss_kb"]  # type: ignore[index]
        minutes = (samples[-1]["t_s"] - samples[n // 5]["t_s"]) / 60.0  # type: ignore[operator]
        print(f"{name} rss: {start_rss} -> {end_rss} kB over {minutes:.1f} min")
        assert (end_rss - start_rss) / 1024.0 <= 0.5 * minutes + 2.0, f"{name} RSS grew {start_rss} -> {end_rss} kB"
        for key in ("threads", "fds"):
            a = max(s[name][key] for s in early)  # type: ignore[index]
            b = max(s[name][key] for s in late)  # type: ignore[index]
            print(f"{name} {key}: {a} -> {b}")
            assert b <= a + 2, f"{name} {key} grew from {a} to {b} over the call"
    assert samples[-1]["cache_bytes"] == samples[n // 5]["cache_bytes"]
