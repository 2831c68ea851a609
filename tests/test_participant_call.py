"""Three participants in one call, in one process over loopback WebRTC: everyone renders everyone else, the speaker
schedule favours who talks, and a participant that leaves is seen to leave and to come back.

The renderer is the test double (tests.call_fakes.FakeSynthesizer); ``bench call --participants N`` runs real
processes with the real model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from participant.call import Participant, ParticipantConfig
from sender.audio_sender import AudioSender
from sender.audio_sources import GeneratedSpeech
from sender.sources import TraceSource
from signaling.rtc import RtcOptions
from signaling.server import RunningServer, ServerConfig, start_server
from tests.call_fakes import FakeSynthesizer, fake_reference, wait_until

LOOPBACK = RtcOptions(host_candidates="loopback")
OTHERS_FPS = 10.0


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await start_server(ServerConfig(host="127.0.0.1", port=0))
    try:
        yield running
    finally:
        await running.close()


def _participant(server: RunningServer, seed: int, speaks: bool, tmp_path: Path, speaker: bool = False) -> Participant:
    config = ParticipantConfig(server.url, "team", rtc=LOOPBACK, others_fps=OTHERS_FPS, max_kbps=None,
                               speaker=str(tmp_path / f"heard-{seed}.wav") if speaker else None)
    audio = AudioSender(GeneratedSpeech(seed=seed)) if speaks else None
    return Participant(config, FakeSynthesizer(), TraceSource(25.0, seed=seed), fake_reference(seed=seed), audio=audio)


def _heard_rms(path: Path) -> tuple[float, float]:
    """(seconds, RMS in [0, 1]) of a WAV the loudspeaker wrote."""
    import av

    with av.open(str(path)) as container:
        samples = np.concatenate([frame.to_ndarray().ravel() for frame in container.decode(audio=0)])
    return samples.size / 48000.0, float(np.sqrt(np.mean(np.square(samples.astype(np.float64) / 32768.0))))


def _rendered(participant: Participant, remote: str) -> int:
    receiver = participant.receivers.get(remote)
    return 0 if receiver is None else len(receiver.renders)


async def test_three_participants_see_each_other_and_the_speaker_gets_the_frames(server: RunningServer, tmp_path: Path) -> None:
    talker = _participant(server, 1, speaks=True, tmp_path=tmp_path)
    quiet = [_participant(server, seed, speaks=False, tmp_path=tmp_path, speaker=seed == 2) for seed in (2, 3)]
    everyone = [talker, *quiet]
    tasks = []
    try:
        for participant in everyone:
            tasks.append(asyncio.ensure_future(participant.run()))
            await asyncio.sleep(0.3)
        ids = [p.peer_id for p in everyone]
        # everyone renders both others
        await wait_until(lambda: all(_rendered(p, q) > 10 for p in everyone for q in ids if q != p.peer_id), 30,
                         "every participant rendering both others")
        listener, other_quiet = quiet[0], quiet[1]
        # the listener hears the talker: the talker becomes its active speaker, rendered at the full rate, the other at 10 fps
        await wait_until(lambda: listener.schedule.active == talker.peer_id, 15, "the talker as the listener's active speaker")
        start = {r: _rendered(listener, r) for r in (talker.peer_id, other_quiet.peer_id)}
        await asyncio.sleep(4.0)
        fps = {r: (_rendered(listener, r) - start[r]) / 4.0 for r in start}
        # (the full rate is 25 fps; three participants on 2 busy cores rendered the talker at 19.5 once, 2026-12-07:
        # the test asks for a rate well above the others' 10 fps schedule, not for the machine's speed)
        assert fps[talker.peer_id] > 16, fps
        assert 6 < fps[other_quiet.peer_id] < 14, fps
        stats = listener.schedule.stats()
        assert stats["remotes"][other_quiet.peer_id]["frames_refused"] > 0  # type: ignore[index]

        # the other quiet one leaves: the others see it go within 5 s, no error, and the call goes on between the two
        leaving = other_quiet
        left_at = time.monotonic()
        leaving.stop()
        await asyncio.wait_for(tasks.pop(), 15)
        await wait_until(lambda: all(leaving.peer_id not in p.receivers for p in (talker, listener)), 5, "the others to drop the one that left")
        assert time.monotonic() - left_at < 5.0
        before = _rendered(listener, talker.peer_id)
        await asyncio.sleep(1.0)
        assert _rendered(listener, talker.peer_id) > before + 10
        # it comes back (a new process would: a new peer id) and is seen again
        back = _participant(server, 3, speaks=False, tmp_path=tmp_path)
        tasks.append(asyncio.ensure_future(back.run()))
        await wait_until(lambda: _rendered(talker, back.peer_id) > 5 and _rendered(listener, back.peer_id) > 2, 30, "the others rendering the one that came back")
        await wait_until(lambda: _rendered(back, talker.peer_id) > 5, 30, "the one that came back rendering the talker")
        everyone = [talker, listener, back]
        for participant in everyone:
            report = participant.report()
            assert report["departed"] is not None
            for remote in report["remotes"].values():
                assert remote["render_errors"] == 0 and remote["packets_rejected"] == 0
    finally:
        for participant in everyone:
            participant.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
    # the listener heard the talker through its loudspeaker (a WAV here): the whole call long, not silence
    seconds, rms = _heard_rms(tmp_path / "heard-2.wav")
    assert seconds > 5 and rms > 0.01, (seconds, rms)
    assert listener.mixer is not None and listener.mixer.stats()["blocks_dropped"] == 0
