"""Receiver parts: the recorder keeps frame count, the render thread never builds a backlog, the portrait cache."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from codec.motion import MotionParams
from receiver.playout import PlayoutFrame
from receiver.references import ReferenceStore
from receiver.render_worker import RenderedFrame, RenderWorker, Scene
from receiver.sinks import Mp4Recorder, NullSink, claim_new_path
from receiver.video_track import LatestFrame, SynthesizedVideoTrack
from tests.call_fakes import FakeSynthesizer, fake_reference


def image(value: int, size: int = 32) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def test_recorder_writes_one_frame_per_slot_repeating_skipped_ones(tmp_path: Path) -> None:
    path = tmp_path / "rec.mp4"
    recorder = Mp4Recorder(path, fps=25.0)
    for slot, value in [(3, 10), (4, 60), (7, 200), (7, 0), (5, 0), (8, 120)]:  # 5-6 skipped; repeats/old slots ignored
        recorder.write(slot, image(value))
    recorder.close()
    recorder.close()
    assert (recorder.frames_written, recorder.frames_repeated) == (6, 2)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == 25.0
        means = [float(f.to_ndarray(format="rgb24").mean()) for f in container.decode(stream)]
    assert len(means) == 6
    assert [round(m / 10) * 10 for m in means] == [10, 60, 60, 60, 200, 120]
    NullSink().write(0, image(0))


_KILLED_WRITER = """
import sys, time
import numpy as np
from pathlib import Path
from receiver.sinks import Mp4Recorder
recorder = Mp4Recorder(Path(sys.argv[1]), fps=25.0)
for slot in range(60):
    recorder.write(slot, np.full((64, 64, 3), 4 * slot, np.uint8))
print("written", flush=True)
time.sleep(60)  # killed here, mid-call: close() never runs
"""


def test_a_recording_killed_mid_call_stays_playable(tmp_path: Path) -> None:
    path = tmp_path / "call.mp4"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "written"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) >= 60 - 25  # at most the last fragment (1 s at 25 fps) is lost
    assert [round(float(f.mean()) / 4) for f in frames[:30]] == list(range(30))


def test_a_recording_never_replaces_a_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "call.mp4"
    path.write_bytes(b"yesterday's call")
    (tmp_path / "call-1.mp4").write_bytes(b"the call before")
    recorder = Mp4Recorder(path, fps=25.0)
    recorder.write(0, image(90))
    recorder.close()
    assert recorder.path == tmp_path / "call-2.mp4" and recorder.requested_path == path
    assert path.read_bytes() == b"yesterday's call" and (tmp_path / "call-1.mp4").read_bytes() == b"the call before"
    assert f"{path} exists: recording to {tmp_path / 'call-2.mp4'} instead" in caplog.text
    with av.open(str(recorder.path)) as container:
        assert len(list(container.decode(video=0))) == 1
    assert claim_new_path(tmp_path / "new" / "x.mp4") == tmp_path / "new" / "x.mp4"  # a free name is used as given


def playout_frame(slot: int) -> PlayoutFrame:
    return PlayoutFrame(slot, 1, slot, 0.0, MotionParams(float(slot), 0, 0, np.zeros(3), np.zeros((20, 3)), np.ones(20, bool)), 0.0, False, 1.0)


async def started_worker(synth: FakeSynthesizer) -> tuple[RenderWorker, list[RenderedFrame], Any]:
    """A running RenderWorker on ``synth``, the frames it hands back, and a prepared reference's state."""
    done: list[RenderedFrame] = []
    worker = RenderWorker(synth, asyncio.get_running_loop(), done.append)
    worker.start()
    return worker, done, await worker.call(synth.prepare, image(5))


async def test_render_worker_takes_the_latest_job_and_runs_tasks_first() -> None:
    synth = FakeSynthesizer(render_ms=30.0)
    worker, done, state = await started_worker(synth)
    assert state.mean == 5.0
    scene = Scene(state)
    for slot in range(20):  # far faster than 30 ms per render
        worker.submit(playout_frame(slot), scene)
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.2)
    assert done[-1].frame.slot == 19  # the newest job always gets rendered
    slots = [r.frame.slot for r in done]
    assert slots == sorted(slots) and len(slots) < 10  # no backlog: intermediate jobs were replaced
    assert worker.frames_skipped == 20 - len(slots)
    assert all(r.render_ms >= 25 for r in done)
    with pytest.raises(ValueError, match="reference must be"):
        await worker.call(synth.prepare, image(5, size=8))  # errors reach the caller; the thread lives on
    mapped = Scene(state, motion_map=lambda m: MotionParams.neutral(20))
    worker.submit(playout_frame(99), mapped)
    await asyncio.sleep(0.1)
    assert done[-1].frame.slot == 99 and synth.rendered[-1].yaw == 0.0
    thread = worker._thread  # this worker's own thread: a render thread another test left cannot fail this one
    assert thread.name == "render" and thread.is_alive()
    await worker.close()
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        await worker.call(time.time)


async def test_render_worker_shows_a_picture_as_it_is_without_rendering() -> None:
    synth = FakeSynthesizer(render_ms=30.0)
    worker, done, state = await started_worker(synth)
    picture = image(200)
    worker.submit(playout_frame(1), Scene(state), picture, show_picture=True)
    await asyncio.sleep(0.1)
    assert done[-1].image is picture and done[-1].render_ms < 25 and not synth.rendered  # no render
    assert (worker.frames_rendered, worker.frames_enhanced, worker.frames_shown_as_picture) == (1, 1, 1)
    assert not worker.render_ms  # the generator's render times only
    with pytest.raises(ValueError, match="needs the frame's picture"):
        worker.submit(playout_frame(2), Scene(state), None, show_picture=True)
    await worker.close()


async def test_render_errors_are_counted_not_fatal() -> None:
    class Broken(FakeSynthesizer):
        def render(self, state, motion, view=None):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    done: list[RenderedFrame] = []
    worker = RenderWorker(Broken(), asyncio.get_running_loop(), done.append)
    worker.start()
    worker.submit(playout_frame(0), Scene(None))
    await asyncio.sleep(0.1)
    assert worker.render_errors == 1 and not done
    await worker.close()


async def test_video_track_repeats_the_newest_frame_at_the_call_rate() -> None:
    latest = LatestFrame(32)
    track = SynthesizedVideoTrack(latest, fps=50.0)
    first = await track.recv()
    assert first.to_ndarray(format="rgb24").mean() == pytest.approx(32, abs=1)
    latest.update(0, image(200))
    start = time.monotonic()
    frames = [await track.recv() for _ in range(10)]
    assert time.monotonic() - start == pytest.approx(0.2, abs=0.05)
    assert [f.pts for f in frames] == [i * 1800 for i in range(1, 11)]
    assert frames[-1].to_ndarray(format="rgb24").mean() == pytest.approx(200, abs=2)
    track.stop()


def test_reference_store_memory_and_disk(tmp_path: Path) -> None:
    msg = fake_reference()
    key = msg.cache_key
    store = ReferenceStore(tmp_path)
    assert not store.has(key) and store.load(key) is None
    store.save(msg)
    store.put_state(key, "state")
    assert store.has(key) and store.state(key) == "state"
    fresh = ReferenceStore(tmp_path)  # a new receiver process: disk only
    assert fresh.has(key) and fresh.state(key) is None
    loaded = fresh.load(key)
    assert loaded is not None and loaded.image == msg.image
    (path,) = (tmp_path / "references").iterdir()
    path.write_bytes(b"corrupt")
    broken = ReferenceStore(tmp_path)
    assert broken.load(key) is None and not path.exists()  # dropped, not fatal
    memory_only = ReferenceStore(None, max_states=2)
    for i in range(3):
        memory_only.put_state(f"k{i}", i)
    assert memory_only.state("k0") is None and memory_only.state("k2") == 2
