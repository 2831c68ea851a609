"""The accounting of a call: the sender's datagram log split at its own events into parts, both ways.

For each direction, sender → receiver and receiver → sender (bytes counted as ``bench.wire_log`` describes):

- parts, split at the sender's own events (one wall clock; ``CallMarks``): set-up = the first ICE datagram
  either way → the control channel open (ICE + DTLS handshake + SCTP association + data-channel open);
  portrait → the receiver's "reference ready" (hello, reference status, the portrait's chunks, their SACKs);
  first-frame wait → the first motion packet (the source's first frame; ~0 for the trace); motion → the last
  motion packet (the steady state, which ``wire_kbps`` reported before and still reports). The whole call is
  the sum of the parts and ends at the last motion packet; what follows (end of stream, teardown) is reported
  apart;
- amortized: motion kbps + (set-up + portrait + first-frame wait bytes) · 8 / T / 1000 for a call of T s
  (``--call-seconds``, like ``bench rd``'s ``call_seconds``), also with the peer's signaling bytes sent.

``METHOD`` says how each figure is obtained; it goes into the JSON as ``whole_call.method``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.wire_log import Datagram

DIRECTIONS = ("sender_to_receiver", "receiver_to_sender")
PARTS = ("setup", "portrait", "first_frame_wait", "motion")

METHOD = {
    "bytes": "IPv4 bytes: each UDP datagram's length + 28 (UDP 8 + IPv4 20 header bytes); no link-layer framing. "
    "Counted in the sender's process at aioice's socket transport (StunProtocol's transport.sendto wrapped for sent "
    "datagrams, StunProtocol.datagram_received for received ones): every datagram of the peer connection, STUN "
    "included",
    "packets": "UDP datagrams, counted with the bytes",
    "stun_bytes": "datagrams whose first byte is 0-3 (RFC 7983): ICE connectivity checks, their responses, "
    "consent-freshness checks (RFC 7675, every 4-6 s each way); aiortc's RTCTransportStats do not count these",
    "dtls_handshake_bytes": "datagrams whose first byte is a DTLS 1.2 change-cipher-spec, alert or handshake record "
    "(20-22): the DTLS handshake, and close_notify at the end",
    "dtls_data_bytes": "datagrams whose first byte is a DTLS application-data record (23): SCTP packets (association "
    "set-up, data-channel open, DATA chunks of every message, SACKs, heartbeats)",
    "rtp_bytes": "datagrams whose first byte is 128-191 (RFC 7983): SRTP and SRTCP packets (motion and feedback as RTP, "
    "signaling.rtp_motion; the BYE of the transceiver's stopped aiortc sender)",
    "seconds": "the part's span on the sender's wall clock",
    "kbps": "bytes · 8 / 1000 / seconds",
    "setup": "from the first ICE datagram either way (the earliest either process logged) to the sender's control "
    "channel 'open' (its DCEP open acknowledged): ICE checks, DTLS handshake, SCTP association, data-channel open",
    "timeline_ms": "the sender's events on its wall clock, in ms from the moment it heard of the receiver (it then "
    "sends its offer through the signaling server); negative: before",
    "portrait": "from the control channel open to the sender's receipt of the receiver's 'reference ready': "
    "hello, reference status, the portrait's chunks (reference message + 43-byte chunk headers) and SACKs",
    "first_frame_wait": "from 'reference ready' to the first motion packet (the source's first frame): consent "
    "checks, pings, SACKs only",
    "motion": "from the first to the last motion packet (sender-side samples right after each send, so the first "
    "packet is in and the last one out): motion, control messages, feedback, SACKs, consent checks; the "
    "steady state",
    "total": "the first ICE datagram to the last motion packet: the sum of setup, portrait, first_frame_wait and motion",
    "after_end": "after the last motion packet until the sender closed (the last partial packet, end of stream, "
    "teardown); not in the total",
    "amortized": "motion kbps + (setup + portrait + first_frame_wait bytes) · 8 / call_seconds / 1000; "
    "kbps_with_signaling adds the originating peer's signaling IPv4 bytes sent, spread the same way",
    "start_bytes": "setup + portrait + first_frame_wait bytes: what a call costs before its first motion packet",
    "reference_message_bytes": "the packed reference message (portrait JPEG + header) before chunking: the least "
    "the portrait part can carry",
    "signaling_messages": "signaling messages sent and received by the peer's client, join and leave included",
    "counted_by_receiver": "the same direction's total as the receiver's process counted it (same instrument, same "
    "wall-clock boundaries): a cross-check",
    "signaling_payload_bytes": "signaling message text (UTF-8 JSON), counted at each peer's client "
    "(CountingSignaling): sent as encoded, received re-encoded with the encoder the server uses; no WebSocket, "
    "TCP or IP headers",
    "signaling_tcp_bytes": "the kernel's TCP_INFO counters of the client's socket, read just before the client "
    "closes: tcpi_bytes_sent / tcpi_bytes_received (HTTP upgrade, WebSocket frames and heartbeats included) and "
    "tcpi_segs_out / tcpi_segs_in (the handshake's segments and pure ACKs included)",
    "signaling_ipv4_bytes": "an estimate: TCP payload bytes + segments × 52 (IPv4 20 + TCP 20 + timestamps "
    "option 12); SYN options and SACK blocks add a few bytes more; the WebSocket close and FIN after the read "
    "are not counted",
    "wire_kbps_dtls_counters": "the previous method, kept for comparison: aiortc's DTLS transport counters "
    "(RTCTransportStats bytesSent/bytesReceived + 28 bytes per packet) over the motion period; leaves STUN out",
}


@dataclass(frozen=True)
class CallMarks:
    """Wall-clock ms (the sender's clock) that split the call into its parts (see the module docstring)."""

    first_packet_ms: float  # the first ICE datagram either way
    channel_open_ms: float  # the sender's control channel open
    reference_ready_ms: float  # the receiver holds the portrait
    first_motion_ms: float  # the first motion packet sent
    last_motion_ms: float  # the last one: the end of the measured call

    @classmethod
    def from_sender(cls, marks: dict[str, float | None]) -> CallMarks:
        """From the sender's raw marks; RuntimeError naming the missing event. (A receiver that already holds the
        portrait still answers the hello: its portrait part is then that exchange alone.)"""
        names = ("first_packet_ms", "channel_open_ms", "reference_ready_ms", "first_motion_ms", "last_motion_ms")
        missing = [n for n in names if marks.get(n) is None]
        if missing:
            raise RuntimeError(f"the sender's call lacks {', '.join(missing)}: it never reached that point")
        times = [float(marks[n]) for n in names]  # type: ignore[arg-type]
        for i in range(1, len(times)):  # events of one loop are ordered; guard against clock steps
            times[i] = max(times[i], times[i - 1])
        return cls(*times)

    def parts(self) -> list[tuple[str, float, float]]:
        return [
            ("setup", self.first_packet_ms, self.channel_open_ms),
            ("portrait", self.channel_open_ms, self.reference_ready_ms),
            ("first_frame_wait", self.reference_ready_ms, self.first_motion_ms),
            ("motion", self.first_motion_ms, self.last_motion_ms),
        ]


def tally(datagrams: Sequence[Datagram], outgoing: bool, start_ms: float, end_ms: float) -> dict[str, Any]:
    """Bytes and datagrams one way in [start_ms, end_ms), by kind (see METHOD)."""
    kinds: dict[str, int] = {"stun": 0, "dtls_handshake": 0, "dtls_data": 0, "rtp": 0}
    count = 0
    for t_ms, out, kind, size in datagrams:
        if out == outgoing and start_ms <= t_ms < end_ms:
            kinds[kind] = kinds.get(kind, 0) + size
            count += 1
    total = sum(kinds.values())
    seconds = (end_ms - start_ms) / 1000.0 if math.isfinite(end_ms) else None
    result: dict[str, Any] = {
        "bytes": total, "packets": count, "seconds": None if seconds is None else round(seconds, 3),
        "kbps": round(total * 8 / 1000 / seconds, 3) if seconds else None,
    }
    result.update({f"{kind}_bytes": size for kind, size in kinds.items()})
    return result


def account_call(
    datagrams: Sequence[Datagram], marks: CallMarks, call_seconds: Sequence[float], signaling_bytes_sent: dict[str, int | None],
    receiver_datagrams: Sequence[Datagram] | None = None,
) -> dict[str, Any]:
    """Each direction's whole call from the sender's datagram log: its parts, total, amortized rates.

    ``datagrams``: the sender's log (outgoing = sender → receiver); ``receiver_datagrams``: the receiver's, for
    the cross-check; ``signaling_bytes_sent``: IPv4 bytes each peer ("sender", "receiver") sent to the
    signaling server (None if unknown)."""
    directions: dict[str, Any] = {}
    for direction, outgoing, peer in (("sender_to_receiver", True, "sender"), ("receiver_to_sender", False, "receiver")):
        parts = {name: tally(datagrams, outgoing, start, end) for name, start, end in marks.parts()}
        total = tally(datagrams, outgoing, marks.first_packet_ms, marks.last_motion_ms)
        start_bytes = sum(parts[name]["bytes"] for name in PARTS if name != "motion")
        motion_kbps = parts["motion"]["kbps"] or 0.0
        signaling = signaling_bytes_sent.get(peer) or 0
        entry: dict[str, Any] = {
            "total": total,
            "parts": parts,
            "start_bytes": start_bytes,
            "amortized": [
                {
                    "call_seconds": seconds,
                    "kbps": round(motion_kbps + start_bytes * 8 / seconds / 1000, 3),
                    "kbps_with_signaling": round(motion_kbps + (start_bytes + signaling) * 8 / seconds / 1000, 3),
                }
                for seconds in call_seconds
            ],
            "after_end": tally(datagrams, outgoing, marks.last_motion_ms, math.inf),
        }
        if receiver_datagrams is not None:  # the receiver sends what the sender receives, and the other way
            entry["counted_by_receiver"] = tally(receiver_datagrams, not outgoing, marks.first_packet_ms, marks.last_motion_ms)["bytes"]
        directions[direction] = entry
    return {
        "seconds": round((marks.last_motion_ms - marks.first_packet_ms) / 1000.0, 3),
        "end": "the sender's last motion packet",
        **directions,
    }


def whole_call(
    sender_datagrams: Sequence[Datagram], receiver_datagrams: Sequence[Datagram], sender_marks: dict[str, float | None],
    signaling: dict[str, dict[str, Any]], reference_message_bytes: int, call_seconds: Sequence[float],
) -> dict[str, Any]:
    """The result's ``whole_call``: both directions' parts, totals and amortized rates, with the portrait
    message's size, each peer's signaling (``CountingSignaling.stats``), the sender's timeline and ``METHOD``.

    ``sender_marks``: the sender's raw event marks (wall ms); RuntimeError naming an event the call never reached."""
    raw_marks = dict(sender_marks)
    firsts = [d[0] for d in (list(sender_datagrams[:1]) + list(receiver_datagrams[:1]))]
    if firsts:  # the receiver's first ICE check leaves before the sender logs it arriving
        raw_marks["first_packet_ms"] = min(firsts)
    marks = CallMarks.from_sender(raw_marks)
    whole = account_call(
        sender_datagrams, marks, call_seconds, {peer: s["ipv4_bytes_sent"] for peer, s in signaling.items()},
        receiver_datagrams,
    )
    whole["parts_of"] = list(PARTS)
    whole["reference_message_bytes"] = reference_message_bytes
    whole["signaling"] = signaling
    joined = raw_marks.get("receiver_joined_ms")
    whole["timeline_ms"] = {  # from the moment the sender heard of the receiver (and made its offer)
        name.removesuffix("_ms"): None if t is None or joined is None else round(t - joined, 1)
        for name, t in raw_marks.items()
    }
    whole["method"] = METHOD
    return whole


def format_whole_call(result: dict[str, Any]) -> str:
    """The whole call as a text table: each part's bytes and kbps both ways, amortized rates, signaling."""
    whole = result["whole_call"]
    forward, reverse = whole["sender_to_receiver"], whole["receiver_to_sender"]
    labels = {"setup": "set-up (ICE+DTLS+SCTP)", "portrait": "portrait", "first_frame_wait": "first-frame wait", "motion": "motion (steady)"}
    lines = [
        f"whole call: first ICE packet → last motion packet, {whole['seconds']} s; IPv4 bytes (UDP/IPv4 headers, STUN included)",
        f"{'part':<24}{'seconds':>9}{'s→r bytes':>12}{'s→r kbps':>10}{'r→s bytes':>12}{'r→s kbps':>10}",
    ]

    def row(label: str, a: dict[str, Any], b: dict[str, Any]) -> str:
        return f"{label:<24}{a['seconds']:>9}{a['bytes']:>12}{str(a['kbps']):>10}{b['bytes']:>12}{str(b['kbps']):>10}"

    for name in PARTS:
        lines.append(row(labels[name], forward["parts"][name], reverse["parts"][name]))
    lines.append(row("whole call", forward["total"], reverse["total"]))
    for a, b in zip(forward["amortized"], reverse["amortized"]):
        label = f"a {a['call_seconds']:g} s call (amortized)"
        lines.append(f"{label:<24}{'':>21}{a['kbps']:>10}{'':>12}{b['kbps']:>10}"
                     f"   (with signaling {a['kbps_with_signaling']} / {b['kbps_with_signaling']})")
    lines.append(f"portrait message {whole['reference_message_bytes']} B; after the end (not in the total): "
                 f"{forward['after_end']['bytes']} / {reverse['after_end']['bytes']} B")
    for peer, s in whole["signaling"].items():
        lines.append(
            f"signaling, {peer} ↔ server (counted at the client): sent {s['messages_sent']} messages, {s['payload_bytes_sent']} B "
            f"text, ~{s['ipv4_bytes_sent']} B IPv4; received {s['messages_received']}, {s['payload_bytes_received']} B text, "
            f"~{s['ipv4_bytes_received']} B IPv4"
        )
    return "\n".join(lines)
