"""Per-client limits of the signaling server: token buckets, per-IP quotas, the TCP connection guard and a throttled log for accept errors.

What is counted per IP address: open TCP connections (HTTP and WebSocket alike, counted from the
first byte of the connection, so silent sockets count), rooms it is present in, joins and failed
joins (token or ticket guesses) as token buckets that outlive a connection, so reconnecting does not
reset them. The state of an IP is forgotten once it has no connection and its buckets are full again.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

PRUNE_ABOVE = 4096  # per-IP entries kept before idle ones are pruned
EXHAUSTION_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; ``take`` spends one if there is one."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = burst
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self) -> bool:
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def available(self) -> bool:
        """Whether ``take`` would succeed now (without spending)."""
        self._refill()
        return self.tokens >= 1.0

    def wait_s(self) -> float:
        """Seconds until one token is there."""
        self._refill()
        return max(0.0, (1.0 - self.tokens) / self.rate) if self.rate > 0 else float("inf")

    def full(self) -> bool:
        self._refill()
        return self.tokens >= self.burst


@dataclass(frozen=True)
class ClientLimits:
    """The per-IP limits (``ServerConfig`` carries them; the field comments are the CLI help)."""

    max_connections_per_ip: int = 32  # open TCP connections per IP address (HTTP and WebSocket)
    max_rooms_per_ip: int = 8  # rooms one IP address may be present in at once
    joins_per_s: float = 2.0  # sustained join attempts per second per IP address
    join_burst: float = 20.0  # burst of join attempts per IP address
    failed_joins_per_s: float = 0.1  # sustained refused tokens/tickets per second per IP address (guessing)
    failed_join_burst: float = 10.0  # burst of refused tokens/tickets per IP address

    def __post_init__(self) -> None:
        for name in ("max_connections_per_ip", "max_rooms_per_ip"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("joins_per_s", "join_burst", "failed_joins_per_s", "failed_join_burst"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


class _IpState:
    def __init__(self, limits: ClientLimits) -> None:
        self.connections = 0
        self.joins = TokenBucket(limits.joins_per_s, limits.join_burst)
        self.failed_joins = TokenBucket(limits.failed_joins_per_s, limits.failed_join_burst)


class IpQuotas:
    """Per-IP counters and buckets (see the module docstring)."""

    def __init__(self, limits: ClientLimits) -> None:
        self.limits = limits
        self._ips: dict[str, _IpState] = {}
        self.refused_connections = 0

    def _state(self, ip: str) -> _IpState:
        state = self._ips.get(ip)
        if state is None:
            if len(self._ips) >= PRUNE_ABOVE:
                self._prune()
            state = self._ips[ip] = _IpState(self.limits)
        return state

    def _prune(self) -> None:
        for ip in [ip for ip, s in self._ips.items() if s.connections == 0 and s.joins.full() and s.failed_joins.full()]:
            del self._ips[ip]

    def connections(self, ip: str) -> int:
        state = self._ips.get(ip)
        return 0 if state is None else state.connections

    def open_connection(self, ip: str) -> bool:
        """Count a new TCP connection; False (not counted) when ``ip`` is at its quota."""
        state = self._state(ip)
        if state.connections >= self.limits.max_connections_per_ip:
            self.refused_connections += 1
            return False
        state.connections += 1
        return True

    def close_connection(self, ip: str) -> None:
        state = self._ips.get(ip)
        if state is not None and state.connections > 0:
            state.connections -= 1

    def take_join(self, ip: str) -> float | None:
        """None if ``ip`` may try a join now, else the seconds to wait (join rate, or too many refused credentials)."""
        state = self._state(ip)
        if not state.failed_joins.available():
            return state.failed_joins.wait_s()
        if not state.joins.take():
            return state.joins.wait_s()
        return None

    def failed_join(self, ip: str) -> None:
        """A join of ``ip`` presented a wrong or missing credential."""
        self._state(ip).failed_joins.take()


class ThrottledLog:
    """Logs a recurring condition at most once per ``interval_s``, with how many were left out meanwhile."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s, self.clock = interval_s, clock
        self._last = -float("inf")
        self.suppressed = 0

    def log(self, log: logging.Logger, level: int, msg: str, *args: object) -> bool:
        now = self.clock()
        if now - self._last < self.interval_s:
            self.suppressed += 1
            return False
        extra = f" ({self.suppressed} more like it in the last {now - self._last:.0f} s)" if self.suppressed and self._last > -float("inf") else ""
        log.log(level, msg + extra, *args)
        self._last, self.suppressed = now, 0
        return True


def is_resource_exhaustion(context: dict[str, Any]) -> bool:
    """Whether an event-loop exception context is an accept() or socket failure for lack of fds or memory."""
    exc = context.get("exception")
    return isinstance(exc, OSError) and exc.errno in EXHAUSTION_ERRNOS


class AcceptErrorFilter:
    """An event-loop exception handler: fd/memory exhaustion (EMFILE, ENFILE, ...) logged once per interval, one
    line without a traceback; everything else goes to the handler that was there before (or the default)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval_s: float = 10.0) -> None:
        self.loop = loop
        self.previous = loop.get_exception_handler()
        self.throttle = ThrottledLog(interval_s)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if is_resource_exhaustion(context):
            exc = context["exception"]
            self.throttle.log(
                logger, logging.ERROR,
                "out of file descriptors or memory (%s: %s); new connections wait (raise `ulimit -n` or lower --max-connections)",
                context.get("message", "socket error"), exc,
            )
            return
        if self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)

    def install(self) -> None:
        self.loop.set_exception_handler(self)

    def uninstall(self) -> None:
        if self.loop.get_exception_handler() is self:
            self.loop.set_exception_handler(self.previous)


class GuardedProtocol(asyncio.Protocol):
    """Wraps aiohttp's per-connection protocol: counts the TCP connection against its IP's quota from the first
    byte, and aborts it at once (before any HTTP) when the IP is over its quota. Everything else is forwarded."""

    def __init__(self, inner: asyncio.Protocol, quotas: IpQuotas, on_refused: Callable[[str], None]) -> None:
        self.inner = inner
        self.quotas = quotas
        self.on_refused = on_refused
        self.ip: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else "?"
        if not self.quotas.open_connection(ip):
            self.on_refused(ip)
            transport.abort()
            return
        self.ip = ip
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.ip is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.ip is not None else None

    def pause_writing(self) -> None:
        if self.ip is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.ip is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ip is None:
            return
        self.quotas.close_connection(self.ip)
        self.ip = None
        self.inner.connection_lost(exc)
