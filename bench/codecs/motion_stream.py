"""Our motion stream over a loss-free channel with receiver feedback, in simulated time.

The packetizer sends KEY packets until the receiver's first acknowledgement arrives and predicts
DELTA packets from acknowledged frames afterwards (``codec.prediction``), so the bytes depend on
when feedback comes back. The channel modelled here: no loss, one-way delay ``ONE_WAY_DELAY_MS``
both ways, the receiver sends feedback every ``FEEDBACK_INTERVAL_MS`` (as packed bytes, through
``pack_feedback``/``unpack_feedback``). Frame i (of the driving frames) is captured at
i · 1000 / fps ms. Every packet is real: its ``len`` is what the data channel carries.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from codec.bitstream import SEQ_MODULUS, pack_feedback, unpack_feedback
from codec.motion import MotionParams
from codec.prediction import DEFAULT_KEY_INTERVAL_FRAMES, MotionDepacketizer, MotionPacketizer

ONE_WAY_DELAY_MS = 25.0
FEEDBACK_INTERVAL_MS = 50.0
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


def stream_motion(
    motions: Sequence[MotionParams],
    fps: float,
    preset_id: int,
    frames_per_packet: int,
    num_keypoints: int | None,
    keypoint_order: Sequence[int] | None = None,
    key_interval_frames: int = DEFAULT_KEY_INTERVAL_FRAMES,
) -> StreamResult:
    """Send ``motions`` (one per frame) through packetizer -> channel -> depacketizer.

    num_keypoints: send δ of only the first ``num_keypoints`` of ``keypoint_order`` (None: all).
    """
    count = len(motions)
    if not 0 < count < SEQ_MODULUS // 2:
        raise ValueError(f"can stream 1 to {SEQ_MODULUS // 2 - 1} frames, got {count}")
    frame_ms = 1000.0 / fps
    packetizer = MotionPacketizer(STREAM_ID, preset_id, frames_per_packet, key_interval_frames)
    if num_keypoints is not None:
        packetizer.set_num_keypoints(num_keypoints, keypoint_order)
    depacketizer = MotionDepacketizer()
    to_receiver: deque[tuple[float, bytes]] = deque()
    to_sender: deque[tuple[float, bytes]] = deque()
    packets: list[int] = []
    pack_ms = np.zeros(count)
    unpack_ms = np.zeros(count)
    decoded: dict[int, MotionParams] = {}
    feedback_bytes = 0
    next_tick = FEEDBACK_INTERVAL_MS

    def send(packet: bytes | None, now_ms: float) -> None:
        if packet is not None:
            packets.append(len(packet))
            to_receiver.append((now_ms + ONE_WAY_DELAY_MS, packet))

    def run_receiver(until_ms: float) -> None:
        nonlocal next_tick, feedback_bytes
        while True:
            arrival = to_receiver[0][0] if to_receiver else math.inf
            if arrival <= until_ms and arrival <= next_tick:
                _, packet = to_receiver.popleft()
                start = time.perf_counter()
                frames = depacketizer.receive(packet)
                elapsed = (time.perf_counter() - start) * 1e3
                for frame in frames:
                    decoded[frame.seq] = frame.motion
                    unpack_ms[frame.seq] += elapsed / len(frames)
            elif next_tick <= until_ms:
                feedback = depacketizer.feedback(STREAM_ID)
                if feedback is not None:
                    message = pack_feedback(feedback)
                    feedback_bytes += len(message)
                    to_sender.append((next_tick + ONE_WAY_DELAY_MS, message))
                next_tick += FEEDBACK_INTERVAL_MS
            else:
                return

    for i, motion in enumerate(motions):
        now = i * frame_ms
        run_receiver(now)
        while to_sender and to_sender[0][0] <= now:
            packetizer.on_feedback(unpack_feedback(to_sender.popleft()[1]))
        start = time.perf_counter()
        packet = packetizer.push(motion, int(round(now)))
        pack_ms[i] += (time.perf_counter() - start) * 1e3
        send(packet, now)
    start = time.perf_counter()
    packet = packetizer.flush()
    pack_ms[count - 1] += (time.perf_counter() - start) * 1e3
    send(packet, (count - 1) * frame_ms)
    if to_receiver:
        run_receiver(to_receiver[-1][0])
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
    )

