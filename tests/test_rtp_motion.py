"""signaling.rtp_motion: motion as RTP between two aiortc peers on 127.0.0.1, and its counters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCPeerConnection
from aiortc.rtp import RtpPacket

from signaling.rtc import use_host_candidates
from signaling.rtp_motion import (
    MAX_RTP_PAYLOAD_BYTES, MotionRtpChannel, fits, prefer_srtp_profiles, rtp_packet_overhead_bytes,
)
from tests.call_fakes import wait_until


class Pair:
    def __init__(self, offerer: RTCPeerConnection, answerer: RTCPeerConnection, tx: MotionRtpChannel, rx: MotionRtpChannel | None,
                 at_tx: list[bytes], at_rx: list[bytes]) -> None:
        self.offerer, self.answerer, self.tx, self.rx, self.at_tx, self.at_rx = offerer, answerer, tx, rx, at_tx, at_rx


async def connect(srtp_tag_bits: int = 80, answer_rtp: bool = True) -> Pair:
    use_host_candidates("loopback")
    offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
    at_tx: list[bytes] = []
    at_rx: list[bytes] = []
    offerer.createDataChannel("control")
    tx = MotionRtpChannel.offer(offerer, at_tx.append)
    await offerer.setLocalDescription(await offerer.createOffer())
    prefer_srtp_profiles(offerer, srtp_tag_bits)
    await answerer.setRemoteDescription(offerer.localDescription)
    rx = MotionRtpChannel.prepare_answer(answerer, at_rx.append) if answer_rtp else None
    prefer_srtp_profiles(answerer, srtp_tag_bits)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)
    await wait_until(lambda: offerer.connectionState == "connected" and answerer.connectionState == "connected", 10, "both peers connected")
    await wait_until(lambda: offerer.sctp is not None and offerer.sctp.state == "connected", 10, "the SCTP association")
    return Pair(offerer, answerer, tx, rx, at_tx, at_rx)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    p = await connect()
    yield p
    await p.offerer.close()
    await p.answerer.close()


async def test_payloads_cross_both_ways_unchanged(pair: Pair) -> None:
    assert pair.rx is not None
    assert pair.tx.start() and pair.rx.start()
    sent = [bytes([i]) * (1 + i % 40) for i in range(50)]
    for payload in sent:
        pair.tx.send(payload, capture_ts_ms=1000.0 + 40 * len(payload))
    pair.rx.send(b"feedback")
    await wait_until(lambda: len(pair.at_rx) == len(sent) and pair.at_tx == [b"feedback"], 5, "payloads both ways")
    assert pair.at_rx == sent  # loopback: in order, none lost
    c = pair.rx.counters()
    assert (c.packets_received, c.packets_lost, c.packets_duplicate, c.malformed) == (50, 0, 0, 0)
    assert pair.tx.counters().packets_sent == 50
    # the DTLS handshake chose the profile both preferred: AES_CM_128_HMAC_SHA1_80 (10-byte tag)
    dtls = pair.offerer.sctp.transport
    before = dtls._get_stats()
    pair.tx.send(b"x" * 20)
    await wait_until(lambda: len(pair.at_rx) == 51, 5, "one more payload")
    after = dtls._get_stats()
    grew = [a.bytesSent - b.bytesSent for a, b in zip(after.values(), before.values())]
    assert grew == [12 + 20 + 10]  # RTP header + payload + tag: no header extension, nothing else sent meanwhile
    assert rtp_packet_overhead_bytes(80) == 12 + 10 + 28


async def test_short_tag_profile_when_both_prefer_it() -> None:
    p = await connect(srtp_tag_bits=32)
    try:
        assert p.rx is not None and p.tx.start() and p.rx.start()
        await asyncio.sleep(0.3)  # the stopped aiortc sender's RTCP BYE goes out first
        dtls = p.offerer.sctp.transport
        before = list(dtls._get_stats().values())[0].bytesSent
        p.tx.send(b"y" * 20)
        await wait_until(lambda: p.at_rx == [b"y" * 20], 5, "the payload")
        assert list(dtls._get_stats().values())[0].bytesSent - before == 12 + 20 + 4
    finally:
        await p.offerer.close()
        await p.answerer.close()


async def test_aiortc_sender_reports_stop_once_quiet(pair: Pair) -> None:
    """The transceiver's own RTP sender would send RTCP reports every 0.5-1.5 s; a started channel sends none."""
    assert pair.rx is not None and pair.tx.start() and pair.rx.start()
    await asyncio.sleep(0.3)  # the BYE of the stopped senders goes out
    dtls = pair.offerer.sctp.transport
    before = list(dtls._get_stats().values())[0].packetsSent
    await asyncio.sleep(2.0)
    assert list(dtls._get_stats().values())[0].packetsSent == before  # no SR, no RR (SCTP idle: no heartbeat this soon)


async def test_an_answer_without_the_transceiver_leaves_motion_on_the_data_channel() -> None:
    """A receiver that does not read RTP motion (an older one) keeps the m-line recvonly: start() says no."""
    p = await connect(answer_rtp=False)
    try:
        assert not p.tx.start()
        with pytest.raises(ConnectionError, match="not started"):
            p.tx.send(b"x")
    finally:
        await p.offerer.close()
        await p.answerer.close()


async def test_oversize_payload_is_refused_with_the_way_out(pair: Pair) -> None:
    assert pair.tx.start()
    assert fits(b"x" * MAX_RTP_PAYLOAD_BYTES) and not fits(b"x" * (MAX_RTP_PAYLOAD_BYTES + 1)) and not fits(b"")
    with pytest.raises(ValueError, match="data channel"):
        pair.tx.send(b"x" * (MAX_RTP_PAYLOAD_BYTES + 1))


async def test_loss_reorder_duplicates_and_malformed_are_counted(pair: Pair) -> None:
    assert pair.rx is not None and pair.rx.start()
    rx = pair.rx
    pt = rx.payload_type
    assert pt is not None

    async def arrive(seq: int, payload: bytes = b"m", payload_type: int = pt) -> None:
        await rx._on_rtp(RtpPacket(payload_type=payload_type, sequence_number=seq, payload=payload), arrival_time_ms=0)

    for seq in (65534, 65535, 1, 0, 0, 3):  # wraps; 0 late; 0 again; 2 never arrives
        await arrive(seq)
    await arrive(4, b"")  # empty
    await arrive(5, b"m", pt + 1)  # another payload type
    c = rx.counters()
    assert (c.packets_received, c.packets_reordered, c.packets_duplicate, c.packets_lost, c.malformed) == (6, 1, 1, 1, 2)
    assert pair.at_rx.count(b"m") == 6  # every non-empty payload of the right type goes up (duplicates included)
