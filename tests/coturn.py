"""A private coturn (``turnserver``) for tests: TURN REST credentials (``use-auth-secret``), its files in a temp dir.

``LocalCoturn(workdir, secret, listen=[...], relay_ip=...)`` starts it (optionally inside a network
namespace, ``prefix=["ip", "netns", "exec", NS]``) and stops it; ``coturn_missing()`` says why it
cannot run. It never uses the system service or its config: ``-n`` (no config file), its own
user database, pid file and log in ``workdir``, no TLS, no CLI.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

from signaling.local_redis import stop_process

TURNSERVER = "turnserver"


def coturn_missing() -> str | None:
    if shutil.which(TURNSERVER) is None:
        return f"no {TURNSERVER} binary on PATH (Debian: apt-get install coturn; `make system-deps` does it as root)"
    return None


class LocalCoturn:
    """A turnserver child process (see the module docstring)."""

    def __init__(
        self, workdir: Path, secret: str, listen: list[str], relay_ip: str, port: int = 3478,
        prefix: list[str] | None = None, realm: str = "kpcall.test",
    ) -> None:
        self.workdir, self.secret, self.listen, self.relay_ip, self.port = workdir, secret, listen, relay_ip, port
        self.prefix = prefix or []
        self.realm = realm
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "turn.log"

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def start(self, timeout_s: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            TURNSERVER, "-n", "--use-auth-secret", f"--static-auth-secret={self.secret}", f"--realm={self.realm}",
            f"--listening-port={self.port}", f"--relay-ip={self.relay_ip}", "--min-port=49160", "--max-port=49400",
            "--no-cli", "--no-tls", "--no-dtls", "--fingerprint", "--simple-log", f"--log-file={self.log_path}",
            f"--pidfile={self.workdir / 'turn.pid'}", f"--userdb={self.workdir / 'turndb'}", "--no-software-attribute",
            *(f"--listening-ip={ip}" for ip in self.listen),
        ]
        self.process = subprocess.Popen([*self.prefix, *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while "Total General servers" not in self.log_tail(100_000):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"turnserver did not start within {timeout_s} s: {tail}")
            time.sleep(0.1)
        time.sleep(0.3)  # its listeners open right after the log line

    def stop(self) -> None:
        proc, self.process = self.process, None
        stop_process(proc)

    def __enter__(self) -> LocalCoturn:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
