"""End to end over real WebRTC on 127.0.0.1: signaling + sender (synthetic trace) + receiver.

The peers use the "loopback" host-candidate policy, so every packet stays on 127.0.0.1; the
synthesizer is the instant test double of tests/call_fakes.py (the real model has its own test).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from codec.bitstream import unpack_header
from codec.prediction import MotionDepacketizer, MotionPacketizer
from codec.quantize import get_preset
from receiver import session as receiver_session
from receiver.playout import PlayoutFrame
from receiver.session import Receiver, ReceiverConfig
from sender.controller import PACKET_OVERHEAD_BYTES
from sender.session import Sender, SenderConfig
from sender.sources import TraceSource
from signaling.rtc import RtcOptions
from signaling.server import RunningServer, ServerConfig, start_server
from tests.call_fakes import DropPackets, FakeSynthesizer, fake_reference, wait_until

LOOPBACK = RtcOptions(host_candidates="loopback")
REPO = Path(__file__).resolve().parent.parent
FPS = 25.0


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await start_server(ServerConfig(port=0, static_dir=None))
    yield running
    await running.close()


def record_playout(receiver: Receiver) -> list[PlayoutFrame]:
    """Every PlayoutFrame the receiver emits, with its motion."""
    played: list[PlayoutFrame] = []
    pop_due = receiver.playout.pop_due

    def wrapped(now_ms: float) -> list[PlayoutFrame]:
        out = pop_due(now_ms)
        played.extend(out)
        return out

    receiver.playout.pop_due = wrapped  # type: ignore[method-assign]
    return played


async def run_call(receiver: Receiver, sender: Sender, timeout_s: float = 30.0) -> tuple[str, str]:
    rtask = asyncio.ensure_future(receiver.run())
    stask = asyncio.ensure_future(sender.run())
    try:
        rreason = await asyncio.wait_for(rtask, timeout_s)
    finally:
        sender.stop()
        sreason = await asyncio.wait_for(stask, 10)
    return rreason, sreason


class RecordingTraceSource(TraceSource):
    """The trace source, remembering which trace frame each frame it gave the sender was: a paced source that falls
    behind real time (a CPU hiccup on a shared machine) skips trace frames, as a camera would, so the sender's
    sequence number k need not carry trace frame k."""

    def __init__(self, fps: float, max_frames: int) -> None:
        super().__init__(fps, max_frames=max_frames)
        self.indices: list[int] = []

    async def frames(self) -> AsyncIterator[Any]:
        async for frame in super().frames():
            self.indices.append(frame.index)
            yield frame

    def sent_motion(self, seq: int) -> Any:
        """The motion the sender sent as sequence number ``seq`` (frames it never took: the trace's own)."""
        return self.motion_at(self.indices[seq] if seq < len(self.indices) else seq)


def expected_motion(source: RecordingTraceSource, frame: PlayoutFrame, preset_id: int) -> Any:
    """The sender's motion for this sequence number, quantized the way the packet carried it."""
    preset = get_preset(preset_id)
    return preset.dequantize(preset.quantize(source.sent_motion(frame.seq).with_present(frame.motion.present)))


def simulated_bytes_per_frame(source: RecordingTraceSource, frames: int, preset_id: int, feedback_every: int) -> float:
    """One frame per packet; the receiver acks at once after a KEY and then every ``feedback_every``
    frames (its 1 s feedback interval), and the ack reaches the sender a frame later."""
    packetizer, depacketizer = MotionPacketizer(1, preset_id, 1), MotionDepacketizer()
    sizes, pending_ack = [], None
    for i in range(frames):
        if pending_ack is not None:
            packetizer.on_feedback(pending_ack)
            pending_ack = None
        packet = packetizer.push(source.sent_motion(i), i * 40)
        assert packet is not None
        sizes.append(len(packet))
        decoded = depacketizer.receive(packet)
        if any(f.key for f in decoded) or i % feedback_every == 0:
            pending_ack = depacketizer.feedback()
    return sum(sizes) / len(sizes)


async def test_call_end_to_end(server: RunningServer, tmp_path: Path) -> None:
    frames = 60
    synth = FakeSynthesizer()
    record = tmp_path / "out.mp4"
    receiver = Receiver(ReceiverConfig(server.url, "e2e", rtc=LOOPBACK, max_frames=frames, record=record, cache_dir=tmp_path / "cache"), synth)
    played = record_playout(receiver)
    source = RecordingTraceSource(FPS, max_frames=frames + 25)
    sender = Sender(SenderConfig(server.url, "e2e", rtc=LOOPBACK, max_kbps=None), source, fake_reference())
    assert await run_call(receiver, sender) == ("max_frames", "stopped")

    # One output frame per sender frame, in order, starting at the sender's first frame.
    outputs = list(receiver.outputs)
    assert [o.slot for o in outputs] == list(range(frames))
    assert [o.seq for o in outputs] == list(range(frames))
    concealed = sum(o.concealed for o in outputs)
    assert concealed <= 3, f"{concealed} of {frames} frames concealed on loopback"  # tolerance: CPU hiccups on a shared machine
    (link,) = sender.link_history
    assert link.packetizer.frames_sent >= frames

    # What was decoded is exactly the sender's quantized motion.
    decoded = [f for f in played if not f.concealed]
    assert len(decoded) >= frames - 3
    assert link.rung is not None and [d.rung for d in link.controller.decisions] == [link.rung]  # one setting all along
    for frame in decoded:
        diff = frame.motion.max_abs_difference(expected_motion(source, frame, link.rung.preset_id))
        assert max(diff.values()) < 1e-4, (frame.seq, diff)

    # Motion bytes per frame as the bitstream predicts (the same trace, setting and feedback schedule
    # through MotionPacketizer/MotionDepacketizer offline), and nothing added in transit.
    (rx_link,) = receiver.sender_history
    assert link.rung is not None and link.rung.frames_per_packet == 1 and link.rung.keypoints == 20
    assert rx_link.payload_bytes <= link.packetizer.bytes_sent
    predicted = simulated_bytes_per_frame(source, rx_link.packets, link.rung.preset_id, feedback_every=25)
    bytes_per_frame = rx_link.payload_bytes / rx_link.packets
    # (15 %: on a busy 2-core machine an ack can reach the sender a few frames later than simulated, and a longer
    # reference distance costs bits; measured up to +12 % in a full run, 0-3 % when quiet)
    assert bytes_per_frame == pytest.approx(predicted, rel=0.15), (bytes_per_frame, predicted)
    # The sender's transport carried at least the data-channel cost of every motion packet.
    wire = link.link.counters().wire_bytes_sent
    motion_wire = link.packetizer.bytes_sent + link.packetizer.packets_sent * (PACKET_OVERHEAD_BYTES - 2)
    assert wire >= motion_wire

    # The reference crossed once; the recording holds one frame per output frame at the call's rate.
    assert link.reference_sent == 1 and link.reference_skipped == 0 and synth.prepared == 1
    with av.open(str(record)) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == pytest.approx(FPS)
        assert sum(1 for _ in container.decode(stream)) == frames

    # Glass-to-glass latency of this loopback call with an instant renderer.
    latencies = [r.rendered_ms - r.capture_ms for r in receiver.renders if not r.concealed]
    assert 0 < float(np.median(latencies)) < 100


async def test_reference_is_not_resent_when_cached(server: RunningServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = Receiver(ReceiverConfig(server.url, "cache", rtc=LOOPBACK, max_frames=10, cache_dir=cache), FakeSynthesizer())
    sender1 = Sender(SenderConfig(server.url, "cache", rtc=LOOPBACK), TraceSource(FPS, max_frames=40), fake_reference())
    await run_call(first, sender1)
    assert [(rx.reference_sent, rx.reference_skipped) for rx in sender1.link_history] == [(1, 0)]

    # A new receiver process (same cache directory) and a new sender: the portrait is not sent again.
    synth = FakeSynthesizer()
    second = Receiver(ReceiverConfig(server.url, "cache", rtc=LOOPBACK, max_frames=10, cache_dir=cache), synth)
    sender2 = Sender(SenderConfig(server.url, "cache", rtc=LOOPBACK), TraceSource(FPS, max_frames=40), fake_reference())
    assert (await run_call(second, sender2))[0] == "max_frames"
    assert [(rx.reference_sent, rx.reference_skipped) for rx in sender2.link_history] == [(0, 1)]
    assert any(name == "reference_ready" and detail.endswith("cached") for _, name, detail in second.events)
    assert synth.prepared == 1 and len(second.outputs) == 10


async def test_thirty_percent_of_motion_packets_dropped(server: RunningServer) -> None:
    frames = 100
    dropped_seqs: set[int] = set()
    drop = DropPackets(0.3, seed=3)

    def lossy(packet: bytes) -> bytes | None:
        out = drop(packet)
        if out is None:
            dropped_seqs.update(unpack_header(packet).seqs)
        return out

    receiver = Receiver(ReceiverConfig(server.url, "loss", rtc=LOOPBACK, max_frames=frames), FakeSynthesizer())
    source = RecordingTraceSource(FPS, max_frames=frames + 25)
    sender = Sender(SenderConfig(server.url, "loss", rtc=LOOPBACK, max_kbps=None, frames_per_packet=1), source, fake_reference(), packet_filter=lossy)
    assert (await run_call(receiver, sender))[0] == "max_frames"

    outputs = list(receiver.outputs)
    assert [o.slot for o in outputs] == list(range(frames))  # the frame count is kept
    first = outputs[0].seq  # the first frame that arrived (frame 0 may have been dropped)
    assert first == min(set(range(frames)) - dropped_seqs)
    assert [o.seq for o in outputs] == list(range(first, first + frames))  # one output per sender frame, in order
    span = set(range(first, first + frames))
    lost_here = len(dropped_seqs & span)
    assert 20 <= lost_here <= 40, lost_here  # the seeded 30 %
    concealed = [o.seq for o in outputs if o.concealed]
    assert set(concealed) >= dropped_seqs & span  # every lost frame was concealed ...
    assert len(concealed) <= lost_here + 3  # ... and (nearly) nothing else: losses do not break later packets
    # Pacing: rendered frames keep the sender's 40 ms rhythm.
    rendered = np.array([r.rendered_ms for r in receiver.renders])
    assert len(rendered) == frames
    gaps = np.diff(rendered)
    assert float(np.median(gaps)) == pytest.approx(40.0, abs=4.0)
    assert float(np.percentile(np.abs(gaps - 40.0), 90)) < 20.0, gaps
    assert receiver.stats()["frames_concealed"] == len(concealed)


async def test_receiver_ends_cleanly_when_the_sender_leaves(server: RunningServer) -> None:
    receiver = Receiver(ReceiverConfig(server.url, "leave", rtc=LOOPBACK, exit_when_sender_leaves=True), FakeSynthesizer())
    sender = Sender(SenderConfig(server.url, "leave", rtc=LOOPBACK), TraceSource(FPS, max_frames=20), fake_reference())
    rreason, sreason = await run_call(receiver, sender, timeout_s=20)
    assert (rreason, sreason) == ("sender_left", "source_ended")
    assert len(receiver.outputs) >= 19


async def test_killed_sender_is_reported_and_a_restarted_sender_rejoins(server: RunningServer) -> None:
    receiver = Receiver(ReceiverConfig(server.url, "kill", rtc=LOOPBACK), FakeSynthesizer())
    rtask = asyncio.ensure_future(receiver.run())
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.call_fakes", "sender", "--url", server.url, "--room", "kill"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        await wait_until(lambda: len(receiver.outputs) >= 25, 30, "25 frames from the sender process")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await wait_until(lambda: any(name == "sender_left" for _, name, _ in receiver.events), 10, "the receiver to report the sender left")
        assert not rtask.done()
        await wait_until(lambda: receiver.playout.stalled, 5, "playout to stall")
        stalled_at = len(receiver.outputs)
        await asyncio.sleep(0.3)
        assert len(receiver.outputs) == stalled_at  # no output runs ahead of a missing sender

        sender = Sender(SenderConfig(server.url, "kill", rtc=LOOPBACK), TraceSource(FPS, max_frames=200), fake_reference())
        stask = asyncio.ensure_future(sender.run())
        await wait_until(lambda: len(receiver.outputs) >= stalled_at + 25, 20, "frames from the restarted sender")
        outputs = list(receiver.outputs)
        assert [o.slot for o in outputs] == list(range(len(outputs)))  # output numbering continues
        assert outputs[-1].stream_id == sender.link_history[0].stream_id  # the restarted sender's stream
        assert [(rx.reference_sent, rx.reference_skipped) for rx in sender.link_history] == [(0, 1)]  # cached
        sender.stop()
        await asyncio.wait_for(stask, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        receiver.stop()
        assert await asyncio.wait_for(rtask, 10) == "stopped"


async def test_malformed_packets_and_messages_get_error_replies(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from sender import session as sender_session

    monkeypatch.setattr(receiver_session, "ERROR_REPLY_INTERVAL_S", 0.0)
    monkeypatch.setattr(sender_session, "ERROR_REPLY_INTERVAL_S", 0.0)
    frames = 60
    rng = np.random.default_rng(0)
    corrupted = 0

    def corrupt(packet: bytes) -> bytes | None:
        nonlocal corrupted
        if rng.random() < 0.2:
            corrupted += 1
            kind = corrupted % 3
            if kind == 0:
                return bytes(rng.integers(0, 256, len(packet), dtype=np.uint8))
            if kind == 1:
                return packet[:3]
            return b"\xff" * 9000
        return packet

    receiver = Receiver(ReceiverConfig(server.url, "bad", rtc=LOOPBACK, max_frames=frames), FakeSynthesizer())
    sender = Sender(
        SenderConfig(server.url, "bad", rtc=LOOPBACK, max_kbps=None, frames_per_packet=1), TraceSource(FPS, max_frames=frames * 4),
        fake_reference(), packet_filter=corrupt,
    )
    rtask = asyncio.ensure_future(receiver.run())
    stask = asyncio.ensure_future(sender.run())
    await wait_until(lambda: len(receiver.outputs) >= 10, 20, "the call to start")
    (link,) = sender.link_history
    (rx_link,) = receiver.sender_history
    assert link.control is not None and rx_link.control is not None
    # Junk on the reliable channel, both ways.
    for junk in ("not json", '{"type": "hello"}', '{"type": "warp", "x": 1}', b"KC\x01" + b"\x00" * 60):
        link.control.send(junk)
    for junk_rx in ("[1, 2", '{"type": "reference_status", "content_hash": "zz", "have": true}', b"\x99\x00garbage"):
        rx_link.control.send(junk_rx)
    # The source outlasts the receiver (stopped below): a receiver that starts late under load still gets its frames.
    assert await asyncio.wait_for(rtask, 30) == "max_frames"
    sender.stop()
    await asyncio.wait_for(stask, 10)

    assert corrupted >= 5
    codes = [e.split(":")[0] for e in link.remote_errors]
    assert "bad_packet" in codes and "bad_message" in codes and "bad_reference" in codes, link.remote_errors
    assert rx_link.bad_packets >= corrupted - 2  # (a corrupt packet can in principle still parse; none did here)
    assert [e.split(":")[0] for e in rx_link.remote_errors].count("bad_message") >= 2 and "bad_feedback" in str(rx_link.remote_errors)
    assert [o.slot for o in receiver.outputs] == list(range(frames))  # nothing broke


async def test_viewer_gets_video_stats_and_controls_the_call(server: RunningServer) -> None:
    from signaling import control as c
    from tests.call_fakes import PyViewer

    views: list[str] = []

    def parse_view(text: str) -> str:
        if not text.startswith(("frontal", "yaw=")):
            raise ValueError(f"bad view {text!r}")
        views.append(text)
        return text

    def crop(image: np.ndarray, size: int) -> np.ndarray:
        return np.ascontiguousarray(image[:size, :size])

    def retarget(motion: Any, source_ref: Any, avatar_ref: Any) -> Any:
        return type(motion)(77.0, 0, 0, motion.translation, motion.expression, motion.present)

    synth = FakeSynthesizer()
    receiver = Receiver(
        ReceiverConfig(server.url, "view", rtc=LOOPBACK, stats_interval_s=0.3), synth,
        view_parser=parse_view, face_crop=crop, retarget=retarget,
    )
    sender = Sender(SenderConfig(server.url, "view", rtc=LOOPBACK, max_kbps=None), TraceSource(FPS, max_frames=1000), fake_reference())
    rtask, stask = asyncio.ensure_future(receiver.run()), asyncio.ensure_future(sender.run())
    viewer = PyViewer(server.url, "view")
    try:
        await wait_until(lambda: len(receiver.renders) >= 5, 20, "rendering")
        await viewer.start()
        await wait_until(lambda: len(viewer.frames) >= 10 and viewer.channel is not None, 20, "video at the viewer")
        assert viewer.frames[-1].shape == (32, 32, 3) and viewer.frames[-1][0, :, 0].mean() > 60  # the rendered frames, not the grey idle one
        await wait_until(lambda: any(isinstance(x, c.Stats) for x in viewer.messages), 5, "stats")
        kinds = {type(x).__name__ for x in viewer.messages}
        assert {"Status", "RateDecision", "Stats"} <= kinds, kinds
        stats = next(x for x in viewer.messages if isinstance(x, c.Stats))
        assert stats.source == "receiver" and stats.values["frames_output"] > 0

        viewer.send(c.Command(keypoints=5, max_kbps=4.0))  # forwarded to the sender's controller
        await wait_until(lambda: any(isinstance(x, c.RateDecision) and x.keypoints == 5 for x in viewer.messages), 10, "K=5 decision")
        (link,) = sender.link_history
        assert link.controller.pin_keypoints == 5 and link.controller.max_kbps == 4.0
        viewer.send(c.Command(view="yaw=30,pitch=0,roll=0"))
        viewer.send(c.Command(view="sideways"))
        viewer.send("{not json")
        await wait_until(lambda: sum(isinstance(x, c.ErrorReply) for x in viewer.messages) >= 1, 5, "error replies")
        assert views == ["yaw=30,pitch=0,roll=0"] and receiver.view == "yaw=30,pitch=0,roll=0"

        png = __import__("io").BytesIO()
        __import__("PIL.Image", fromlist=["Image"]).fromarray(np.full((64, 64, 3), 90, np.uint8)).save(png, format="PNG")
        for chunk in c.avatar_chunks(png.getvalue(), upload_id=1):
            viewer.send(chunk)
        await wait_until(lambda: receiver.avatar_state is not None, 10, "the avatar")
        await wait_until(lambda: synth.rendered[-1].yaw == 77.0, 5, "avatar-driven renders")
        viewer.send(c.Command(avatar="reset"))
        await wait_until(lambda: receiver.avatar_state is None, 5, "avatar reset")
    finally:
        await viewer.close()
        receiver.stop()
        sender.stop()
        await asyncio.wait_for(asyncio.gather(rtask, stask), 15)


async def test_call_with_the_real_synthesizer(server: RunningServer, tmp_path: Path) -> None:
    """The real FrameSynthesizer (its tiny 64² preset, random weights) behind the same call."""
    from codec.model import FrameSynthesizer
    from PIL import Image

    from sender.portrait import default_portrait, make_reference

    synth = FrameSynthesizer(preset="tiny", device="cpu", cache_dir=tmp_path / "states")
    size = synth.image_size

    def resize_crop(image: np.ndarray, output_size: int) -> np.ndarray:  # the astronaut's face region, no detector
        return np.asarray(Image.fromarray(image[20:276, 120:376]).resize((output_size, output_size)))

    reference = make_reference(default_portrait(), size, synth.model_id, synth.model_version, crop=resize_crop)
    frames = 40
    record = tmp_path / "real.mp4"
    receiver = Receiver(ReceiverConfig(server.url, "real", rtc=LOOPBACK, max_frames=frames, record=record), synth)
    source = TraceSource(FPS, num_keypoints=synth.num_keypoints, max_frames=frames + 25)
    sender = Sender(SenderConfig(server.url, "real", rtc=LOOPBACK), source, reference)
    assert await run_call(receiver, sender) == ("max_frames", "stopped")
    report = receiver.report()
    assert report["frames_output"] == frames and report["frames_concealed"] <= 3 and report["render_errors"] == 0
    assert report["frames_rendered"] >= frames // 2  # latest wins if a render is slow; the recording repeats
    with av.open(str(record)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
    assert len(decoded) == frames and decoded[0].shape == (size, size, 3)
    assert float(np.std(decoded[-1])) > 5  # a picture, not a flat frame
