"""Motion riding inside the audio's RTP packets (issue 21, signaling.audio_motion, sender.motion_rider): the format, and
real loopback calls: riding, a receiver or sender that does not do it, a malformed prefix, lost audio packets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from codec.bitstream import unpack_header
from receiver.session import Receiver, ReceiverConfig
from sender.audio_sender import AudioConfig, AudioSender
from sender.audio_sources import GeneratedSpeech
from sender.motion_rider import default_wait_ms
from sender.session import Sender, SenderConfig
from signaling import audio_motion, rtp_audio
from signaling.audio_motion import MAX_MESSAGES, MAX_RIDE_BYTES, AudioMotionError, pack_riding, prefix_bytes, unpack_riding
from signaling.rtc import RtcOptions
from signaling.rtp_audio import AudioRtpChannel
from signaling.server import RunningServer, ServerConfig, start_server
from tests.call_fakes import FakeSynthesizer, fake_reference
from tests.test_call import FPS, RecordingTraceSource, run_call

RIDING = RtcOptions(host_candidates="loopback")  # the default: rtp+audio
PLAIN_RTP = RtcOptions(host_candidates="loopback", motion_transport="rtp")


# -- the format ------------------------------------------------------------------------------------
def test_pack_and_unpack_round_trip() -> None:
    messages = [b"\x01" * 19, b"\x02" * 200, b"\x03"]
    payload = pack_riding(messages, b"OPUS")
    assert payload[0] == 3 and payload[1] == 19 and payload[21:23] == bytes([0xC8, 0x01])  # 200 as a 2-byte varint
    riding = unpack_riding(payload)
    assert riding.messages == tuple(messages) and riding.opus == b"OPUS"
    assert riding.prefix_bytes == len(payload) - 4 == prefix_bytes(messages) == 1 + 1 + 19 + 2 + 200 + 1 + 1


def test_pack_refuses_what_cannot_ride() -> None:
    with pytest.raises(ValueError, match="carries 1..4"):
        pack_riding([b"m"] * (MAX_MESSAGES + 1), b"o")
    with pytest.raises(ValueError, match="carries 1..4"):
        pack_riding([], b"o")
    with pytest.raises(ValueError, match="empty motion message"):
        pack_riding([b""], b"o")
    with pytest.raises(ValueError, match="empty Opus packet"):
        pack_riding([b"m"], b"")
    with pytest.raises(ValueError, match="exceeds 1200: send it as its own RTP packet"):
        pack_riding([b"m" * 1100], b"o" * 100)
    assert audio_motion.fits([b"m" * (MAX_RIDE_BYTES - 4)], 1) and not audio_motion.fits([b"m" * (MAX_RIDE_BYTES - 3)], 1)


@pytest.mark.parametrize(("payload", "error"), [
    (b"", "empty audio payload with the marker set: no motion count"),
    (b"\x00opus", "motion count 0 in an audio packet is outside 1..4"),
    (b"\x05\x01mopus", "motion count 5 in an audio packet is outside 1..4"),
    (b"\x01", "motion message 1 of 1: length varint at byte 1 is truncated"),
    (b"\x01\x80\x00mo", "motion message 1 of 1: length varint at byte 1 is non-minimal"),
    (b"\x01\x00opus", "motion message 1 of 1 has length 0"),
    (b"\x02\x01m\x09opus", "motion message 2 of 2 (9 bytes at byte 4) runs past the end of the 8-byte audio payload"),
    (b"\x01\x03mmm", "no Opus packet after 1 motion message(s) (5 bytes, all prefix)"),
    (b"\x01\x01m" + b"o" * 1200, "audio payload of 1203 bytes with motion exceeds 1200"),
])
def test_malformed_prefixes_are_rejected_with_the_reason(payload: bytes, error: str) -> None:
    with pytest.raises(AudioMotionError) as info:
        unpack_riding(payload)
    assert str(info.value) == error


def test_default_wait_is_one_audio_frame_at_most_20_ms() -> None:
    assert [default_wait_ms(ms) for ms in (20, 40, 60)] == [20.0, 20.0, 20.0]
    assert default_wait_ms(10) == 10.0


# -- real calls --------------------------------------------------------------------------------------
@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await start_server(ServerConfig(port=0, static_dir=None))
    yield running
    await running.close()


def make_call(server: RunningServer, room: str, frames: int, frame_ms: int = 40, sender_rtc: RtcOptions = RIDING,
              receiver_rtc: RtcOptions = RIDING, receiver_audio: bool = True) -> tuple[Receiver, Sender]:
    receiver = Receiver(ReceiverConfig(server.url, room, rtc=receiver_rtc, max_frames=frames, audio=receiver_audio), FakeSynthesizer())
    source = RecordingTraceSource(FPS, max_frames=frames + 25)
    audio = AudioSender(GeneratedSpeech(frame_ms), AudioConfig(16.0, frame_ms))
    sender = Sender(SenderConfig(server.url, room, rtc=sender_rtc, max_kbps=None, frames_per_packet=1), source, fake_reference(),
                    audio=audio)
    return receiver, sender


async def test_motion_rides_in_the_audio_packets(server: RunningServer) -> None:
    frames = 100  # 4 s at 25 fps, 40 ms Opus frames: one audio packet per motion frame
    receiver, sender = make_call(server, "ride", frames)
    assert await run_call(receiver, sender) == ("max_frames", "stopped")
    (stats,) = sender.link_stats()
    assert stats["motion_transport"] == "rtp+audio"
    riding = stats["motion_in_audio"]
    assert riding["wait_ms"] == 20.0 and riding["hold_ms"] == 20.0
    # nearly every message rode (the first ones precede the periods' estimates; a CPU hiccup may miss a deadline)
    assert riding["messages_ridden"] >= 0.8 * riding["messages"] and riding["messages"] >= frames - 5, riding
    assert riding["messages_ridden"] + riding["messages_alone"] == riding["messages"] and riding["send_errors"] == 0
    audio = stats["audio_rtp"]
    assert audio["motion_messages_sent"] == riding["messages_ridden"] and audio["motion_packets_sent"] >= 0.8 * riding["messages_ridden"]
    # each message rode for its own bytes plus ~2: the count and its length
    assert audio["motion_bytes_sent"] <= stats["payload_bytes"] + 2 * audio["motion_messages_sent"]
    assert stats["rtp"]["packets_sent"] == riding["messages_alone"]

    report = receiver.report()
    assert report["motion_transport"] == "rtp+audio"
    assert report["audio_rtp"]["motion_messages_received"] == audio["motion_messages_sent"]
    assert report["audio_rtp"]["motion_malformed"] == 0 and report["packets_rejected"] == 0
    # every frame decoded, and the sound played (its Opus bytes separated from the motion)
    assert len(receiver.outputs) == frames and sum(o.concealed for o in receiver.outputs) <= 3
    assert report["frames_lost_in_transit"] == 0
    assert report["audio"]["decode_errors"] == 0 and report["audio"]["packets"] >= 0.8 * frames * 40 / 1000 / 0.04
    assert report["rtp"]["packets_received"] >= 1 or stats["rtp"]["packets_received"] >= 1  # feedback came back as RTP


async def test_a_receiver_that_does_not_ask_gets_plain_rtp_motion(server: RunningServer) -> None:
    frames = 40
    receiver, sender = make_call(server, "no-ask", frames, receiver_rtc=PLAIN_RTP)
    assert (await run_call(receiver, sender))[0] == "max_frames"
    (stats,) = sender.link_stats()
    assert stats["motion_transport"] == "rtp" and stats["motion_in_audio"] is None
    assert stats["audio_rtp"]["active"] and stats["audio_rtp"]["motion_packets_sent"] == 0
    assert stats["rtp"]["packets_sent"] >= frames - 3
    assert receiver.report()["motion_transport"] == "rtp" and len(receiver.outputs) == frames

    # A receiver that does not play the audio never asks either.
    receiver2, sender2 = make_call(server, "no-audio", frames, receiver_audio=False)
    assert (await run_call(receiver2, sender2))[0] == "max_frames"
    assert sender2.link_stats()[0]["motion_transport"] == "rtp" and len(receiver2.outputs) == frames


async def test_a_sender_that_declines_keeps_plain_rtp(server: RunningServer) -> None:
    """A sender with --motion-transport rtp answers no_audio_riding; the receiver goes on with plain RTP motion."""
    frames = 40
    receiver, sender = make_call(server, "decline", frames, sender_rtc=PLAIN_RTP)
    assert (await run_call(receiver, sender))[0] == "max_frames"
    (stats,) = sender.link_stats()
    assert stats["motion_transport"] == "rtp" and stats["audio_rtp"]["motion_packets_sent"] == 0
    (link,) = receiver.sender_history
    assert any(e.startswith("no_audio_riding") for e in link.remote_errors)
    assert link.motion_transport == "rtp" and len(receiver.outputs) == frames
    assert sum(o.concealed for o in receiver.outputs) <= 3


async def test_a_malformed_prefix_is_rejected_and_the_call_goes_on(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = 60
    calls = 0

    def corrupt_tenth(messages: Sequence[bytes], opus: bytes) -> bytes:
        nonlocal calls
        calls += 1
        payload = audio_motion.pack_riding(messages, opus)
        return b"\x07" + payload[1:] if calls == 10 else payload  # an impossible count: the receiver cannot split it

    monkeypatch.setattr(rtp_audio, "pack_riding", corrupt_tenth)
    receiver, sender = make_call(server, "bad-prefix", frames)
    assert (await run_call(receiver, sender))[0] == "max_frames"
    assert calls >= 10
    report = receiver.report()
    assert report["audio_rtp"]["motion_malformed"] == 1 and report["packets_rejected"] == 1
    assert len(receiver.outputs) == frames
    (link,) = sender.link_history
    assert any(e.startswith("bad_packet") and "motion count 7" in e for e in link.remote_errors)  # the sender heard why


async def test_lost_audio_packets_conceal_their_motion_frames(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = 100
    dropped: set[int] = set()
    send = AudioRtpChannel.send
    count = 0

    def lossy(self: AudioRtpChannel, payload: bytes, timestamp: int, motion: Sequence[bytes] = ()) -> Any:
        nonlocal count
        if motion:
            count += 1
            if count % 4 == 0:  # a quarter of the audio packets carrying motion never arrive
                for message in motion:
                    dropped.update(unpack_header(message).seqs)
                self.packets_sent += 1
                return None
        return send(self, payload, timestamp, motion)

    monkeypatch.setattr(AudioRtpChannel, "send", lossy)
    receiver, sender = make_call(server, "audio-loss", frames)
    assert (await run_call(receiver, sender))[0] == "max_frames"
    outputs = list(receiver.outputs)
    assert [o.slot for o in outputs] == list(range(frames))
    first = outputs[0].seq
    assert [o.seq for o in outputs] == list(range(first, first + frames))
    lost_here = dropped & set(range(first, first + frames))
    assert len(lost_here) >= 10
    concealed = {o.seq for o in outputs if o.concealed}
    assert concealed >= lost_here and len(concealed) <= len(lost_here) + 3
    assert receiver.report()["frames_lost_in_transit"] >= len(lost_here) - 2
