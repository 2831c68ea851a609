"""A private redis-server on a free loopback port, in a folder of its own, for tests, benchmarks and trying several instances on one machine.

::

    with LocalRedis(tmp_dir) as redis_url:      # redis://127.0.0.1:PORT/0; stopped (and its files left in tmp_dir) on exit
        ...

It never touches a system Redis service: no persistence, no config file, bound to 127.0.0.1 only.
``redis_server_missing()`` says why it cannot run (no ``redis-server`` binary: ``apt-get install redis-server``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

REDIS_SERVER = "redis-server"


def redis_server_missing() -> str | None:
    """Why a LocalRedis cannot start here, or None."""
    if shutil.which(REDIS_SERVER) is None:
        return f"no {REDIS_SERVER} binary on PATH (Debian: apt-get install redis-server; `make system-deps` does it as root)"
    return None


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class LocalRedis:
    """A redis-server child process; ``url`` once started."""

    def __init__(self, workdir: Path, port: int | None = None, start_timeout_s: float = 10.0) -> None:
        self.workdir = workdir
        self.port = port
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("LocalRedis is not started")
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        missing = redis_server_missing()
        if missing is not None:
            raise RuntimeError(missing)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_loopback_port()
        log = self.workdir / "redis.log"
        self.process = subprocess.Popen(
            [
                REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir), "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", "--logfile", str(log),
                "--maxclients", "10000",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + self.start_timeout_s
        while not _pings(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = log.read_text(errors="replace")[-400:] if log.exists() else ""
                raise RuntimeError(f"redis-server did not start on 127.0.0.1:{self.port} within {self.start_timeout_s} s: {tail}")
            time.sleep(0.05)
        return self.url

    def stop(self) -> None:
        proc, self.process = self.process, None
        stop_process(proc)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def stop_process(proc: subprocess.Popen[bytes] | None, grace_s: float = 5.0) -> None:
    """Terminate a child process we started, and kill it if it has not ended within ``grace_s``."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace_s)
