"""Test doubles for the call tests, and a process entry point for sender/receiver subprocesses.

``FakeSynthesizer`` stands in for ``codec.model.FrameSynthesizer`` (tiny, instant, deterministic: the
rendered image encodes the motion's yaw/pitch/roll and the first δ, so a test can read back what was
rendered). The real model's end-to-end test is separate and marked.

    python -m tests.call_fakes sender --url http://127.0.0.1:PORT --room R [--frames N]
    python -m tests.call_fakes receiver --url ... --room R --frames N --json OUT.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codec.motion import MotionParams
from codec.reference_message import ReferenceMessage, encode_portrait

MODEL_ID, MODEL_VERSION = "test-model", "1"


@dataclass(frozen=True, eq=False)
class FakeState:
    motion: MotionParams
    mean: float


class FakeSynthesizer:
    """image_size² frames whose pixel rows encode the motion (see ``decode_image``)."""

    model_id = MODEL_ID
    model_version = MODEL_VERSION

    def __init__(self, image_size: int = 32, render_ms: float = 0.0) -> None:
        self.image_size = image_size
        self.render_ms = render_ms
        self.prepared = 0
        self.rendered: deque[MotionParams] = deque(maxlen=1000)  # the newest renders (bounded: the soak test runs 30 min)

    def prepare(self, reference_rgb: np.ndarray) -> FakeState:
        if reference_rgb.shape != (self.image_size, self.image_size, 3):
            raise ValueError(f"reference must be {self.image_size}² RGB, got {reference_rgb.shape}")
        self.prepared += 1
        return FakeState(MotionParams.neutral(20), float(reference_rgb.mean()))

    def render(self, state: FakeState, motion: MotionParams, view: Any = None) -> np.ndarray:
        if self.render_ms:
            time.sleep(self.render_ms / 1000.0)
        self.rendered.append(motion)
        image = np.zeros((self.image_size, self.image_size, 3), np.uint8)
        image[0, :, 0] = np.clip(128 + motion.yaw, 0, 255)
        image[1, :, 0] = np.clip(128 + motion.pitch, 0, 255)
        return image


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


def fake_reference(size: int = 32, seed: int = 0) -> ReferenceMessage:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    return ReferenceMessage.from_image(encode_portrait(image), MODEL_ID, MODEL_VERSION)


class DropPackets:
    """Seeded packet filter: drops a fraction of motion packets (and counts them)."""

    def __init__(self, fraction: float, seed: int = 0) -> None:
        self.fraction = fraction
        self.rng = random.Random(seed)
        self.dropped = 0
        self.passed = 0

    def __call__(self, packet: bytes) -> bytes | None:
        if self.rng.random() < self.fraction:
            self.dropped += 1
            return None
        self.passed += 1
        return packet


async def _sender_main(args: argparse.Namespace) -> int:
    from sender.session import Sender, SenderConfig
    from sender.sources import TraceSource
    from signaling.rtc import RtcOptions

    rtc = RtcOptions(host_candidates=args.host_candidates, motion_transport=args.motion_transport)
    sender = Sender(
        SenderConfig(args.url, args.room, rtc=rtc, max_kbps=None), TraceSource(25.0, max_frames=args.frames), fake_reference()
    )
    print("sender started", flush=True)
    reason = await sender.run()
    print(f"sender ended {reason} {json.dumps(sender.link_stats())}", flush=True)
    return 0


async def _receiver_main(args: argparse.Namespace) -> int:
    from receiver.session import Receiver, ReceiverConfig
    from signaling.rtc import RtcOptions

    rtc = RtcOptions(host_candidates=args.host_candidates, motion_transport=args.motion_transport)
    cache = {} if args.cache_dir is None else {"cache_dir": Path(args.cache_dir)}
    receiver = Receiver(ReceiverConfig(args.url, args.room, rtc=rtc, max_frames=args.frames, exit_when_sender_leaves=True, **cache),
                        FakeSynthesizer())
    reason = await receiver.run()
    outputs = [asdict(o) for o in receiver.outputs]
    Path(args.json).write_text(json.dumps({"end": reason, "outputs": outputs, "stats": receiver.stats(), "events": list(receiver.events)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.call_fakes")
    parser.add_argument("role", choices=("sender", "receiver"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--room", default="t")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--host-candidates", default="loopback")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--motion-transport", default="rtp+audio", choices=("rtp+audio", "rtp", "datachannel"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return asyncio.run(_sender_main(args) if args.role == "sender" else _receiver_main(args))


if __name__ == "__main__":
    sys.exit(main())


class PyViewer:
    """A viewer like the browser page: joins as "viewer", answers the receiver's offer, collects the
    video frames and control messages, and sends commands."""

    def __init__(self, url: str, room: str) -> None:
        from signaling.client import WebSocketSignaling

        self.signaling = WebSocketSignaling(url, room, "viewer")
        self.frames: list[np.ndarray] = []
        self.audio_frames = 0
        self.messages: list[Any] = []
        self.channel: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._pcs: list[Any] = []

    async def start(self) -> None:
        await self.signaling.connect()
        self._tasks.append(asyncio.ensure_future(self._signaling_loop()))

    async def _signaling_loop(self) -> None:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        from signaling import control as c
        from signaling import messages as m
        from signaling.rtc import RtcOptions

        while (msg := await self.signaling.receive()) is not None:
            if not (isinstance(msg, m.SessionDescription) and msg.kind == "offer"):
                continue
            pc = RTCPeerConnection(RtcOptions().configuration())
            self._pcs.append(pc)

            @pc.on("track")
            def on_track(track: Any) -> None:
                self._tasks.append(asyncio.ensure_future(self._read(track)))

            @pc.on("datachannel")
            def on_datachannel(channel: Any) -> None:
                self.channel = channel
                channel.on("message", lambda data: self.messages.append(c.decode_control(data)))

            await pc.setRemoteDescription(RTCSessionDescription(msg.sdp, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            await self.signaling.send(m.SessionDescription("answer", msg.peer, pc.localDescription.sdp))

    async def _read(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                frame = await track.recv()
                if track.kind == "audio":  # the receiver's sound beside the faces
                    self.audio_frames += 1
                    continue
                self.frames.append(frame.to_ndarray(format="rgb24"))
        except MediaStreamError:
            return

    def send(self, msg: Any) -> None:
        from signaling import control as c

        self.channel.send(msg if isinstance(msg, str) else c.encode_control(msg))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(pc.close() for pc in self._pcs), return_exceptions=True)
        await self.signaling.close()
