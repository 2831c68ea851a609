"""A transceiver whose RTP packets this project builds and reads itself (motion: ``signaling.rtp_motion``; audio:
``signaling.rtp_audio``), and what those streams share.

aiortc's own RTP machinery on such a transceiver is set aside: its sender is stopped once the link is up
(``quiet``: it would send RTCP reports every 0.5-1.5 s for a stream it never carries) while the SRTP session of the
link's DTLS transport stays, and its receiver's packet handler is replaced (``handle``), so nothing reaches aiortc's
depacketizers, jitter buffers or decoders. Packets go out through that SRTP session directly (``send_soon``): never
blocking the caller, a failure counted and logged at 1, 10, 100, then every 1000th, not raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiortc import RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver
from aiortc.rtp import RtpPacket

logger = logging.getLogger(__name__)

RtpHandler = Callable[[RtpPacket, int], Awaitable[None]]  # (packet, arrival time ms)


def add_transceiver(pc: RTCPeerConnection, kind: str, mime_type: str, direction: str) -> RTCRtpTransceiver:
    """A transceiver of ``kind`` offering ``mime_type`` only (so that the payload type is known once negotiated)."""
    transceiver = pc.addTransceiver(kind, direction=direction)
    transceiver.setCodecPreferences([codec for codec in RTCRtpSender.getCapabilities(kind).codecs if codec.mimeType == mime_type])
    return transceiver


class OwnRtpStream:
    """The shared half of a stream on ``transceiver`` whose packets we build (``mime_type`` fixes the payload type)."""

    def __init__(self, transceiver: RTCRtpTransceiver, mime_type: str, what: str) -> None:
        self.transceiver = transceiver
        self.mime_type = mime_type
        self.what = what  # "motion", "audio": for log lines
        self.payload_type: int | None = None
        self.send_errors = 0
        self._quieted = False
        self._sends: set[asyncio.Task[None]] = set()

    def handle(self, handler: RtpHandler) -> None:
        """Every RTP packet aiortc's router gives this transceiver goes to ``handler`` (aiortc's receiver sees none)."""
        self.transceiver.receiver._handle_rtp_packet = handler  # type: ignore[method-assign]  # noqa: SLF001

    def negotiated_payload_type(self) -> int | None:
        for codec in getattr(self.transceiver, "_codecs", None) or []:  # aiortc keeps the negotiated codecs there
            if codec.mimeType.lower() == self.mime_type.lower():
                return int(codec.payloadType)
        return None

    @property
    def ssrc(self) -> int:
        return int(self.transceiver.sender._ssrc)  # noqa: SLF001 - the SSRC the offer/answer announced

    def quiet(self) -> None:
        """Stop aiortc's RTP sender of this transceiver; the SRTP session stays. Call once the link is connected
        (aiortc starts that sender as it connects)."""
        if self._quieted:
            return
        self._quieted = True
        task = asyncio.ensure_future(self.transceiver.sender.stop())
        task.add_done_callback(self._log_stop_error)

    def send_soon(self, data: bytes, on_sent: Callable[[], None]) -> None:
        """SRTP-protect and send one serialized RTP packet on the link; ``on_sent()`` once it went out."""
        task = asyncio.ensure_future(self._send(data, on_sent))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, data: bytes, on_sent: Callable[[], None]) -> None:
        try:
            await self.transceiver.sender.transport._send_rtp(data)  # noqa: SLF001 - SRTP-protects and sends
        except (ConnectionError, OSError, RuntimeError) as exc:
            self.send_errors += 1
            if self.send_errors in (1, 10, 100) or self.send_errors % 1000 == 0:
                logger.info("%s RTP packet not sent (%d so far): %s", self.what, self.send_errors, exc)
            return
        on_sent()

    def _log_stop_error(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.info("stopping aiortc's RTP sender of the %s transceiver failed: %s", self.what, task.exception())
