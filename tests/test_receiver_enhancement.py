"""The receiver's enhancement layer (``receiver.enhancement``): pictures kept per frame, the loss rule, key requests."""

from __future__ import annotations

import numpy as np
import pytest

from codec.enhancement.bundle import FrameBundle
from codec.enhancement.lowres_codec import LowResEncoder, codecs_available, is_key_frame

pytestmark = pytest.mark.skipif(not codecs_available(), reason="this PyAV build has no libsvtav1/libdav1d")

E = 16


def faces(count: int, size: int = 64) -> list[np.ndarray]:
    """(size, size, 3) uint8 frames of a moving gradient."""
    y, x = np.mgrid[0:size, 0:size]
    return [np.stack([(x * 4 + 5 * i) % 256, (y * 4) % 256, np.full_like(x, 60 + 3 * i)], axis=-1).astype(np.uint8) for i in range(count)]


def bundles(count: int, keys: tuple[int, ...] = (), interval: int = 1) -> list[FrameBundle]:
    """The pictures of ``count`` pictures' frames (a picture with every ``interval``-th frame: the stream at 25/interval fps)."""
    with LowResEncoder(E, 40, 25.0 / interval) as encoder:
        out = []
        for i, face in enumerate(faces(count)):
            data = encoder.encode(face, key=i in keys)
            out.append(FrameBundle(b"\xa1", data, is_key_frame(data), interval))
    return out


def test_pictures_follow_their_frames_and_a_loss_waits_for_the_next_key() -> None:
    from receiver.enhancement import EnhancementReceiver

    sent = bundles(10, keys=(6,))
    rx = EnhancementReceiver(E, reorder_wait_ms=0)  # a gap is a loss at once (reordering: below)
    base = 65533  # the 16-bit sequence numbers wrap inside the test
    got = {}
    requests = []
    for i, bundle in enumerate(sent):
        if i == 3:
            continue  # lost
        seq = (base + i) % 65536
        got[i] = rx.receive(bundle, 7, seq, 1, now_ms=40.0 * i)
        requests.append(rx.key_request_due(40.0 * i))
    assert [i for i, p in got.items() if p is not None] == [0, 1, 2, 6, 7, 8, 9]
    assert all(p is None or p.shape == (E, E, 3) for p in got.values())
    # The loss shows at frame 4: ask at once with the newest seq, again only after the retry interval (300 ms).
    assert requests == [None, None, None, (base + 4) % 65536, None, None, None, None, None]
    counts = rx.counts()
    assert (counts.received, counts.decoded, counts.dropped, counts.ignored, counts.key_requests) == (9, 7, 2, 0, 1)
    assert rx.take(7, (base + 1) % 65536) is got[1]  # its own picture (again if rendered again)
    assert rx.take(7, (base + 4) % 65536) is None  # a frame without its picture renders from motion alone
    assert rx.take(8, (base + 1) % 65536) is None  # another stream's frame


def test_a_picture_every_third_frame_serves_the_frames_between_and_a_loss_waits_for_a_key() -> None:
    from receiver.enhancement import EnhancementReceiver

    sent = bundles(7, keys=(5,), interval=3)  # pictures of frames 0, 3, 6, ... 18; frame 15's is a key picture
    rx = EnhancementReceiver(E, reorder_wait_ms=0)
    base = 65530
    got = {}
    for j, bundle in enumerate(sent):
        if j == 3:
            continue  # frame 9's picture is lost
        got[3 * j] = rx.receive(bundle, 7, (base + 3 * j) % 65536, 1, now_ms=120.0 * j)
    assert [f for f, p in got.items() if p is not None] == [0, 3, 6, 15, 18]  # 12: no key since the loss
    shown = {f: rx.take(7, (base + f) % 65536) for f in range(21)}
    for f in (0, 1, 2, 3, 4, 5, 6, 7, 8):
        assert shown[f] is got[3 * (f // 3)], f  # the newest picture less than 3 frames old
    for f in (9, 10, 11, 12, 13, 14):
        assert shown[f] is None, f  # frame 9's picture lost, 12's undecodable: motion alone
    assert shown[15] is got[15] and shown[17] is got[15] and shown[20] is got[18]
    assert rx.counts().decoded == 5 and rx.counts().dropped == 1


def test_a_corrupt_picture_is_dropped_and_a_receiver_without_the_branch_ignores_pictures() -> None:
    from receiver.enhancement import EnhancementReceiver

    sent = bundles(4)
    rx = EnhancementReceiver(E)
    assert rx.receive(sent[0], 1, 0, 1, 0.0) is not None
    assert rx.receive(FrameBundle(b"\xa1", b"\xff\xff\xff", False), 1, 1, 1, 40.0) is None  # broken OBU framing
    assert rx.needs_key and rx.key_request_due(40.0) == 1
    assert rx.receive(sent[2], 1, 2, 1, 80.0) is None
    assert rx.receive(sent[3], 1, 3, 4, 120.0) is None  # a bundle of 4 frames: the picture is not for one frame
    assert rx.counts().dropped == 3
    none = EnhancementReceiver(0)
    assert none.receive(sent[0], 1, 0, 1, 0.0) is None and none.counts().ignored == 1 and none.key_request_due(0.0) is None


def test_a_new_stream_restarts_the_chain() -> None:
    from receiver.enhancement import EnhancementReceiver

    sent = bundles(3)
    rx = EnhancementReceiver(E)
    assert rx.receive(sent[0], 1, 100, 1, 0.0) is not None
    assert rx.receive(sent[1], 2, 5, 1, 40.0) is None  # another sender's stream: not a key picture, wait for one
    assert rx.key_request_due(40.0) == 5


def test_the_layers_control_messages_round_trip_and_old_rate_decisions_are_unchanged() -> None:
    from signaling import control as c

    for msg in (c.Capabilities(1, 48), c.EnhancementKey(65535), c.RateDecision(20, "default", 1, None, 30.0, "cap", 55),
                c.RateDecision(20, "default", 1, None, 20.0, "cap", 48, 3)):
        assert c.decode_control(c.encode_control(msg)) == msg
    plain = c.RateDecision(20, "default", 1, 8.0, 7.8, "cap 8 kbps")
    assert "enhancement_qp" not in c.encode_control(plain) and c.decode_control(c.encode_control(plain)) == plain
    with pytest.raises(c.ControlError, match="'seq' must be an integer in \\[0, 65535\\]"):
        c.decode_control('{"type":"enhancement_key","seq":65536}')
    with pytest.raises(c.ControlError, match="'enhancement_qp' must be an integer in \\[1, 63\\]"):
        c.decode_control(c.encode_control(plain)[:-1] + ',"enhancement_qp":0}')
    with pytest.raises(c.ControlError, match="'enhancement_interval' must be an integer in \\[1, 4\\]"):
        c.decode_control(c.encode_control(plain)[:-1] + ',"enhancement_qp":40,"enhancement_interval":5}')


def test_a_larger_picture_decodes_only_where_the_receiver_announced_that_side() -> None:
    from receiver.enhancement import EnhancementReceiver

    with LowResEncoder(96, 40, 25.0) as encoder:  # a top rung's picture, larger than the model's E = 16
        sent = [FrameBundle(b"\xa1", data, is_key_frame(data), 1) for data in (encoder.encode(f) for f in faces(3, 96))]
    reads = EnhancementReceiver(E, max_size=128)  # its output is 128²: it reads 96² and 128² besides E
    assert [reads.receive(b, 1, i, 1, now_ms=40.0 * i).shape for i, b in enumerate(sent)] == [(96, 96, 3)] * 3
    own_only = EnhancementReceiver(E)  # E only: the larger stream is refused and waits for a key of its own size
    assert [own_only.receive(b, 1, i, 1, now_ms=40.0 * i) for i, b in enumerate(sent)] == [None] * 3
    assert own_only.counts().dropped == 3 and own_only.needs_key


def test_a_new_interval_goes_on_in_the_same_stream_without_a_lost_picture() -> None:
    """The sender's schedule (``EnhancementSender``) across interval changes 3 → 1 → 2 → 4 → 1 of one SVT-AV1 stream:
    each bundle says the step from the picture before (``step``), so the receiver decodes every picture, asks for no
    key; bundles saying the rung's interval instead read as losses there."""
    from receiver.enhancement import EnhancementReceiver
    from sender.enhancement_sender import EnhancementSender

    schedule = [3] * 7 + [1] * 5 + [2] * 7 + [4] * 9 + [1] * 4  # the rung's interval at each frame
    for says_step, clean in ((True, True), (False, False)):
        sender, rx = EnhancementSender(), EnhancementReceiver(E)
        frames = faces(len(schedule))
        try:
            for seq, (interval, face) in enumerate(zip(schedule, frames)):
                if not sender.due(interval):
                    sender.skip()
                    continue
                step = sender.step(interval)
                data, key = sender.encode(face, E, 40, 25.0 / interval)
                bundle = FrameBundle(b"\xa1", data, key, interval if key or not says_step else step)
                rx.receive(bundle, 7, seq, 1, now_ms=40.0 * seq)
                assert rx.key_request_due(40.0 * seq) is None or not clean, seq
        finally:
            sender.close()
        counts = rx.counts()
        assert (counts.dropped == 0) is clean, counts
        if clean:
            assert counts.decoded == counts.received, counts
            # only the frames between the last picture at a shorter interval and the first at a longer one render from
            # motion alone (that picture's bundle said the shorter interval): 12 (1 → 2), 19 and 20 (2 → 4)
            assert [seq for seq in range(len(schedule)) if rx.take(7, seq) is None] == [12, 19, 20]


def test_pictures_that_swap_places_on_the_way_are_decoded_in_order() -> None:
    """Frame 4's bundle overtakes frame 3's (they took different paths): frame 4's picture waits for frame 3's, both
    decode, no key picture is asked for. A picture whose predecessor never comes is decoded as after a loss once it
    waited REORDER_WAIT_MS (the next arrival or a later one notices), and the key request follows."""
    from receiver.enhancement import REORDER_WAIT_MS, EnhancementReceiver

    sent = bundles(12)
    rx = EnhancementReceiver(E)
    order = [0, 1, 2, 4, 3, 5, 6, 7]  # 4 before 3
    got = {i: rx.receive(sent[i], 7, i, 1, now_ms=40.0 * n) for n, i in enumerate(order)}
    assert got[4] is None and got[3] is not None  # 4 waited, then decoded right after 3
    assert all(rx.take(7, i) is not None for i in range(8)) and rx.key_request_due(320.0) is None
    assert rx.counts().decoded == 8 and rx.counts().dropped == 0
    # frame 8 lost: 9 waits; 10 arrives 40 ms later (still waiting), 11 after the wait: the gap is a loss
    for i in (9, 10, 11):
        rx.receive(sent[i], 7, i, 1, now_ms=320.0 + 40.0 * (i - 8))
    assert 320.0 + 40.0 * 3 - 360.0 >= REORDER_WAIT_MS - 1e-9
    assert rx.key_request_due(440.0) == 11 and rx.counts().dropped == 3


def test_a_receiver_holds_few_pictures_for_reordering() -> None:
    from receiver.enhancement import MAX_HELD, EnhancementReceiver

    sent = bundles(MAX_HELD + 4)
    rx = EnhancementReceiver(E, reorder_wait_ms=1e9)  # nothing expires: only the bound ends the wait
    rx.receive(sent[0], 7, 0, 1, now_ms=0.0)
    for i in range(2, MAX_HELD + 4):  # frame 1 never comes
        rx.receive(sent[i], 7, i, 1, now_ms=float(i))
    assert len(rx._held) <= MAX_HELD and rx.needs_key


def test_a_frames_own_picture_and_its_interval() -> None:
    from receiver.enhancement import EnhancementReceiver

    sent = bundles(3, interval=3)  # pictures of frames 0, 3, 6
    rx = EnhancementReceiver(E)
    for j, bundle in enumerate(sent):
        rx.receive(bundle, 7, 3 * j, 1, now_ms=120.0 * j)
    own = rx.own_picture(7, 3)
    assert own is not None and own[0] is rx.take(7, 3) and own[1] == 3
    assert rx.own_picture(7, 4) is None and rx.take(7, 4) is own[0]  # served by frame 3's picture, not its own
    assert rx.own_picture(8, 3) is None
