"""Our motion stream over a loss-free channel with receiver feedback, in simulated time.

The packetizer sends KEY packets until the receiver's first acknowledgement arrives and predicts
DELTA packets from acknowledged frames afterwards (``codec.prediction``), so the bytes depend on
when feedback comes back. The channel modelled here is the one of ``python -m bench bitstream``
(``bench.bitstream``): no loss; the receiver decodes each packet when it is sent and its feedback
(as packed bytes, through ``pack_feedback``/``unpack_feedback``) reaches the sender
``FEEDBACK_DELAY_MS`` later (a round trip plus the receiver's feedback interval). Frame i is
captured at i · 1000 / fps ms. Every packet is real: its ``len`` is what the data channel carries.
At K below the model's, the keypoints sent are the sender's own causal choice
(``bench.keypoint_choice``), revised as the clip goes, never looking ahead.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.bitstream import BenchConfig
from bench.keypoint_choice import SenderKeypointChoice
from codec.bitstream import SEQ_MODULUS, pack_feedback, unpack_feedback
from codec.motion import MotionParams
from codec.prediction import DEFAULT_KEY_INTERVAL_FRAMES, MotionDepacketizer, MotionPacketizer

FEEDBACK_DELAY_MS = BenchConfig().feedback_delay_ms  # the bitstream benchmark's channel (100 ms)
STREAM_ID = 1


@dataclass(frozen=True, eq=False)
class StreamResult:
    """What crossed the channel and what the receiver decoded.

    packets: sizes in bytes of every motion packet, in send order.
    decoded: (M,) MotionParams the receiver decoded for each frame, in frame order.
    pack_ms / unpack_ms: (M,) per frame: time in the packetizer's ``push`` for that frame (quantize,
        and code a packet when it completes one; the final ``flush`` counts for the last frame) and
        depacketize time at the receiver (a packet's time shared equally by its frames).
    key_packets: how many packets were KEYs; feedback_bytes: total feedback bytes sent back.
    """

    packets: tuple[int, ...]
    decoded: tuple[MotionParams, ...] = field(repr=False)
    pack_ms: np.ndarray = field(repr=False)
    unpack_ms: np.ndarray = field(repr=False)
    key_packets: int
    feedback_bytes: int
    keypoint_choices: int = 0  # how often the sender (re)chose the keypoints sent (0: all sent)


def stream_motion(
    motions: Sequence[MotionParams],
    fps: float,
    preset_id: int,
    frames_per_packet: int,
    num_keypoints: int | None,
    expression_baseline: np.ndarray | None = None,
    key_interval_frames: int = DEFAULT_KEY_INTERVAL_FRAMES,
) -> StreamResult:
    """Send ``motions`` (one per frame) through packetizer -> channel -> depacketizer.

    num_keypoints: send δ of only that many keypoints, chosen as the sender chooses them from the frames so far
    (None: all). expression_baseline: (K, 3) the portrait's own δ, the sender's reference for that choice.
    """
    count = len(motions)
    if not 0 < count < SEQ_MODULUS // 2:
        raise ValueError(f"can stream 1 to {SEQ_MODULUS // 2 - 1} frames, got {count}")
    frame_ms = 1000.0 / fps
    packetizer = MotionPacketizer(STREAM_ID, preset_id, frames_per_packet, key_interval_frames)
    choice = None
    if num_keypoints is not None:
        choice = SenderKeypointChoice(fps, motions[0].num_keypoints, num_keypoints, frames_per_packet, preset_id,
                                      expression_baseline)
    depacketizer = MotionDepacketizer()
    to_sender: deque[tuple[float, bytes]] = deque()
    packets: list[int] = []
    pack_ms = np.zeros(count)
    unpack_ms = np.zeros(count)
    decoded: dict[int, MotionParams] = {}
    feedback_bytes = 0

    def deliver(packet: bytes | None, now_ms: float) -> None:
        nonlocal feedback_bytes
        if packet is None:
            return
        packets.append(len(packet))
        start = time.perf_counter()
        frames = depacketizer.receive(packet)
        elapsed = (time.perf_counter() - start) * 1e3
        for frame in frames:
            decoded[frame.seq] = frame.motion
            unpack_ms[frame.seq] += elapsed / len(frames)
        feedback = depacketizer.feedback(STREAM_ID)
        if feedback is not None:
            message = pack_feedback(feedback)
            feedback_bytes += len(message)
            to_sender.append((now_ms + FEEDBACK_DELAY_MS, message))

    for i, motion in enumerate(motions):
        now = i * frame_ms
        while to_sender and to_sender[0][0] <= now:
            packetizer.on_feedback(unpack_feedback(to_sender.popleft()[1]))
        start = time.perf_counter()
        if choice is not None:
            choice.step(motion, now / 1000.0, packetizer)
        packet = packetizer.push(motion, int(round(now)))
        pack_ms[i] += (time.perf_counter() - start) * 1e3
        deliver(packet, now)
    start = time.perf_counter()
    packet = packetizer.flush()
    pack_ms[count - 1] += (time.perf_counter() - start) * 1e3
    deliver(packet, (count - 1) * frame_ms)
    missing = [i for i in range(count) if i not in decoded]
    if missing:
        raise RuntimeError(f"the receiver did not decode frames {missing[:10]} of a loss-free stream")
    return StreamResult(
        packets=tuple(packets),
        decoded=tuple(decoded[i] for i in range(count)),
        pack_ms=pack_ms,
        unpack_ms=unpack_ms,
        key_packets=packetizer.key_packets_sent,
        feedback_bytes=feedback_bytes,
        keypoint_choices=0 if choice is None else choice.choices,
    )

