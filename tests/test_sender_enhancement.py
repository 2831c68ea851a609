"""sender.enhancement_sender: pictures on the encoder's thread, key requests, and a hung SVT-AV1 abandoned in time."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from sender import enhancement_sender as es
from sender.enhancement_sender import EncoderHung, EnhancementSender


class FakeEncoder:
    """Returns b"key"/b"delta"; hangs (forever, until released) on the pictures listed in ``hang_at``."""

    instances: list[FakeEncoder] = []

    def __init__(self, size: int, qp: int, fps: float, hang_at: tuple[int, ...] = ()) -> None:
        self.size = size
        self.calls = 0
        self.hang_at = hang_at
        self.release = threading.Event()
        self.last_was_key = False
        self.closed = False
        FakeEncoder.instances.append(self)

    def set_qp(self, qp: int) -> None:
        pass

    def set_fps(self, fps: float) -> None:
        pass

    def encode(self, face: np.ndarray, key: bool = False) -> bytes:
        self.calls += 1
        if self.calls in self.hang_at:
            self.release.wait(30)
        self.last_was_key = key or self.calls == 1
        return b"key" if self.last_was_key else b"delta"

    def close(self) -> None:
        self.closed = True


FACE = np.zeros((64, 64, 3), np.uint8)


def test_pictures_and_key_requests() -> None:
    FakeEncoder.instances.clear()
    sender = EnhancementSender(FakeEncoder)
    assert sender.encode(FACE, 64, 48, 25.0) == (b"key", True)
    assert sender.encode(FACE, 64, 48, 25.0) == (b"delta", False)
    sender.last_key_seq = 100
    sender.on_key_request(90)  # a key after seq 90 is already on its way
    assert sender.encode(FACE, 64, 48, 25.0) == (b"delta", False) and sender.key_requests_ignored == 1
    sender.on_key_request(120)
    assert sender.encode(FACE, 64, 48, 25.0) == (b"key", True)
    assert sender.stats()["encoder_hangs"] == 0 and sender.stats()["encode_ms_median"] is not None
    sender.close()
    time.sleep(0.05)
    assert FakeEncoder.instances[0].closed


def test_a_new_picture_size_opens_a_new_encoder_with_a_key_picture() -> None:
    FakeEncoder.instances.clear()
    sender = EnhancementSender(FakeEncoder)
    face = np.zeros((256, 256, 3), np.uint8)
    assert sender.encode(face, 64, 48, 25.0) == (b"key", True)
    assert sender.encode(face, 64, 55, 25.0) == (b"delta", False)  # a new qp keeps the stream
    assert sender.encode(face, 128, 55, 25.0) == (b"key", True)  # a new size: a new stream
    assert [e.size for e in FakeEncoder.instances] == [64, 128]
    assert sender.encode(face, 128, 55, 25.0) == (b"delta", False)
    time.sleep(0.05)
    assert FakeEncoder.instances[0].closed and not FakeEncoder.instances[1].closed
    sender.close()


def test_a_picture_is_due_every_nth_frame_and_at_once_after_a_pause() -> None:
    sender = EnhancementSender(FakeEncoder)
    pictures = []
    for frame in range(10):
        if sender.due(3):
            pictures.append((frame, sender.encode(FACE, 64, 48, 25.0 / 3)[1]))
        else:
            sender.skip()
        if frame == 5:
            sender.paused = True  # a motion-only stretch, or a key request: the next frame gets a key picture
    assert pictures == [(0, True), (3, False), (6, True), (9, False)]
    assert sender.due(1)  # every frame on an interval-1 rung
    sender.close()


def test_a_hung_encoder_is_abandoned_and_a_fresh_one_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(es, "ENCODE_TIMEOUT_S", 0.1)
    FakeEncoder.instances.clear()
    sender = EnhancementSender(lambda size, qp, fps: FakeEncoder(size, qp, fps, hang_at=(3,)))
    sender.encode(FACE, 64, 48, 25.0)
    sender.encode(FACE, 64, 48, 25.0)
    started = time.perf_counter()
    with pytest.raises(EncoderHung, match="fresh encoder"):
        sender.encode(FACE, 64, 48, 25.0)
    assert time.perf_counter() - started < 1.0  # the event loop would have waited 0.1 s, not forever
    assert sender.hangs == 1 and sender.paused
    # the next picture: a new encoder, a key frame
    assert sender.encode(FACE, 64, 48, 25.0) == (b"key", True)
    assert len(FakeEncoder.instances) == 2
    FakeEncoder.instances[0].release.set()  # let the abandoned thread finish
