"""The enhancement layer in a real loopback call: frame bundles flow, the receiver renders with the picture,
a lost bundle costs pictures only until the next key picture, a receiver that does not announce the
capability gets plain motion packets, and with no cap and no pinned qp the controller picks an enhanced rung.

The model is the tiny-enh preset with random weights (64² frames, E = 16): speed and plumbing, not quality.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from receiver.session import Receiver, ReceiverConfig
from codec.enhancement.picture_rate import LADDER as PICTURE_LADDER
from codec.enhancement.picture_rate import rung_keypoints
from sender.session import Sender, SenderConfig
from sender.sources import MotionFrame, TraceSource
from signaling.server import RunningServer
from tests.call_fakes import FakeSynthesizer, fake_reference
from tests.test_call import FPS, LOOPBACK, run_call, server  # noqa: F401 - the fixture
from codec.enhancement.lowres_codec import codecs_available
from tests.test_receiver_enhancement import faces

pytestmark = pytest.mark.skipif(not codecs_available(), reason="this PyAV build has no libsvtav1/libdav1d")

QP = 40


class FaceTraceSource(TraceSource):
    """The trace's motion with a synthetic face crop on every frame (what a camera source hands the sender)."""

    provides_faces = True

    def __init__(self, fps: float, num_keypoints: int, max_frames: int, size: int = 64) -> None:
        super().__init__(fps, num_keypoints=num_keypoints, max_frames=max_frames)
        self._faces = faces(50, size)

    async def frames(self) -> AsyncIterator[MotionFrame]:
        async for frame in super().frames():
            yield dataclasses.replace(frame, face=self._faces[frame.index % len(self._faces)])


class RecordMessages:
    """Packet filter: remembers each message's first byte; drops the messages whose index is in ``drop``."""

    def __init__(self, drop: tuple[int, ...] = ()) -> None:
        self.drop = set(drop)
        self.first_bytes: list[int] = []

    def __call__(self, message: bytes) -> bytes | None:
        index = len(self.first_bytes)
        self.first_bytes.append(message[0])
        return None if index in self.drop else message


def tiny_enh_call(server_url: str, room: str, frames: int, packet_filter: Any, with_faces: bool = True,
                  receiver_settings: dict[str, Any] | None = None, **config: Any) -> tuple[Receiver, Sender, Any]:
    """A call of the tiny-enh model; ``config``: SenderConfig fields (default: no cap, 1 frame/packet, qp pinned to QP);
    ``with_faces`` False: the plain trace, whose frames carry no face crop."""
    import torch

    from codec.model import FrameSynthesizer
    from codec.model.config import ModelConfig
    from codec.model.face_model import FaceVid2VidModel
    from sender.portrait import default_portrait, make_reference

    torch.manual_seed(0)
    model = FaceVid2VidModel(ModelConfig.preset("tiny-enh")).eval()
    synth = FrameSynthesizer(model)
    size = synth.image_size

    def resize_crop(image: np.ndarray, output_size: int) -> np.ndarray:
        from PIL import Image

        return np.asarray(Image.fromarray(image[20:276, 120:376]).resize((output_size, output_size)))

    reference = make_reference(default_portrait(), size, synth.model_id, synth.model_version, crop=resize_crop)
    receiver = Receiver(ReceiverConfig(server_url, room, rtc=LOOPBACK, max_frames=frames, **(receiver_settings or {})), synth)
    source: TraceSource = (FaceTraceSource(FPS, synth.num_keypoints, 4 * frames, size) if with_faces  # outlasts the
                           else TraceSource(FPS, num_keypoints=synth.num_keypoints, max_frames=4 * frames))  # receiver
    settings: dict[str, Any] = {"max_kbps": None, "frames_per_packet": 1, "enhancement_qp": QP, **config}
    sender_config = SenderConfig(server_url, room, rtc=LOOPBACK, **settings)
    sender = Sender(sender_config, source, reference, packet_filter=packet_filter, enhancement_size=synth.enhancement_size)
    return receiver, sender, synth


async def test_bundles_flow_and_frames_render_with_the_picture(server: RunningServer) -> None:  # noqa: F811
    frames = 40
    messages = RecordMessages()
    receiver, sender, synth = tiny_enh_call(server.url, "enh", frames, messages)
    assert synth.enhancement_size == 16
    assert await run_call(receiver, sender) == ("max_frames", "stopped")
    report = receiver.report()
    assert report["frames_output"] >= frames and report["render_errors"] == 0  # stops once frame frames-1 is rendered
    assert messages.first_bytes and set(messages.first_bytes) == {0xB1}  # every message a bundle
    (stats,) = sender.link_stats()
    layer = stats["enhancement"]
    assert layer["pictures"] == len(messages.first_bytes) and layer["key_pictures"] == 1 and layer["qp"] == QP
    assert layer["encode_ms_median"] is not None and layer["encode_ms_median"] > 0
    assert report["enhancement_received"] >= frames - 3 and report["enhancement_dropped"] == 0
    assert report["enhancement_decoded"] == report["enhancement_received"] and report["enhancement_key_requests"] == 0
    # Latest wins on a slow render, so not every output frame is rendered; those that are carry their picture.
    assert report["frames_rendered_enhanced"] >= report["frames_rendered"] - 3 and report["frames_rendered_enhanced"] > 0
    values = receiver.stats()  # the call is over: no active sender, the render counts remain
    assert values["enhancement_decoded"] == 0 and values["frames_rendered_enhanced"] == report["frames_rendered_enhanced"]
    assert values["frames_rendered_enhanced"] + values["frames_rendered_motion_only"] == values["frames_rendered"]


async def test_a_lost_bundle_costs_pictures_until_the_next_key(server: RunningServer) -> None:  # noqa: F811
    frames = 50
    messages = RecordMessages(drop=(15, 16))
    receiver, sender, _ = tiny_enh_call(server.url, "enh-loss", frames, messages)
    decoded_seqs: list[int] = []
    original_receive = None

    def on_link(link: Any) -> None:  # record which frames' pictures decoded
        nonlocal original_receive
        original_receive = link.enhancement.receive

        def receive(bundle: Any, stream_id: int, seq: int, num_frames: int, now_ms: float) -> Any:
            picture = original_receive(bundle, stream_id, seq, num_frames, now_ms)
            if picture is not None:
                decoded_seqs.append(seq)
            return picture

        link.enhancement.receive = receive

    add_sender = receiver._add_sender

    async def wrapped(peer: Any, offer: Any) -> None:
        await add_sender(peer, offer)
        on_link(receiver.active)

    receiver._add_sender = wrapped  # type: ignore[method-assign]
    assert await run_call(receiver, sender) == ("max_frames", "stopped")
    report = receiver.report()
    # Motion keeps coming: every output frame, the two lost ones concealed (and a few late ones on a busy machine).
    assert report["frames_output"] >= frames and report["render_errors"] == 0  # stops once frame frames-1 is rendered
    assert 2 <= report["frames_concealed"] <= frames // 4
    # The pictures after the loss wait for a key picture, which the receiver asks for and the sender sends.
    (stats,) = sender.link_stats()
    layer = stats["enhancement"]
    assert report["enhancement_key_requests"] >= 1 and layer["key_requests"] >= 1 and layer["key_pictures"] >= 2
    assert report["enhancement_dropped"] >= 1
    assert 15 not in decoded_seqs and 16 not in decoded_seqs and 17 not in decoded_seqs  # 17: no key yet
    assert decoded_seqs[:15] == list(range(15))
    resumed = [s for s in decoded_seqs if s > 17]
    assert resumed and resumed == list(range(resumed[0], resumed[0] + len(resumed)))  # then every frame again
    assert resumed[0] <= 17 + 15  # within a few frames (a round trip on loopback, plus CPU hiccups)
    assert report["frames_rendered_enhanced"] > 0


async def test_a_receiver_without_the_capability_gets_plain_motion_packets(server: RunningServer) -> None:  # noqa: F811
    frames = 30
    messages = RecordMessages()
    receiver = Receiver(ReceiverConfig(server.url, "plain", rtc=LOOPBACK, max_frames=frames), FakeSynthesizer())
    source = FaceTraceSource(FPS, 20, frames + 25, size=32)
    config = SenderConfig(server.url, "plain", rtc=LOOPBACK, max_kbps=None, frames_per_packet=1, enhancement_qp=QP)
    sender = Sender(config, source, fake_reference(), packet_filter=messages, enhancement_size=16)
    assert await run_call(receiver, sender) == ("max_frames", "stopped")
    assert messages.first_bytes and all(b >> 4 == 0xA for b in messages.first_bytes)
    (stats,) = sender.link_stats()
    assert stats["enhancement"]["pictures"] == 0 and sender.link_history[0].capabilities is None
    assert receiver.report()["enhancement_received"] == 0


async def test_the_controller_picks_an_enhanced_rung_with_no_cap(server: RunningServer) -> None:  # noqa: F811
    """No cap, nothing pinned: the receiver's capability puts the enhanced rungs on the ladder and the controller
    takes the best one (the first of PICTURE_LADDER the tiny model reads, at 1 frame/packet, with the enhanced rungs'
    keypoints); the receiver is told, and renders frames with their picture."""
    frames = 40
    messages = RecordMessages()
    receiver, sender, _ = tiny_enh_call(server.url, "enh-auto", frames, messages, frames_per_packet=None, enhancement_qp=None)
    assert sender.config.max_kbps is None and sender.config.enhancement_qp is None
    links: list[Any] = []
    add_sender = receiver._add_sender

    async def wrapped(peer: Any, offer: Any) -> None:
        await add_sender(peer, offer)
        links.append(receiver.active)

    receiver._add_sender = wrapped  # type: ignore[method-assign]
    assert await run_call(receiver, sender) == ("max_frames", "stopped")
    (stats,) = sender.link_stats()
    best = next(rate for rate in PICTURE_LADDER if rate.size is None)  # the tiny model's 64² output reads no larger side
    assert stats["decisions"][0]["enhancement_qp"] == best.qp and stats["decisions"][0]["frames_per_packet"] == 1
    assert stats["rung"] == {"keypoints": rung_keypoints(20), "preset": "default", "frames_per_packet": 1, "enhancement_qp": best.qp,
                             "enhancement_interval": best.interval, "enhancement_size": None}
    bundles = [b for b in messages.first_bytes if b == 0xB1]
    assert bundles and len(bundles) >= len(messages.first_bytes) // best.interval  # a bundle with every N-th frame
    assert stats["enhancement"]["qp"] == best.qp and stats["enhancement"]["pictures"] == len(bundles)
    (link,) = links
    assert link.rate is not None and link.rate.enhancement_qp == best.qp and link.rate.reason == "no cap"
    report = receiver.report()
    assert report["frames_output"] >= frames and report["render_errors"] == 0
    assert report["enhancement_decoded"] >= frames // best.interval - 3 and report["frames_rendered_enhanced"] > 0


async def test_a_top_rung_sends_a_larger_picture_to_a_receiver_that_reads_it(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """The tiny model renders 64² from E = 16 pictures; with 32² among the larger sides (the shipped 64² model's are
    96²-256²) its receiver announces 32, the controller takes the top rung, a 32² picture with every frame, and the
    receiver decodes and renders with it (G's correction at the picture's own side)."""
    import codec.enhancement.picture_rate as picture_rate
    import sender.controller as controller_module
    from codec.enhancement.picture_rate import PictureRate

    monkeypatch.setattr(picture_rate, "LARGER_SIZES", (32,))
    monkeypatch.setattr(controller_module, "PICTURE_LADDER", (PictureRate(48, 1, 32), PictureRate(48)))
    monkeypatch.setattr(controller_module, "_LARGER_PICTURE_PRIORS", {32: {40: 60.0, 48: 40.0, 55: 30.0}})
    frames = 40
    messages = RecordMessages()
    receiver, sender, _ = tiny_enh_call(server.url, "enh-larger", frames, messages, frames_per_packet=None, enhancement_qp=None)
    assert await run_call(receiver, sender) == ("max_frames", "stopped")
    (stats,) = sender.link_stats()
    assert sender.link_history[0].capabilities.enhancement_max_size == 32
    assert stats["rung"]["enhancement_size"] == 32 and stats["decisions"][0]["enhancement_size"] == 32
    assert set(messages.first_bytes) == {0xB1} and stats["enhancement"]["pictures"] == len(messages.first_bytes)
    report = receiver.report()
    assert report["render_errors"] == 0 and report["enhancement_dropped"] == 0
    assert report["enhancement_decoded"] >= frames - 3 and report["frames_rendered_enhanced"] > 0


async def test_a_source_without_face_crops_stays_on_the_motion_only_ladder(server: RunningServer) -> None:  # noqa: F811
    """The built-in trace has no pictures to code: with a capable receiver and no cap the controller still never
    offers an enhanced rung, so the link does not sit at 1 frame/packet sending plain packets."""
    frames = 30
    messages = RecordMessages()
    receiver, sender, _ = tiny_enh_call(server.url, "enh-trace", frames, messages, with_faces=False,
                                        frames_per_packet=None, enhancement_qp=None)
    assert not sender.source.provides_faces
    assert await run_call(receiver, sender) == ("max_frames", "stopped")
    assert messages.first_bytes and all(b >> 4 == 0xA for b in messages.first_bytes)
    (stats,) = sender.link_stats()
    assert stats["enhancement"]["pictures"] == 0
    assert all(d.rung.enhancement_qp is None for d in sender.link_history[0].controller.decisions)


async def test_a_picture_every_third_frame_serves_the_frames_between_and_a_lost_one_costs_only_the_layer(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """The controller's ladder holding one rung, qp 48 with every 3rd frame: bundles go with frames 0, 3, 6, ... and
    plain motion packets between; the receiver renders the frames between with the newest picture. Frame 15's bundle
    is dropped: its motion is concealed, the frames up to the next key picture render from motion alone."""
    import sender.controller as controller_module
    from codec.enhancement.picture_rate import PictureRate

    monkeypatch.setattr(controller_module, "PICTURE_LADDER", (PictureRate(48, 3),))
    frames = 60
    messages = RecordMessages(drop=(15,))
    receiver, sender, _ = tiny_enh_call(server.url, "enh-every-3rd", frames, messages, enhancement_qp=None)
    assert await run_call(receiver, sender) == ("max_frames", "stopped")
    bundles = [i for i, b in enumerate(messages.first_bytes) if b == 0xB1]
    assert bundles[:6] == [0, 3, 6, 9, 12, 15] and all(b >> 4 == 0xA for i, b in enumerate(messages.first_bytes[:15]) if i % 3)
    (stats,) = sender.link_stats()
    assert stats["rung"] == {"keypoints": rung_keypoints(20), "preset": "default", "frames_per_packet": 1, "enhancement_qp": 48,
                             "enhancement_interval": 3, "enhancement_size": None}
    assert stats["decisions"][0]["enhancement_interval"] == 3
    layer = stats["enhancement"]
    assert layer["pictures"] == len(bundles) and layer["key_pictures"] >= 2 and layer["key_requests"] >= 1
    report = receiver.report()
    assert report["frames_output"] >= frames and report["render_errors"] == 0
    assert report["enhancement_key_requests"] >= 1
    # Pictures every 3rd frame, yet most frames render with one (the newest); after the loss some render without.
    assert report["frames_rendered_enhanced"] > 2 * report["enhancement_decoded"] > 0
    assert 0 < report["frames_rendered"] - report["frames_rendered_enhanced"] < report["frames_rendered_enhanced"]


async def test_the_receiver_tells_the_sender_how_many_frames_it_renders(server: RunningServer) -> None:  # noqa: F811
    """While pictures flow, each delay report says the frames rendered per second since the last one; the sender's
    controller keeps it (and would stretch the picture interval to it: tests/test_sender_controller.py)."""
    frames = 50
    receiver, sender, _ = tiny_enh_call(server.url, "enh-render", frames, RecordMessages(),
                                        receiver_settings={"report_interval_s": 0.3})
    assert await run_call(receiver, sender) == ("max_frames", "stopped")
    controller = sender.link_history[0].controller
    report = receiver.report()
    assert controller.rendered_fps is not None and 0 < controller.rendered_fps <= FPS * 1.5, controller.rendered_fps
    assert report["frames_rendered"] > 0
