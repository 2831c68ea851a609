"""Audio in sync with the face (issue 23, item 2): Opus RTP beside the motion, over real WebRTC on 127.0.0.1.

The sender's trace shows a sync mark (the mouth snaps open) every second and its generated speech clicks at the same
capture time (``sender.sync_marks``); the receiver measures when it plays each click against when it rendered the open
mouth (``receiver.av_sync``). The synthesizer is the test double of tests/call_fakes.py, so the face leads the
audio here and the receiver delays the video instead (``receiver.audio_playout``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import av
import numpy as np
import pytest

from receiver import av_sync
from receiver.audio_playout import AudioPlayout
from receiver.session import Receiver, ReceiverConfig
from sender import sync_marks
from sender.audio_sender import AudioConfig, AudioSender, OpusEncoder
from sender.audio_sources import SPEECH_PEAK, AudioChunk, AudioSourceError, GeneratedSpeech, create_audio_source, default_audio_spec
from sender.session import Sender, SenderConfig
from sender.sources import TraceSource
from sender.sync_marks import MarkedSource, SyncMarks
from signaling.rtc import RtcOptions
from signaling.rtp_audio import AudioRtpPacket, capture_timestamp, unwrap_audio_timestamp
from signaling.server import RunningServer, ServerConfig, start_server
from tests.call_fakes import FakeSynthesizer, fake_reference
from tests.test_call import run_call

LOOPBACK = RtcOptions(host_candidates="loopback")
FPS = 25.0
OFFSET_GOAL_P95_MS = 40.0


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await start_server(ServerConfig(port=0, static_dir=None))
    yield running
    await running.close()


def audio_sender(marks: SyncMarks | None) -> AudioSender:
    return AudioSender(GeneratedSpeech(60, marks=marks), AudioConfig(16.0, 60))


async def test_call_with_audio_in_sync(server: RunningServer, tmp_path: Path) -> None:
    frames = 150  # 6 s: 5 marks
    record = tmp_path / "out.mp4"
    receiver = Receiver(ReceiverConfig(server.url, "av", rtc=LOOPBACK, max_frames=frames, record=record), FakeSynthesizer())
    marks = SyncMarks(period_s=1.0, first_s=0.5)
    source = MarkedSource(TraceSource(FPS, max_frames=frames + 50), marks)
    audio = audio_sender(marks)
    sender = Sender(SenderConfig(server.url, "av", rtc=LOOPBACK, max_kbps=None), source, fake_reference(), audio=audio)
    assert await run_call(receiver, sender) == ("max_frames", "stopped")

    # Both media arrived: every frame, and the sound (Opus at its rate, its packets decoded and played).
    assert len(receiver.outputs) == frames
    report = receiver.report()["audio"]
    assert report["packets"] >= 0.8 * frames / FPS / 0.06 and report["decode_errors"] == 0
    assert report["chunks_played"] >= report["packets"] - 5 and report["chunks_late"] <= 2  # the last few were still waiting
    assert 10.0 <= report["payload_kbps"] <= 20.0, report  # 16 kbps configured
    (link,) = sender.link_stats()
    assert link["audio_rtp"]["active"] and link["audio_rtp"]["packets_sent"] >= report["packets"]

    # In sync: each mark's click is played within the goal of the face that shows it.
    sync = report["sync"]
    assert source.marks_shown >= 4 and audio.source.clicks >= 4  # type: ignore[attr-defined]
    assert sync["pairs"] >= 4, sync
    assert sync["offset_ms_p95_abs"] <= OFFSET_GOAL_P95_MS, sync

    # The recording has the sound beside the video, as long as it.
    with av.open(str(record)) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
        video_frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(record)) as container:
        sound = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    assert video_frames == frames and len(sound) / 48_000 == pytest.approx(frames / FPS, abs=0.5)
    assert np.abs(sound).max() > 0.5  # the clicks made it into the file


async def test_audio_none_on_both_sides(server: RunningServer, tmp_path: Path) -> None:
    # A receiver with --audio none refuses the stream: nothing is sent, the call runs as before, no audio track recorded.
    record = tmp_path / "none.mp4"
    receiver = Receiver(ReceiverConfig(server.url, "na", rtc=LOOPBACK, max_frames=30, record=record, audio=False), FakeSynthesizer())
    sender = Sender(SenderConfig(server.url, "na", rtc=LOOPBACK, max_kbps=None), TraceSource(FPS, max_frames=80), fake_reference(),
                    audio=audio_sender(None))
    assert (await run_call(receiver, sender))[0] == "max_frames"
    (link,) = sender.link_stats()
    assert link["audio_rtp"]["active"] is False and link["audio_rtp"]["packets_sent"] == 0
    assert receiver.report()["audio"]["packets"] == 0
    with av.open(str(record)) as container:
        assert len(container.streams.audio) == 0

    # A sender without audio offers no audio m-line at all: the receiver's report says so and records video only.
    record2 = tmp_path / "none2.mp4"
    receiver2 = Receiver(ReceiverConfig(server.url, "nb", rtc=LOOPBACK, max_frames=30, record=record2), FakeSynthesizer())
    sender2 = Sender(SenderConfig(server.url, "nb", rtc=LOOPBACK, max_kbps=None), TraceSource(FPS, max_frames=80), fake_reference())
    assert (await run_call(receiver2, sender2))[0] == "max_frames"
    assert sender2.link_stats()[0]["audio_rtp"] is None
    assert all(t.kind == "video" for t in sender2.link_history[0].link.pc.getTransceivers())
    assert receiver2.sender_history[-1].audio_rtp is None
    with av.open(str(record2)) as container:
        assert len(container.streams.audio) == 0 and len(container.streams.video) == 1


def test_missing_or_malformed_audio_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AudioSourceError, match="does not exist"):
        create_audio_source(str(tmp_path / "nope.wav"))
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00not really a wave file" * 10)
    with pytest.raises(AudioSourceError, match="cannot read audio from"):
        create_audio_source(str(junk))
    silent = tmp_path / "silent.mp4"  # a video file without an audio track
    with av.open(str(silent), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 40, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(AudioSourceError, match="has no audio track"):
        create_audio_source(str(silent))
    assert default_audio_spec(str(silent)) == "none" and default_audio_spec("default") == "generated"
    with pytest.raises(AudioSourceError, match="20, 40, 60"):
        create_audio_source("generated", chunk_ms=25)


async def test_audio_file_source_and_default(tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    with av.open(str(wav), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=16_000, layout="mono")
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16_000) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(tone.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 16_000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert default_audio_spec(str(wav)) == str(wav)
    source = create_audio_source(str(wav), chunk_ms=20)
    assert source is not None
    chunks = [chunk async for chunk in source.chunks()]
    assert all(len(c.samples) == 960 for c in chunks) and len(chunks) == pytest.approx(25, abs=1)  # 0.5 s at 48 kHz
    assert [round(c.capture_ms - chunks[0].capture_ms) for c in chunks[:3]] == [0, 20, 40]


def test_marks_agree_between_sender_and_receiver() -> None:
    assert sync_marks.MOUTH_KEYPOINTS == av_sync.MOUTH_KEYPOINTS
    assert sync_marks.MOUTH_OPEN_DY > av_sync.DETECT_DY > 0.1  # speech moves the lips by ≲ 0.06
    assert sync_marks.CLICK_AMPLITUDE > av_sync.DETECT_AMPLITUDE > SPEECH_PEAK
    trace = TraceSource(FPS, max_frames=10)
    assert av_sync.mouth_open(sync_marks.open_mouth(trace.motion_at(3)))
    assert not any(av_sync.mouth_open(trace.motion_at(i)) for i in range(250))


def test_opus_round_trip_keeps_the_capture_clock() -> None:
    # A click captured at a known time comes out of the decoder at that time (libopus's look-ahead is in the pts).
    marks = SyncMarks(period_s=1.0)
    source = GeneratedSpeech(60, marks=marks)
    start_ms = 1.7e12
    marks.note(start_ms + 130.0)
    encoder = OpusEncoder(AudioConfig(16.0, 60))
    playout = AudioPlayout()
    decoded: list[tuple[np.ndarray, int]] = []
    from receiver.audio_playout import OpusDecoder

    decoder = OpusDecoder()
    for k in range(6):
        capture = start_ms + 60.0 * k
        chunk = AudioChunk(source._with_clicks(source.samples_at(2880 * k, 2880).copy(), capture), capture)  # noqa: SLF001
        from sender.audio_sources import to_int16

        chunk = AudioChunk(to_int16(chunk.samples), capture)
        for packet in encoder.encode(chunk):
            ts = capture_timestamp(packet.timestamp_samples / 48)
            pts = int(round(unwrap_audio_timestamp(ts, capture + 80.0) * 48))
            assert pts == packet.timestamp_samples
            decoded += decoder.decode(packet.payload, pts)
    first = min(p for _, p in decoded)
    sound = np.zeros(max(p for _, p in decoded) - first + 2880, np.int16)
    for samples, pts in decoded:
        sound[pts - first: pts - first + len(samples)] = samples
    onset_ms = (first + int(np.flatnonzero(np.abs(sound.astype(np.int32)) > 0.6 * 32767)[0])) / 48
    assert onset_ms - (start_ms + 130.0) == pytest.approx(0.0, abs=2.0)
    assert playout.report()["packets"] == 0


async def test_playout_delays_audio_to_the_face_latency() -> None:
    # A slow renderer (the face 150 ms after capture): the audio waits as long; the video is not delayed.
    from receiver.playout import PlayoutBuffer, PlayoutFrame
    from codec.motion import MotionParams

    video = PlayoutBuffer()
    playout = AudioPlayout(video)
    now = 1.7e12
    for i in range(30):
        frame = PlayoutFrame(i, 1, i, now, MotionParams.neutral(), now - 150.0, False, now)
        playout.on_video_rendered(frame, now)
    encoder = OpusEncoder(AudioConfig(16.0, 60))
    played: list[float] = []
    playout.add_output(lambda p: played.append(p.played_ms - p.capture_ms))
    for k in range(3):  # packets arriving in real time, 70 ms after their capture
        now_ms = time.time() * 1000.0
        for packet in encoder.encode(AudioChunk(np.zeros(2880, np.int16), now_ms - 70.0)):
            playout.on_packet(AudioRtpPacket(7, k, capture_timestamp(packet.timestamp_samples / 48), packet.payload, now_ms))
        await asyncio.sleep(0.06)
    assert playout.delay_ms == pytest.approx(150.0)
    await asyncio.sleep(0.3)
    assert played and all(d == pytest.approx(150.0, abs=15.0) for d in played)
    assert playout.video_floor_ms < 100.0  # below what the video already takes (150 ms): the video is not delayed further
    playout.close()
