"""Which transport carries motion in a real loopback call (signaling.rtp_motion): RTP by default between Python
peers, the data channel with a peer that does not speak RTP motion; loss, reordering and a malformed packet on RTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from codec.bitstream import unpack_header
from receiver.session import Receiver, ReceiverConfig
from sender.controller import PACKET_OVERHEAD_BYTES
from sender.session import Sender, SenderConfig
from signaling.rtc import RtcOptions
from signaling.rtp_motion import rtp_packet_overhead_bytes
from signaling.server import RunningServer, ServerConfig, start_server
from tests.call_fakes import DropPackets, FakeSynthesizer, fake_reference
from tests.test_call import FPS, RecordingTraceSource, run_call

RTP = RtcOptions(host_candidates="loopback")
DATACHANNEL = RtcOptions(host_candidates="loopback", motion_transport="datachannel")


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await start_server(ServerConfig(port=0, static_dir=None))
    yield running
    await running.close()


def make_call(server: RunningServer, room: str, frames: int, sender_rtc: RtcOptions = RTP, receiver_rtc: RtcOptions = RTP,
              packet_filter=None, frames_per_packet: int | None = 1) -> tuple[Receiver, Sender, RecordingTraceSource]:
    receiver = Receiver(ReceiverConfig(server.url, room, rtc=receiver_rtc, max_frames=frames), FakeSynthesizer())
    source = RecordingTraceSource(FPS, max_frames=frames + 25)
    sender = Sender(
        SenderConfig(server.url, room, rtc=sender_rtc, max_kbps=None, frames_per_packet=frames_per_packet), source, fake_reference(),
        packet_filter=packet_filter,
    )
    return receiver, sender, source


async def test_motion_and_feedback_go_as_rtp_between_python_peers(server: RunningServer) -> None:
    frames = 75
    receiver, sender, _ = make_call(server, "rtp", frames)
    assert (await run_call(receiver, sender))[0] == "max_frames"
    (link,) = sender.link_history
    (stats,) = sender.link_stats()
    assert stats["motion_transport"] == "rtp"
    assert any(name == "motion_transport" and detail.endswith("rtp") for _, name, detail in sender.events)
    rtp = stats["rtp"]
    assert rtp["packets_sent"] >= link.packetizer.packets_sent - 2  # the first packets may precede the switch
    assert rtp["packets_received"] >= 1  # feedback came back as RTP
    report = receiver.report()
    assert report["motion_transport"] == "rtp" and report["rtp"]["packets_lost"] == 0
    assert sum(o.concealed for o in receiver.outputs) <= 3
    assert link.controller.packet_overhead_bytes == rtp_packet_overhead_bytes(80)
    # The wire cost per motion packet is the payload plus ~50 bytes, far from the data channel's ~95 + SACKs.
    seconds = stats["motion_seconds"]
    packets = stats["packets_per_s"] * seconds
    payload_per_packet = link.packetizer.bytes_sent / link.packetizer.packets_sent
    wire_per_packet = stats["wire_kbps"] * 1000 / 8 * seconds / packets
    assert wire_per_packet < payload_per_packet + rtp_packet_overhead_bytes(80) + 12, (wire_per_packet, payload_per_packet)
    assert stats["wire_kbps_reverse"] < 2.5, stats  # acks once a second as RTP, no SACK per motion packet


async def test_a_receiver_without_rtp_motion_gets_the_data_channel(server: RunningServer) -> None:
    """A receiver that does not read RTP motion (as an older one) never asks: the call runs on the data channel."""
    frames = 40
    receiver, sender, _ = make_call(server, "old-rx", frames, receiver_rtc=DATACHANNEL)
    assert (await run_call(receiver, sender))[0] == "max_frames"
    (stats,) = sender.link_stats()
    assert stats["motion_transport"] == "datachannel" and stats["rtp"]["packets_sent"] == 0
    assert receiver.report()["motion_transport"] == "datachannel"
    assert sender.link_history[0].controller.packet_overhead_bytes == PACKET_OVERHEAD_BYTES
    assert len(receiver.outputs) == frames and sum(o.concealed for o in receiver.outputs) <= 3


async def test_a_sender_without_rtp_motion_is_heard_on_the_data_channel(server: RunningServer) -> None:
    """An older sender's offer has no video m-line: the receiver finds no transceiver and asks for nothing."""
    frames = 40
    receiver, sender, _ = make_call(server, "old-tx", frames, sender_rtc=DATACHANNEL)
    assert (await run_call(receiver, sender))[0] == "max_frames"
    assert sender.link_stats()[0]["rtp"] is None
    (rx_link,) = receiver.sender_history
    assert rx_link.rtp is None and rx_link.motion_transport == "datachannel"
    assert len(receiver.outputs) == frames and rx_link.bad_control == 0


async def test_rtp_motion_under_thirty_percent_loss_keeps_the_frame_rate(server: RunningServer) -> None:
    frames = 100
    dropped: set[int] = set()
    drop = DropPackets(0.3, seed=5)

    def lossy(packet: bytes) -> bytes | None:
        out = drop(packet)
        if out is None:
            dropped.update(unpack_header(packet).seqs)
        return out

    receiver, sender, _ = make_call(server, "rtp-loss", frames, packet_filter=lossy)
    assert (await run_call(receiver, sender))[0] == "max_frames"
    outputs = list(receiver.outputs)
    assert [o.slot for o in outputs] == list(range(frames))
    first = outputs[0].seq
    assert [o.seq for o in outputs] == list(range(first, first + frames))
    lost_here = len(dropped & set(range(first, first + frames)))
    concealed = {o.seq for o in outputs if o.concealed}
    assert concealed >= dropped & set(range(first, first + frames))
    # nothing else concealed but frames that arrived after their slot (a busy 2-core machine: counted as late) and
    # a few hiccups: a loss breaks no later packet
    assert len(concealed) <= lost_here + receiver.playout.frames_late + 3, (len(concealed), lost_here, receiver.playout.frames_late)
    assert sender.link_stats()[0]["motion_transport"] == "rtp"


async def test_out_of_order_motion_packets_over_rtp_break_nothing(server: RunningServer) -> None:
    """Every 10th packet is held back and sent just after the next one (one frame interval late, out of order): the
    late one is concealed if its slot has played (the loopback playout delay is below 40 ms), nothing else is."""
    frames = 60
    held: list[bytes] = []
    held_seqs: list[int] = []
    sender_ref: list[Sender] = []

    def reorder(packet: bytes) -> bytes | None:
        if unpack_header(packet).seq % 10 == 5 and not held:
            held.append(packet)
            held_seqs.append(unpack_header(packet).seq)
            return None
        if held:
            late = held.pop()
            rx = sender_ref[0].link_history[0]
            asyncio.get_running_loop().call_soon(rx.send_motion, late)
        return packet

    receiver, sender, _ = make_call(server, "rtp-reorder", frames, packet_filter=reorder)
    sender_ref.append(sender)
    assert (await run_call(receiver, sender))[0] == "max_frames"
    outputs = list(receiver.outputs)
    first = outputs[0].seq
    assert [o.seq for o in outputs] == list(range(first, first + frames))
    hiccups = {o.seq for o in outputs if o.concealed} - set(held_seqs)
    assert len(hiccups) <= 3, hiccups  # a reordered packet breaks no other frame (tolerance: CPU hiccups)
    report = receiver.report()
    # the late ones were accepted too (a packet the decode budget refused on a busy machine counts as received here)
    assert report["packets_rejected"] == 0 and report["packets_received"] + report["packets_over_budget"] >= frames
    # (RTP-level reordering, a lower sequence number arriving after a higher one, is counted: tests/test_rtp_motion.py)


async def test_a_malformed_rtp_packet_is_rejected_and_the_call_goes_on(server: RunningServer) -> None:
    frames = 50
    corrupted = []

    def corrupt(packet: bytes) -> bytes | None:
        if unpack_header(packet).seq == 20:
            corrupted.append(packet)
            return b"\xa1\xff" + packet[2:]  # impossible flags: a clear BitstreamError at the receiver
        return packet

    receiver, sender, _ = make_call(server, "rtp-bad", frames, packet_filter=corrupt)
    assert (await run_call(receiver, sender))[0] == "max_frames"
    assert corrupted and receiver.report()["packets_rejected"] == 1
    assert len(receiver.outputs) == frames
    (link,) = sender.link_history
    assert any(e.startswith("bad_packet") for e in link.remote_errors)  # the sender heard why


async def test_thirty_percent_loss_and_fifty_ms_jitter_both_ways_keep_the_frame_rate(server: RunningServer) -> None:
    """bench.impairment drops 30 % of every media datagram (motion, feedback, control, SACKs) and delays the rest by
    0-50 ms (reordering them), both ways: the output keeps one frame per 40 ms slot and counts what it conceals."""
    from bench.impairment import Impairment, impaired

    frames = 100
    with impaired(Impairment(loss=0.3, jitter_ms=50.0, seed=2)) as counts:
        receiver, sender, _ = make_call(server, "impaired", frames)
        assert (await run_call(receiver, sender, timeout_s=45))[0] == "max_frames"
    assert counts.dropped > 0.2 * counts.media_datagrams and counts.delayed > 0
    outputs = list(receiver.outputs)
    first = outputs[0].seq
    assert [o.slot for o in outputs] == list(range(frames))
    assert [o.seq for o in outputs] == list(range(first, first + frames))  # one output per frame, in order
    report = receiver.report()
    assert 15 <= report["frames_concealed"] <= 60, report["frames_concealed"]  # ~30 % lost, all of it concealed
    assert report["frames_concealed"] == sum(o.concealed for o in outputs)
    rendered = np.array([r.rendered_ms for r in receiver.renders])
    assert float(np.median(np.diff(rendered))) == pytest.approx(40.0, abs=4.0)  # full frame rate
    assert report["playout_delay_ms"] > 20  # the playout made room for the jitter
