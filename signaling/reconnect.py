"""Joining the signaling server again after it went away, while the peer connections carry on.

The media path is peer to peer: a sender and a receiver that lost the signaling server (restarted, or a network
blip between them and it) keep their RTCPeerConnections and the call goes on. Meanwhile ``rejoin`` connects
again with exponential backoff (``Backoff``: 0.5 s doubling to 10 s, ±20 % jitter so that a room's peers do not
return in lockstep) until the server lets it join the same room in the same role. Refusals that waiting cannot
cure end it (``PERMANENT_CODES``: a bad token or ticket, a malformed join, another peer that took the role with a
valid ticket); the others (unreachable, the role still held by our own stale entry until the server reaps it,
full rooms, quotas, rate limits, Redis away) are retried.

After a rejoin the server gives this peer a new id, and the other peers (who rejoin as well) new ones too: the
sender offers to the receiver it finds again, and the receiver takes that offer as the newer sender, closing the
old link (whose media ran through the outage).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from signaling import messages as m
from signaling.client import Signaling, SignalingError

logger = logging.getLogger(__name__)

PERMANENT_CODES = frozenset({m.UNAUTHORIZED, m.BAD_MESSAGE, m.REPLACED})
# peer_left reasons that say the peer is gone for good; others ("disconnected", "shutdown": its WebSocket or the
# server went away) are checked against the media first (PeerLink.media_alive)
DEPARTED_REASONS = frozenset({"left", "replaced"})


@dataclass
class Backoff:
    """Delays between attempts: ``initial_s`` × ``factor``^n, at most ``max_s``, each ±``jitter`` (a fraction)."""

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 10.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def next_delay(self) -> float:
        base = min(self.max_s, self.initial_s * self.factor ** self.attempts)
        self.attempts += 1
        return max(0.0, base * (1.0 + self.jitter * (2.0 * self.rng.random() - 1.0)))

    def reset(self) -> None:
        self.attempts = 0


async def rejoin(
    signaling: Signaling, stopping: asyncio.Event, backoff: Backoff | None = None,
    on_attempt: Callable[[int, str], None] | None = None,
) -> m.Joined | None:
    """Connect and join again until it works; None once ``stopping`` is set. Raises ``SignalingError`` for a
    refusal in ``PERMANENT_CODES``. ``on_attempt(attempt, why)`` is told of every failed attempt."""
    backoff = backoff or Backoff()
    attempt = 0
    while not stopping.is_set():
        delay = backoff.next_delay()
        try:
            await asyncio.wait_for(stopping.wait(), delay)
            return None  # stopped while waiting
        except TimeoutError:
            pass
        attempt += 1
        await signaling.close()  # the dead connection's session, if any
        try:
            joined = await signaling.connect()
        except SignalingError as exc:
            if exc.code in PERMANENT_CODES:
                raise
            if on_attempt is not None:
                on_attempt(attempt, str(exc))
            logger.info("signaling: attempt %d to join again failed: %s", attempt, exc)
            continue
        backoff.reset()
        return joined
    return None


async def rejoin_after_loss(
    signaling: Signaling, stopping: asyncio.Event, reconnect: bool, refusal: str | None,
    event: Callable[[str, str], None], carrying_on: str,
) -> m.Joined | None:
    """The signaling connection of a participant ended: join again (``rejoin``), or None when it should end
    (``reconnect`` off, the server's last error ``refusal`` was one waiting cannot cure, a refusal now, or stopped).
    ``event(name, detail)`` gets "signaling_lost" (with ``carrying_on``) or "signaling_closed"."""
    if not reconnect or refusal in PERMANENT_CODES:
        event("signaling_closed", refusal or "")
        return None
    event("signaling_lost", carrying_on)
    try:
        return await rejoin(signaling, stopping)
    except SignalingError as exc:
        event("signaling_closed", f"refused: {exc}")
        return None


def add_reconnect_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-reconnect`` for a participant (sender, receiver)."""
    parser.add_argument(
        "--no-reconnect", dest="reconnect", action="store_false",
        help="end when the signaling server goes away (default: the call carries on and the server is joined again, "
        "retrying every 0.5 s doubling to 10 s)",
    )
