"""A lossy, jittery network in user space: every media datagram this process sends may be dropped or delayed.

The kernel here has no netem, so the impairment sits where aioice hands datagrams to the socket (the same hook as
``bench.wire_log``): each outgoing *media* datagram (SRTP/SRTCP, and DTLS application data, i.e. SCTP: motion,
control, feedback, SACKs) is dropped with probability ``loss`` and otherwise sent after a delay drawn uniformly
from [0, ``jitter_ms``] — delays longer than the gap between two datagrams reorder them, as a real path with
jitter does. ICE checks and the DTLS handshake pass untouched, so the call still sets up. Installing it in both
peers' processes impairs both directions; in one process (the in-process tests) it impairs every peer there.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.wire_log import datagram_kind

MEDIA_KINDS = frozenset({"rtp", "rtp_audio", "dtls_data"})


@dataclass(frozen=True)
class Impairment:
    loss: float = 0.0  # fraction of media datagrams dropped, [0, 1)
    jitter_ms: float = 0.0  # extra delay of each media datagram, uniform in [0, jitter_ms]
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss < 1.0 or not 0.0 <= self.jitter_ms <= 10_000:
            raise ValueError(f"impairment needs loss in [0, 1) and jitter in [0, 10000] ms, got {self.loss}, {self.jitter_ms}")

    @property
    def active(self) -> bool:
        return self.loss > 0 or self.jitter_ms > 0


@dataclass
class ImpairmentCounts:
    media_datagrams: int = 0
    dropped: int = 0
    delayed: int = 0
    delays_ms: list[float] = field(default_factory=list)


class _ImpairingTransport:
    """A datagram transport that drops and delays media datagrams, and otherwise is the one it wraps."""

    def __init__(self, transport: Any, impairment: Impairment, rng: random.Random, counts: ImpairmentCounts) -> None:
        self._transport = transport
        self._impairment = impairment
        self._rng = rng
        self._counts = counts

    def sendto(self, data: bytes, addr: Any = None) -> None:
        if datagram_kind(data) not in MEDIA_KINDS:
            self._transport.sendto(data, addr)
            return
        counts = self._counts
        counts.media_datagrams += 1
        if self._rng.random() < self._impairment.loss:
            counts.dropped += 1
            return
        delay_ms = self._rng.uniform(0.0, self._impairment.jitter_ms) if self._impairment.jitter_ms else 0.0
        if delay_ms <= 0:
            self._transport.sendto(data, addr)
            return
        counts.delayed += 1
        if len(counts.delays_ms) < 100_000:
            counts.delays_ms.append(delay_ms)
        asyncio.get_running_loop().call_later(delay_ms / 1000.0, self._send_late, data, addr)

    def _send_late(self, data: bytes, addr: Any) -> None:
        if not self._transport.is_closing():
            self._transport.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@contextlib.contextmanager
def impaired(impairment: Impairment) -> Iterator[ImpairmentCounts]:
    """Impair the media datagrams of every ICE socket this process opens inside the block (patches aioice's
    StunProtocol; restored on exit). Sockets opened before the block are not affected."""
    import aioice.ice

    counts = ImpairmentCounts()
    if not impairment.active:
        yield counts
        return
    rng = random.Random(impairment.seed)
    protocol = aioice.ice.StunProtocol
    original = protocol.connection_made

    def impaired_connection_made(self: Any, transport: Any) -> None:
        original(self, _ImpairingTransport(transport, impairment, rng, counts))

    protocol.connection_made = impaired_connection_made  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        protocol.connection_made = original  # type: ignore[method-assign]
