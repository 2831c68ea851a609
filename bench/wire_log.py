"""Counting a call's bytes on the wire: every UDP datagram of its peer connection, and what each peer
exchanged with the signaling server.

- datagrams: every UDP datagram of the peer connection, counted where aioice sends and receives it
  (``install_wire_log`` wraps the socket transport of aioice's ``StunProtocol`` in the process that calls it;
  ``bench call`` does so in the sender's process, and in the receiver's as a cross-check): STUN (ICE
  connectivity checks and consent-freshness checks, which aiortc's RTCTransportStats leave out), DTLS handshake
  records, and DTLS application data (SCTP: association set-up, data-channel open, the portrait, motion,
  control, feedback, SACKs), each plus 28 bytes of UDP/IPv4 header: IPv4 bytes, no link-layer framing.
  ``datagram_kind`` sorts them by their first byte (RFC 7983);
- signaling: what a peer exchanged with the signaling server over its WebSocket, counted at the client
  (``CountingSignaling``): message text bytes (payload only), and the kernel's TCP counters of that socket
  (``tcp_counters``, TCP_INFO: payload bytes with the HTTP upgrade and WebSocket framing, and segments, the TCP
  handshake's included) plus an estimated 52 bytes of IPv4 + TCP header per segment, up to the moment the
  client closes.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from signaling import messages as m
from signaling.client import WebSocketSignaling
from signaling.rtc import UDP_IPV4_HEADER_BYTES

TCP_IPV4_HEADER_BYTES = 52  # IPv4 20 + TCP 20 + the timestamps option 12 (Linux's default) per segment


def _opus_payload_types() -> frozenset[int]:
    """The payload type(s) aiortc offers Opus with (the sender offers, so both ends use them)."""
    from aiortc.codecs import CODECS

    return frozenset(c.payloadType for c in CODECS["audio"] if c.mimeType.lower() == "audio/opus" and c.payloadType is not None)


OPUS_PAYLOAD_TYPES = _opus_payload_types()


# -- counting the UDP datagrams ------------------------------------------------------------------
Datagram = tuple[float, bool, str, int]  # (wall ms, outgoing, kind, IPv4 bytes)


def datagram_kind(data: bytes) -> str:
    """What a datagram carries, from its first byte (RFC 7983; DTLS 1.2 record content types)."""
    if not data:
        return "other"
    first = data[0]
    if first <= 3:
        return "stun"
    if first in (20, 21, 22):
        return "dtls_handshake"
    if first == 23:
        return "dtls_data"
    if 24 <= first <= 63:
        return "dtls_other"  # DTLS 1.3 ciphertext records (not negotiated by aiortc today)
    if 128 <= first <= 191:
        if len(data) > 1 and data[1] & 0x7F in OPUS_PAYLOAD_TYPES:  # the header is clear text under SRTP
            return "rtp_audio"  # the call's sound (signaling.rtp_audio), counted apart from motion
        return "rtp"
    return "other"


@dataclass
class WireLog:
    """Every UDP datagram aioice sent or received in this process (all its ICE connections)."""

    datagrams: list[Datagram] = field(default_factory=list)
    sockets: int = 0  # aioice sockets opened (one per local candidate)

    def record(self, outgoing: bool, data: bytes) -> None:
        self.datagrams.append((time.time() * 1000.0, outgoing, datagram_kind(data), len(data) + UDP_IPV4_HEADER_BYTES))


class _CountingTransport:
    """An asyncio datagram transport that logs what it sends, and otherwise is the one it wraps."""

    def __init__(self, transport: Any, log: WireLog) -> None:
        self._transport = transport
        self._log = log

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self._log.record(True, data)
        self._transport.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


_wire_log: WireLog | None = None


def install_wire_log() -> WireLog:
    """Log every datagram of this process's ICE connections from now on (patches aioice's StunProtocol
    for this process; idempotent). Call it before the peer connection is created."""
    global _wire_log
    if _wire_log is not None:
        return _wire_log
    import aioice.ice

    log = _wire_log = WireLog()
    protocol = aioice.ice.StunProtocol
    connection_made, datagram_received = protocol.connection_made, protocol.datagram_received

    def counted_connection_made(self: Any, transport: Any) -> None:
        log.sockets += 1
        connection_made(self, _CountingTransport(transport, log))

    def counted_datagram_received(self: Any, data: Any, addr: Any) -> None:
        log.record(False, bytes(data))
        datagram_received(self, data, addr)

    protocol.connection_made = counted_connection_made  # type: ignore[method-assign]
    protocol.datagram_received = counted_datagram_received  # type: ignore[method-assign]
    return log


# -- counting the signaling ---------------------------------------------------------------------
@dataclass(frozen=True)
class TcpCounters:
    """A TCP socket's kernel counters (Linux TCP_INFO)."""

    bytes_sent: int
    bytes_received: int
    segments_sent: int
    segments_received: int

    @property
    def ipv4_bytes_sent(self) -> int:
        return self.bytes_sent + TCP_IPV4_HEADER_BYTES * self.segments_sent

    @property
    def ipv4_bytes_received(self) -> int:
        return self.bytes_received + TCP_IPV4_HEADER_BYTES * self.segments_received


def tcp_counters(sock: Any) -> TcpCounters | None:
    """TCP_INFO of a connected socket: payload bytes and segments each way; None where the kernel has no
    such counters (not Linux, or before 4.19)."""
    option = getattr(socket, "TCP_INFO", None)
    if sock is None or option is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, option, 256)
    except OSError:
        return None
    if len(info) < 208:  # tcpi_bytes_sent arrived in Linux 4.19
        return None
    (bytes_received,) = struct.unpack_from("=Q", info, 128)  # tcpi_bytes_received
    segments_sent, segments_received = struct.unpack_from("=II", info, 136)  # tcpi_segs_out, tcpi_segs_in
    (bytes_sent,) = struct.unpack_from("=Q", info, 200)  # tcpi_bytes_sent
    return TcpCounters(bytes_sent, bytes_received, segments_sent, segments_received)


class CountingSignaling(WebSocketSignaling):
    """``WebSocketSignaling`` that counts what this peer exchanged with the signaling server."""

    def __init__(self, url: str, room: str, role: m.Role) -> None:
        super().__init__(url, room, role)
        self.messages_sent = self.messages_received = 0
        self.payload_bytes_sent = self.payload_bytes_received = 0
        self.tcp: TcpCounters | None = None

    async def send(self, msg: m.ClientMessage) -> None:
        await super().send(msg)
        self.messages_sent += 1
        self.payload_bytes_sent += len(m.encode_client_message(msg).encode())

    async def receive(self) -> m.ServerMessage | None:
        msg = await super().receive()
        if msg is not None:
            self.messages_received += 1
            self.payload_bytes_received += len(m.encode_server_message(msg).encode())
        return msg

    async def close(self) -> None:
        if self._ws is not None and not self._ws.closed:
            self.tcp = tcp_counters(self._ws.get_extra_info("socket")) or self.tcp
        await super().close()

    def stats(self) -> dict[str, Any]:
        tcp = self.tcp
        return {
            "messages_sent": self.messages_sent, "messages_received": self.messages_received,
            "payload_bytes_sent": self.payload_bytes_sent, "payload_bytes_received": self.payload_bytes_received,
            "tcp_bytes_sent": None if tcp is None else tcp.bytes_sent,
            "tcp_bytes_received": None if tcp is None else tcp.bytes_received,
            "tcp_segments_sent": None if tcp is None else tcp.segments_sent,
            "tcp_segments_received": None if tcp is None else tcp.segments_received,
            "ipv4_bytes_sent": None if tcp is None else tcp.ipv4_bytes_sent,
            "ipv4_bytes_received": None if tcp is None else tcp.ipv4_bytes_received,
        }
