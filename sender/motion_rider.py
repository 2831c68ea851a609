"""One link's motion riding in its audio packets (``signaling.audio_motion``): which message waits, and how long.

A ``MotionRider`` stands between a receiver link and both of its streams: the sender hands it each motion message
(``send_motion``) and the audio sender each Opus packet (``send``, the ``AudioOutlet`` interface). Both streams are
periodic, so it predicts when the next of each is due from the last ones (median interval of the last few):

- a motion message waits for the next audio packet only when that one is due within ``wait_ms``; at the deadline
  (``wait_ms`` after it arrived) a message still waiting goes on its own as RTP motion, as without riding;
- an audio packet waits for the next motion message only when that one is due within ``hold_ms`` (and is sent plain
  at its deadline);
- a message arriving while an audio packet is held rides it at once; an audio packet arriving while messages wait
  takes them at once (up to ``MAX_MESSAGES``, within ``MAX_RIDE_BYTES``; any left over go on their own).

So motion's latency grows by at most ``wait_ms`` and the sound's by at most ``hold_ms``. The trade-off, at 25 fps:

- 20 ms Opus frames (50 packets/s): an audio packet is always due within 20 ms, so every message rides (every
  other audio packet carries one), waiting 0-20 ms; audio headers cost 20 kbps of their own;
- 40 ms frames (25 packets/s): one audio packet per motion frame; their phase is fixed for a call (both paced by
  the same clock), so each message waits the phase φ when φ ≤ ``wait_ms``, else each audio packet is held 40 − φ
  when that is ≤ ``hold_ms``: with wait + hold ≥ 40 ms every message rides, and the hold aligns the audio's
  emission with the motion's capture;
- 60 ms frames (16.7 packets/s): at most two of every three messages can ride within 20 ms budgets; the third
  goes on its own (50 bytes of headers).

The hold costs the sound latency only where the receiver does not delay the sound to the face anyway (it plays each
chunk at max(face latency, audio need)): with a renderer slower than the audio path it is free.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from signaling.audio_motion import MAX_MESSAGES, fits, prefix_bytes
from signaling.rtp_audio import AudioRtpChannel
from signaling.rtp_motion import rtp_packet_overhead_bytes

logger = logging.getLogger(__name__)

MAX_WAIT_MS = 20.0  # the default wait: one audio frame, at most this
DEFAULT_HOLD_MS = 20.0  # how long an audio packet may wait for a motion message by default
INTERVAL_HISTORY = 8  # intervals the period estimate is the median of
STALE_PERIODS = 2.0  # a stream silent for longer than this many periods is not expected soon
RECENT_MESSAGES = 50  # messages the overhead estimate for the controller averages


def default_wait_ms(audio_frame_ms: float) -> float:
    """The motion's default wait for an audio packet: one audio frame, at most ``MAX_WAIT_MS``."""
    return min(float(audio_frame_ms), MAX_WAIT_MS)


class _Period:
    """When the next event of a periodic stream is due (ms on the rider's clock), from its recent intervals."""

    def __init__(self) -> None:
        self.last_ms: float | None = None
        self.intervals: deque[float] = deque(maxlen=INTERVAL_HISTORY)

    def note(self, now_ms: float) -> None:
        if self.last_ms is not None and now_ms > self.last_ms:
            self.intervals.append(now_ms - self.last_ms)
        self.last_ms = now_ms

    def next_due(self, now_ms: float) -> float | None:
        if self.last_ms is None or not self.intervals:
            return None
        period = sorted(self.intervals)[len(self.intervals) // 2]
        if now_ms - self.last_ms > STALE_PERIODS * period:
            return None  # stopped (or stalled): do not wait for it
        return max(now_ms, self.last_ms + period)


@dataclass(frozen=True)
class RiderCounters:
    messages: int  # motion messages handed to the rider
    messages_ridden: int  # ... that went inside an audio packet
    messages_alone: int  # ... that went as their own RTP packet (nothing due in time, too large, wait expired)
    waits_expired: int  # messages that waited for an audio packet that did not come in time
    audio_packets: int  # Opus packets handed to the rider
    audio_held: int  # ... held for a motion message
    audio_holds_expired: int  # ... of which sent plain at the deadline
    send_errors: int  # sends that failed (counted, not raised: the link may be closing)


class MotionRider:
    """See the module docstring. ``send_alone(message, capture_ts_ms)`` sends a message as its own RTP motion packet."""

    def __init__(self, audio: AudioRtpChannel, send_alone: Callable[[bytes, float | None], None], wait_ms: float,
                 hold_ms: float = DEFAULT_HOLD_MS, clock: Callable[[], float] | None = None) -> None:
        if not 0.0 <= wait_ms <= 200.0 or not 0.0 <= hold_ms <= 200.0:
            raise ValueError(f"motion wait {wait_ms:g} ms and audio hold {hold_ms:g} ms must each be within 0-200 ms")
        self.audio = audio
        self.send_alone = send_alone
        self.wait_ms, self.hold_ms = float(wait_ms), float(hold_ms)
        self._clock = clock or (lambda: time.monotonic() * 1000.0)
        self._audio_period, self._motion_period = _Period(), _Period()
        self._waiting: deque[tuple[bytes, float | None, asyncio.TimerHandle]] = deque()
        self._held: tuple[bytes, int, asyncio.TimerHandle] | None = None
        self._recent_cost: deque[float] = deque(maxlen=RECENT_MESSAGES)  # wire bytes beyond the payload, per message
        self._alone_overhead = rtp_packet_overhead_bytes()
        self.messages = self.messages_ridden = self.messages_alone = self.waits_expired = 0
        self.audio_packets = self.audio_held = self.audio_holds_expired = self.send_errors = 0

    # -- the audio sender's side (AudioOutlet) ------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.audio.active

    def send(self, payload: bytes, timestamp: int) -> None:
        """An Opus packet for this link: takes the waiting motion, or waits for the next message, or goes plain."""
        now = self._clock()
        self._audio_period.note(now)
        self.audio_packets += 1
        if self._held is not None:  # a hold longer than an audio frame: the older packet goes first, plain
            self._release_held(expired=True)
        if self._waiting:
            self._ride(payload, timestamp, self._take_waiting(len(payload)))
            return
        due = self._motion_period.next_due(now)
        if self.hold_ms > 0 and due is not None and due - now <= self.hold_ms:
            handle = asyncio.get_running_loop().call_later(self.hold_ms / 1000.0, self._release_held, True)
            self._held = (payload, timestamp, handle)
            self.audio_held += 1
            return
        self.audio.send(payload, timestamp)  # errors go to the audio sender, which counts them

    # -- the motion's side --------------------------------------------------------------------------
    def send_motion(self, message: bytes, capture_ts_ms: float | None = None) -> None:
        """A motion message (one RTP motion packet's payload): rides the held or the next audio packet, or goes alone."""
        now = self._clock()
        self._motion_period.note(now)
        self.messages += 1
        if not self.audio.active or not fits([message], 1):
            self._alone(message, capture_ts_ms)
            return
        if self._held is not None:
            payload, timestamp, handle = self._held
            if fits([message], len(payload)):
                handle.cancel()
                self._held = None
                self._ride(payload, timestamp, [message])
                return
        due = self._audio_period.next_due(now)
        if self.wait_ms > 0 and due is not None and due - now <= self.wait_ms and len(self._waiting) < MAX_MESSAGES:
            handle = asyncio.get_running_loop().call_later(self.wait_ms / 1000.0, self._expire_waiting)
            self._waiting.append((message, capture_ts_ms, handle))
            return
        self._alone(message, capture_ts_ms)

    # -- figures ------------------------------------------------------------------------------------
    def overhead_bytes(self) -> int:
        """What a motion message has recently cost on the wire beyond its payload (for the controller's estimate):
        a message's share of the prefix when it rode, the RTP/SRTP/UDP/IPv4 headers when it went alone."""
        if not self._recent_cost:
            return 2
        return max(1, round(sum(self._recent_cost) / len(self._recent_cost)))

    def set_srtp_tag_bits(self, bits: int) -> None:
        self._alone_overhead = rtp_packet_overhead_bytes(bits)

    def counters(self) -> RiderCounters:
        return RiderCounters(self.messages, self.messages_ridden, self.messages_alone, self.waits_expired, self.audio_packets,
                             self.audio_held, self.audio_holds_expired, self.send_errors)

    def close(self) -> None:
        """Drop what waits (the link is gone)."""
        for _, _, handle in self._waiting:
            handle.cancel()
        self._waiting.clear()
        if self._held is not None:
            self._held[2].cancel()
            self._held = None

    # -- internals ----------------------------------------------------------------------------------
    def _take_waiting(self, opus_bytes: int) -> list[bytes]:
        """The waiting messages that fit an Opus packet of ``opus_bytes``, oldest first; the others go alone now."""
        taken: list[bytes] = []
        while self._waiting:
            message, capture_ts_ms, handle = self._waiting.popleft()
            handle.cancel()
            if len(taken) < MAX_MESSAGES and fits(taken + [message], opus_bytes):
                taken.append(message)
            else:
                self._alone(message, capture_ts_ms)
        return taken

    def _ride(self, payload: bytes, timestamp: int, messages: list[bytes]) -> None:
        if not messages:
            self.audio.send(payload, timestamp)
            return
        try:
            self.audio.send(payload, timestamp, messages)
        except (ConnectionError, ValueError) as exc:
            self.send_errors += 1
            logger.info("audio packet with motion not sent: %s", exc)
            return
        self.messages_ridden += len(messages)
        share = (prefix_bytes(messages) - sum(len(m) for m in messages)) / len(messages)
        self._recent_cost.extend([share] * len(messages))

    def _alone(self, message: bytes, capture_ts_ms: float | None) -> None:
        try:
            self.send_alone(message, capture_ts_ms)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            self.send_errors += 1
            logger.info("motion packet not sent: %s", exc)
            return
        self.messages_alone += 1
        self._recent_cost.append(self._alone_overhead)

    def _expire_waiting(self) -> None:
        """The oldest waiting message's deadline: it goes alone (the others have later deadlines of their own)."""
        if not self._waiting:
            return
        message, capture_ts_ms, _ = self._waiting.popleft()
        self.waits_expired += 1
        self._alone(message, capture_ts_ms)

    def _release_held(self, expired: bool) -> None:
        if self._held is None:
            return
        payload, timestamp, handle = self._held
        handle.cancel()
        self._held = None
        if expired:
            self.audio_holds_expired += 1
        try:
            self.audio.send(payload, timestamp)
        except (ConnectionError, ValueError) as exc:
            self.send_errors += 1
            logger.debug("held audio packet not sent: %s", exc)
