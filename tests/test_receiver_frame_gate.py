"""Receiver's frame_gate: a due frame it refuses is recorded as output but not rendered, and counted as unscheduled."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codec.motion import MotionParams
from receiver.playout import PlayoutFrame
from receiver.render_worker import RenderWorker
from receiver.session import Receiver, ReceiverConfig, _SenderLink
from signaling import messages as m
from tests.call_fakes import FakeSynthesizer


@dataclass
class FakeCounters:
    wire_bytes_received: int = 0


@dataclass
class FakeLink:
    """Stands in for signaling.rtc.PeerLink: what the receiver reads of a link, no network."""

    peer: m.PeerInfo
    prefix: str = "receiver -> fake"

    def counters(self) -> FakeCounters:
        return FakeCounters()


def playout_frame(slot: int) -> PlayoutFrame:
    motion = MotionParams(float(slot), 0, 0, np.zeros(3), np.zeros((20, 3)), np.ones(20, bool))
    return PlayoutFrame(slot, 1, slot, 1000.0 + 40.0 * slot, motion, 1000.0 + 40.0 * slot, False, 1000.0 + 40.0 * slot)


async def test_frames_the_gate_refuses_are_not_rendered_and_are_counted(tmp_path: Path) -> None:
    synth = FakeSynthesizer()
    asked: list[int] = []

    def gate(frame: PlayoutFrame) -> bool:
        asked.append(frame.slot)
        return frame.slot % 3 == 0

    receiver = Receiver(ReceiverConfig("http://127.0.0.1:9", cache_dir=tmp_path), synth, frame_gate=gate)
    receiver._worker = RenderWorker(synth, asyncio.get_running_loop(), receiver._rendered.put_nowait)
    receiver._worker.start()
    try:
        receiver._emit(playout_frame(0))  # no sender yet: no scene, and the gate is not asked
        sender = _SenderLink(FakeLink(m.PeerInfo("s1", "sender")))  # type: ignore[arg-type]
        receiver.senders["s1"] = sender
        receiver.sender_history.append(sender)
        receiver.active = sender
        sender.key, sender.ready = "portrait", True
        receiver.store.put_state("portrait", synth.prepare(np.zeros((32, 32, 3), np.uint8)))
        rendered: list[int] = []
        for slot in range(1, 10):
            receiver._emit(playout_frame(slot))
            if slot % 3 == 0:  # one frame at a time: the render worker would replace a waiting one
                rendered.append((await asyncio.wait_for(receiver._rendered.get(), 5)).frame.slot)
        await asyncio.sleep(0.1)
        assert receiver._rendered.empty() and rendered == [3, 6, 9]
        assert [motion.yaw for motion in synth.rendered] == [3.0, 6.0, 9.0]
        assert asked == list(range(1, 10))
        assert [o.slot for o in receiver.outputs] == list(range(10))  # every frame is still an output frame
        assert receiver.frames_unscheduled == 6 and receiver.frames_without_reference == 1
        assert receiver.stats()["frames_unscheduled"] == 6 and receiver.stats()["frames_rendered"] == 3
        report = receiver.report()
        assert report["frames_unscheduled"] == 6 and report["frames_without_reference"] == 1
    finally:
        await receiver._worker.close()


async def test_without_a_gate_every_frame_with_a_scene_is_rendered(tmp_path: Path) -> None:
    synth = FakeSynthesizer()
    receiver = Receiver(ReceiverConfig("http://127.0.0.1:9", cache_dir=tmp_path), synth)
    receiver._worker = RenderWorker(synth, asyncio.get_running_loop(), receiver._rendered.put_nowait)
    receiver._worker.start()
    try:
        sender = _SenderLink(FakeLink(m.PeerInfo("s1", "sender")))  # type: ignore[arg-type]
        receiver.senders["s1"] = sender
        receiver.active = sender
        sender.key, sender.ready = "portrait", True
        receiver.store.put_state("portrait", synth.prepare(np.zeros((32, 32, 3), np.uint8)))
        for slot in range(3):
            receiver._emit(playout_frame(slot))
            assert (await asyncio.wait_for(receiver._rendered.get(), 5)).frame.slot == slot
        assert receiver.stats()["frames_unscheduled"] == 0 and receiver.report()["frames_unscheduled"] == 0
    finally:
        await receiver._worker.close()
