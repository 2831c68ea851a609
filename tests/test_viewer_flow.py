"""What the browser page relies on, without a browser: acks and errors for every viewer command,
recent rates in the receiver's stats, and the sender's original pictures (VP8) for a viewer that asks.

In-process over 127.0.0.1 ("loopback" host candidates) with the instant test synthesizer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from codec.motion import MotionParams
from receiver.session import Receiver, ReceiverConfig, _RecentRates
from sender import session as sender_session
from sender.original import PosedPortrait, fit_picture
from sender.session import Sender, SenderConfig
from sender.sources import TraceSource
from signaling import control as c
from signaling import messages as m
from signaling.client import WebSocketSignaling
from signaling.credentials import Ticket, issue_ticket
from signaling.rtc import RtcOptions
from signaling.server import RunningServer, ServerConfig, start_server
from tests.call_fakes import FakeSynthesizer, PyViewer, fake_reference, wait_until

LOOPBACK = RtcOptions(host_candidates="loopback")


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await start_server(ServerConfig(port=0, static_dir=None))
    yield running
    await running.close()


def test_recent_rates_span_the_window_and_restart_with_the_counters() -> None:
    rates = _RecentRates(3.0)
    assert rates.rates() is None
    for t in range(6):
        rates.add(float(t), (1000.0 * t, 10.0 * t))
    assert rates.rates() == (1000.0, 10.0)
    assert rates.samples[0][0] == 2.0  # older samples left the window
    rates.add(6.0, (0.0, 0.0))  # a new sender: counters start again
    assert rates.rates() is None


def test_fit_picture_and_posed_portrait() -> None:
    assert fit_picture(np.zeros((1080, 1920, 3), np.uint8)).shape == (270, 480, 3)
    assert fit_picture(np.zeros((101, 99, 3), np.uint8)).shape == (100, 98, 3)  # even sides for YUV 4:2:0
    portrait = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    posed = PosedPortrait(portrait)
    neutral = posed.render(None)
    assert neutral.shape == (64, 64, 3)
    neutral_motion = MotionParams.neutral(20)
    turned = MotionParams(30.0, 0.0, 0.0, neutral_motion.translation, neutral_motion.expression, neutral_motion.present)
    image = posed.render(turned)
    assert image.shape == (64, 64, 3) and np.abs(image.astype(int) - neutral.astype(int)).mean() > 10
    assert posed.render(turned) is image  # the same motion is not drawn twice


async def test_viewer_commands_are_acknowledged_or_refused_with_a_reason(server: RunningServer) -> None:
    receiver = Receiver(ReceiverConfig(server.url, "acks", rtc=LOOPBACK, stats_interval_s=0.3), FakeSynthesizer(), view_parser=_parse_view)
    rtask = asyncio.ensure_future(receiver.run())
    viewer = PyViewer(server.url, "acks")
    sender: Sender | None = None
    stask: asyncio.Future[Any] | None = None
    try:
        await viewer.start()
        await wait_until(lambda: viewer.channel is not None and viewer.channel.readyState == "open", 20, "the viewer's control channel")

        def replies(kind: type) -> list[Any]:
            return [x for x in viewer.messages if isinstance(x, kind)]

        await wait_until(lambda: bool(replies(c.Status)), 5, "the status on open")
        assert replies(c.Status)[0].control is True  # an open room: viewers steer the call (the demo)
        viewer.send(c.Command(keypoints=5))  # no sender yet
        await wait_until(lambda: any(e.code == "no_sender" for e in replies(c.ErrorReply)), 5, "no_sender")
        viewer.send(c.Command(view="yaw=10,pitch=0,roll=0"))
        await wait_until(lambda: any(a.command == "view" for a in replies(c.Ack)), 5, "the view ack")
        viewer.send(c.Command(view="sideways"))
        await wait_until(lambda: any(e.code == "bad_view" for e in replies(c.ErrorReply)), 5, "bad_view")
        for chunk in c.avatar_chunks(b"this is not an image", upload_id=7):
            viewer.send(chunk)
        await wait_until(lambda: any(e.code == "bad_avatar" for e in replies(c.ErrorReply)), 5, "bad_avatar")
        assert "not an image this receiver can read" in next(e.message for e in replies(c.ErrorReply) if e.code == "bad_avatar")

        sender = Sender(SenderConfig(server.url, "acks", rtc=LOOPBACK, max_kbps=None), TraceSource(25.0, max_frames=2000), fake_reference())
        stask = asyncio.ensure_future(sender.run())
        await wait_until(lambda: any(isinstance(x, c.Stats) and x.values["payload_kbps_recent"] for x in viewer.messages), 20, "recent rates")
        stats = [x for x in replies(c.Stats) if x.values["payload_kbps_recent"]][-1].values
        assert stats["wire_kbps_recent"] > stats["payload_kbps_recent"] > 0 and stats["fps_rendered"] > 0 and stats["frames_lost"] == 0

        viewer.send(c.Command(keypoints=30))  # more than the sender's K = 20: the sender refuses, the viewer hears it
        await wait_until(lambda: any(e.code == "bad_command" for e in replies(c.ErrorReply)), 10, "the sender's refusal")
        assert "keypoints must be in [0, 20]" in next(e.message for e in replies(c.ErrorReply) if e.code == "bad_command")
        viewer.send(c.Command(keypoints=20, max_kbps=50.0))
        await wait_until(lambda: any(a.command == "keypoints,max_kbps" for a in replies(c.Ack)), 5, "the keypoints ack")
        await wait_until(lambda: any(r.keypoints == 20 and r.max_kbps == 50.0 for r in replies(c.RateDecision)), 10, "K=20 at 50 kbps")
        count = len(replies(c.RateDecision))
        viewer.send(c.Command(max_kbps=60.0))  # nothing to change but the cap: still confirmed
        await wait_until(lambda: any(r.max_kbps == 60.0 for r in replies(c.RateDecision)[count:]), 10, "the unchanged setting confirmed")
    finally:
        await viewer.close()
        receiver.stop()
        if sender is not None:
            sender.stop()
        await asyncio.wait_for(asyncio.gather(rtask, *([stask] if stask else [])), 15)


async def test_only_a_viewer_granted_control_may_command_or_upload() -> None:
    """With tickets, a viewer whose ticket lacks --control watches: its commands and avatar chunks are refused with
    ``forbidden`` (saying how to get control) and change nothing; one whose ticket has it steers as before."""
    secret = b"0123456789abcdef-test-secret"

    def ticket(role: m.Role, control: bool = False) -> str:
        return issue_ticket(secret, Ticket("grants", role, 4_000_000_000, control=control))

    running = await start_server(ServerConfig(port=0, static_dir=None, ticket_secret=secret))
    config = ReceiverConfig(running.url, "grants", rtc=LOOPBACK, token=ticket("receiver"), stats_interval_s=5.0)
    receiver = Receiver(config, FakeSynthesizer(), view_parser=_parse_view)
    rtask = asyncio.ensure_future(receiver.run())
    watcher, steerer = PyViewer(running.url, "grants"), PyViewer(running.url, "grants")
    watcher.signaling = WebSocketSignaling(running.url, "grants", "viewer", token=ticket("viewer"))
    steerer.signaling = WebSocketSignaling(running.url, "grants", "viewer", token=ticket("viewer", control=True))
    try:
        for viewer in (watcher, steerer):
            await viewer.start()
            await wait_until(lambda v=viewer: v.channel is not None and v.channel.readyState == "open", 20, "a viewer's control channel")
            await wait_until(lambda v=viewer: any(isinstance(x, c.Status) for x in v.messages), 5, "the status on open")
        assert [x.control for x in watcher.messages if isinstance(x, c.Status)][0] is False
        assert [x.control for x in steerer.messages if isinstance(x, c.Status)][0] is True

        def errors() -> list[c.ErrorReply]:
            return [x for x in watcher.messages if isinstance(x, c.ErrorReply)]

        watcher.send(c.Command(view="yaw=10,pitch=0,roll=0"))
        watcher.send(c.Command(max_kbps=50.0))
        for chunk in c.avatar_chunks(b"an image it may not upload", upload_id=3):
            watcher.send(chunk)
        watcher.send(c.Ping(7))
        await wait_until(lambda: any(isinstance(x, c.Pong) for x in watcher.messages), 5, "the watcher's pong")
        assert [e.code for e in errors()] == ["forbidden"] * 3, errors()
        assert "its commands are refused" in errors()[0].message and "avatar uploads are refused" in errors()[2].message
        assert all("viewer ticket issued with --control" in e.message for e in errors())
        assert receiver.view is None and not any(isinstance(x, c.Ack) for x in watcher.messages)
        steerer.send(c.Command(view="yaw=10,pitch=0,roll=0"))
        await wait_until(lambda: any(isinstance(x, c.Ack) and x.command == "view" for x in steerer.messages), 5, "the steerer's ack")
        assert receiver.view == "yaw=10,pitch=0,roll=0"
    finally:
        await asyncio.gather(watcher.close(), steerer.close())
        receiver.stop()
        await asyncio.wait_for(rtask, 15)
        await running.close()


def _parse_view(text: str) -> str:
    if not text.startswith(("frontal", "yaw=", "offset:")):
        raise ValueError(f"bad view {text!r}")
    return text


class OriginalViewer:
    """A viewer that asks the sender for its original pictures, as the page does: it offers a
    receive-only video transceiver and a "control" data channel."""

    def __init__(self, url: str, room: str) -> None:
        self.signaling = WebSocketSignaling(url, room, "viewer")
        self.pc = RTCPeerConnection(LOOPBACK.configuration())
        self.frames: list[np.ndarray] = []
        self.messages: list[Any] = []
        self.tasks: list[asyncio.Task[Any]] = []

    async def ask(self) -> None:
        joined = await self.signaling.connect()
        sender_id = next(p.peer_id for p in joined.peers if p.role == "sender")
        self.pc.addTransceiver("video", direction="recvonly")
        channel = self.pc.createDataChannel("control")
        channel.on("message", lambda data: self.messages.append(c.decode_control(data)))

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            self.tasks.append(asyncio.ensure_future(self._read(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self.signaling.send(m.SessionDescription("offer", sender_id, self.pc.localDescription.sdp))
        self.tasks.append(asyncio.ensure_future(self._answers()))

    async def _answers(self) -> None:
        while (msg := await self.signaling.receive()) is not None:
            if isinstance(msg, m.SessionDescription) and msg.kind == "answer":
                await self.pc.setRemoteDescription(RTCSessionDescription(msg.sdp, "answer"))

    async def _read(self, track: Any) -> None:
        try:
            while True:
                self.frames.append((await track.recv()).to_ndarray(format="rgb24"))
        except MediaStreamError:
            return

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.pc.close()
        await self.signaling.close()


async def test_sender_streams_its_original_pictures_to_a_viewer_that_asks(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from codec.reference_message import ReferenceMessage, encode_portrait

    portrait = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    reference = ReferenceMessage.from_image(encode_portrait(portrait), "test-model", "1")
    sender = Sender(
        SenderConfig(server.url, "orig", rtc=LOOPBACK, max_kbps=None, wait_for_receiver=False), TraceSource(25.0, max_frames=2000), reference
    )
    stask = asyncio.ensure_future(sender.run())
    monkeypatch.setattr(sender_session, "MAX_ORIGINAL_VIEWERS", 1)
    first, second = OriginalViewer(server.url, "orig"), OriginalViewer(server.url, "orig")
    try:
        await wait_until(lambda: sender.signaling.peer_id is not None, 10, "the sender to join")  # type: ignore[attr-defined]
        await first.ask()
        await wait_until(lambda: len(first.frames) >= 10, 20, "the original pictures")
        assert first.frames[-1].shape == (64, 64, 3) and float(first.frames[-1].std()) > 20  # the posed portrait, not grey
        await wait_until(lambda: any(isinstance(x, c.Status) for x in first.messages), 5, "the description")
        status = next(x for x in first.messages if isinstance(x, c.Status))
        assert status.state == "original" and "scripted head motion" in status.detail
        sdp = first.pc.remoteDescription.sdp
        assert "VP8/90000" in sdp and "a=sendonly" in sdp

        await second.ask()  # one viewer at most here: refused with a reason
        await wait_until(lambda: any(isinstance(x, c.ErrorReply) for x in second.messages), 20, "the refusal")
        assert next(x for x in second.messages if isinstance(x, c.ErrorReply)).code == "too_many_viewers"
        assert not second.frames
        await first.pc.close()  # the page's "Hide": the sender lets go of that viewer
        await wait_until(lambda: not sender.viewers, 40, "the sender to drop the closed viewer")
    finally:
        await first.close()
        await second.close()
        sender.stop()
        await asyncio.wait_for(stask, 15)
