"""WebRTC plumbing shared by sender and receiver: ICE settings, host candidates, peer links, stats.

Host candidates: aioice leaves 127.0.0.1 out of its host candidates, so two aiortc peers on one
machine without another interface find no path. ``use_host_candidates(policy)`` patches aioice's
host-address discovery for this process:

- "default": aioice's own choice (every non-loopback interface address);
- "loopback": 127.0.0.1 only (tests and benchmarks: traffic never leaves loopback);
- "all": aioice's addresses plus 127.0.0.1 (the local demo: peers on this machine reach each other
  over loopback, and a browser on the network can still reach the receiver's interface address).

ICE servers: none unless given (``--ice-server stun:host:3478`` or ``turn:host:3478,user,password``);
aiortc's default of a public STUN server is never used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from signaling import messages as m
from signaling.control import MOTION_TRANSPORTS
from signaling.client import Signaling
from signaling.ice_servers import with_signaled_ice_servers

logger = logging.getLogger(__name__)

HOST_CANDIDATE_POLICIES = ("default", "loopback", "all")
LOOPBACK_V4 = "127.0.0.1"
UDP_IPV4_HEADER_BYTES = 28  # what the DTLS transport's byte counters leave out per packet

_original_get_host_addresses = aioice.ice.get_host_addresses
_policy = "default"


def _patched_get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _policy == "loopback":
        return [LOOPBACK_V4] if use_ipv4 else []
    addresses = list(_original_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6))
    if _policy == "all" and use_ipv4 and LOOPBACK_V4 not in addresses:
        addresses.append(LOOPBACK_V4)
    return addresses


def use_host_candidates(policy: str) -> None:
    """Select this process's host-candidate policy (see the module docstring); ValueError if unknown."""
    global _policy
    if policy not in HOST_CANDIDATE_POLICIES:
        raise ValueError(f"host-candidate policy {policy!r} is not one of {list(HOST_CANDIDATE_POLICIES)}")
    _policy = policy
    aioice.ice.get_host_addresses = _patched_get_host_addresses  # type: ignore[assignment]


def host_candidate_policy() -> str:
    return _policy


def parse_ice_server(spec: str) -> RTCIceServer:
    """``stun:host:port`` or ``turn:host:port[?transport=udp],username,credential`` -> RTCIceServer."""
    url, *rest = spec.split(",")
    if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
        raise ValueError(f"ICE server {spec!r} must start with stun:, stuns:, turn: or turns:")
    if url.startswith("turn") and len(rest) != 2:
        raise ValueError(f"TURN server {url!r} needs a username and a credential: 'turn:host:port,user,password'")
    if url.startswith("stun") and rest:
        raise ValueError(f"STUN server {spec!r} takes no credentials: 'stun:host:port'")
    return RTCIceServer(urls=url, username=rest[0] if rest else None, credential=rest[1] if rest else None)


@dataclass(frozen=True)
class RtcOptions:
    """ICE settings of one process."""

    ice_servers: tuple[str, ...] = ()  # STUN/TURN servers; none by default (no public STUN)
    host_candidates: str = "default"  # see HOST_CANDIDATE_POLICIES
    motion_transport: str = "rtp+audio"  # "rtp": motion as RTP between Python peers when both offer it; "rtp+audio": and
    # inside the audio's RTP packets when the call has audio (signaling.audio_motion); "datachannel": never RTP
    srtp_tag_bits: int = 80  # SRTP profile sender<->receiver links prefer (signaling.rtp_motion): 80 or 32-bit tags

    def configuration(self) -> RTCConfiguration:
        return RTCConfiguration(iceServers=[parse_ice_server(s) for s in self.ice_servers])

    def apply(self) -> None:
        use_host_candidates(self.host_candidates)


def add_rtc_arguments(parser: argparse.ArgumentParser, default_host_candidates: str = "default") -> None:
    parser.add_argument(
        "--ice-server", action="append", default=[], metavar="URL",
        help="STUN/TURN server (stun:host:port or turn:host:port,user,password); repeatable; none by default",
    )
    parser.add_argument(
        "--host-candidates", choices=HOST_CANDIDATE_POLICIES, default=default_host_candidates,
        help="which local addresses ICE offers: aioice's (default), 127.0.0.1 only (loopback) or both (all); "
        "peers on one machine with no other interface need loopback or all (default %(default)s)",
    )
    parser.add_argument(
        "--motion-transport", choices=MOTION_TRANSPORTS, default="rtp+audio",
        help="how motion crosses a sender->receiver link: 'rtp+audio' (default): as RTP, and inside the audio's RTP packets "
        "when the call has audio (a message costs its bytes plus ~2 instead of ~50 of headers; see --motion-audio-wait-ms); "
        "'rtp': as RTP only (about 50 bytes of headers a packet, nothing back; used when both ends offer it); "
        "'datachannel': on the 'motion' data channel (about 95 bytes a packet plus SACKs; what older peers and browsers speak)",
    )
    parser.add_argument(
        "--srtp-tag-bits", type=int, choices=(80, 32), default=80,
        help="SRTP authentication tag the sender<->receiver link prefers for RTP motion: 80 bits (AES_CM_128_HMAC_SHA1_80, "
        "WebRTC's mandatory profile; default) or 32 (AES_CM_128_HMAC_SHA1_32: 6 bytes less a packet, ~1.2 kbps at "
        "25 packets/s, with a weaker integrity check); both ends must ask for 32 to get it",
    )


def create_rtc_options(args: argparse.Namespace) -> RtcOptions:
    for spec in args.ice_server:
        parse_ice_server(spec)  # ValueError quoting the bad one
    return RtcOptions(
        tuple(args.ice_server), args.host_candidates, getattr(args, "motion_transport", "rtp+audio"), getattr(args, "srtp_tag_bits", 80)
    )


@dataclass(frozen=True)
class TransportCounters:
    """Bytes and packets through a peer connection's DTLS transport, both directions."""

    bytes_sent: int = 0
    packets_sent: int = 0
    bytes_received: int = 0
    packets_received: int = 0

    @property
    def wire_bytes_sent(self) -> int:
        """IPv4 bytes sent: DTLS records plus UDP and IPv4 headers (STUN checks not included)."""
        return self.bytes_sent + UDP_IPV4_HEADER_BYTES * self.packets_sent

    @property
    def wire_bytes_received(self) -> int:
        return self.bytes_received + UDP_IPV4_HEADER_BYTES * self.packets_received


def transport_counters(pc: RTCPeerConnection) -> TransportCounters:
    """The SCTP association's DTLS transport statistics (aiortc's RTCTransportStats), zero before it exists."""
    sctp = pc.sctp
    if sctp is None:
        return TransportCounters()
    for stats in sctp.transport._get_stats().values():  # RTCTransportStats; aiortc's pc.getStats() omits it
        return TransportCounters(stats.bytesSent, stats.packetsSent, stats.bytesReceived, stats.packetsReceived)
    return TransportCounters()


class PeerLink:
    """One RTCPeerConnection to one remote participant, driven by signaling messages.

    The offering side calls ``offer()``; either side feeds the remote's descriptions and candidates
    to ``on_signal``. ``closed`` is set once the connection fails or closes.
    """

    def __init__(self, peer: m.PeerInfo, signaling: Signaling, rtc: RtcOptions, label: str) -> None:
        self.peer = peer
        self.signaling = signaling
        self.pc = RTCPeerConnection(configuration=with_signaled_ice_servers(rtc.configuration(), signaling.ice_servers))  # + TURN from the server
        self.prefix = f"{label} -> {peer.role} {peer.peer_id}"
        self.closed = asyncio.Event()
        self.connected = asyncio.Event()
        self.created = time.monotonic()
        self._on_close: list[Callable[[], None]] = []
        # called after the local offer (offerer) or the remote offer (answerer) created the transceivers and transports,
        # before the offer is sent or the answer created: where a side adds to or adjusts the negotiation
        self.before_offer_sent: Callable[[], None] | None = None
        self.before_answer: Callable[[], None] | None = None

        @self.pc.on("connectionstatechange")
        async def on_state() -> None:
            state = self.pc.connectionState
            logger.info("%s: connection %s", self.prefix, state)
            if state == "connected":
                self.connected.set()
            elif state in ("failed", "closed"):
                await self.close()

    def on_close(self, callback: Callable[[], None]) -> None:
        self._on_close.append(callback)

    async def offer(self) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        if self.before_offer_sent is not None:
            self.before_offer_sent()
        desc = self.pc.localDescription
        await self.signaling.send(m.SessionDescription("offer", self.peer.peer_id, desc.sdp))

    async def on_signal(self, msg: m.SessionDescription | m.IceCandidate) -> None:
        """Apply a remote offer/answer/candidate; errors are logged, never raised (bad input from the peer)."""
        try:
            if isinstance(msg, m.SessionDescription):
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=msg.sdp, type=msg.kind))
                if msg.kind == "offer":
                    if self.before_answer is not None:
                        self.before_answer()
                    await self.pc.setLocalDescription(await self.pc.createAnswer())
                    await self.signaling.send(m.SessionDescription("answer", self.peer.peer_id, self.pc.localDescription.sdp))
            elif msg.candidate:
                candidate = candidate_from_sdp(msg.candidate.removeprefix("candidate:"))
                candidate.sdpMid, candidate.sdpMLineIndex = msg.sdp_mid, msg.sdp_mline_index
                await self.pc.addIceCandidate(candidate)
        except Exception as exc:  # noqa: BLE001 - aiortc raises many types for a bad remote SDP/candidate
            logger.warning("%s: cannot apply the remote %s: %s", self.prefix, type(msg).__name__, exc)

    async def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        with contextlib.suppress(Exception):
            await self.pc.close()
        for callback in self._on_close:
            callback()

    def counters(self) -> TransportCounters:
        return transport_counters(self.pc)

    async def media_alive(self, within_s: float) -> bool:
        """Whether the peer still sends on this connection: bytes arrive within ``within_s`` (the signaling server's
        word that a peer left is about its WebSocket; a peer that lost only that still talks to us directly)."""
        if self.closed.is_set() or self.pc.connectionState != "connected":
            return False
        before = self.counters().bytes_received
        await asyncio.sleep(within_s)
        return not self.closed.is_set() and self.counters().bytes_received > before


async def close_links(links: Sequence[PeerLink]) -> None:
    await asyncio.gather(*(link.close() for link in links), return_exceptions=True)
