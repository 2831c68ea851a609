"""The sender's own, causal choice of which keypoints' δ to send at a pinned K, for the benchmarks.

A call decides with ``sender.controller.BandwidthController`` frame by frame, from the frames it has
seen so far (never the rest of the clip). The benchmarks pin K, frames per packet and the quantizer
preset, and replay that same controller over the clip in simulated time: each frame is observed, then
``decide`` may re-choose the keypoints (at the start, and later at most every ``RERANK_S`` while K
holds), and the packetizer is told as the sender's receiver link tells it.
"""

from __future__ import annotations

import numpy as np

from codec.motion import MotionParams
from codec.prediction import MotionPacketizer
from sender.controller import BandwidthController


class SenderKeypointChoice:
    """Replays the sender's keypoint choice; ``step`` once per frame, before the frame is pushed."""

    def __init__(self, fps: float, num_keypoints: int, keypoints: int, frames_per_packet: int, preset_id: int,
                 expression_baseline: np.ndarray | None = None) -> None:
        """``expression_baseline``: (K, 3) the portrait's own δ as the sender computes it (None: 0)."""
        self.controller = BandwidthController(
            fps, num_keypoints, max_kbps=None, keypoints=keypoints, frames_per_packet=frames_per_packet,
            preset=preset_id, expression_baseline=expression_baseline,
        )
        self.choices = 0  # how many times the keypoints sent were (re)chosen

    @property
    def present_mask(self) -> np.ndarray:
        """(K,) bool: the keypoints whose δ the current choice sends (all False before the first frame)."""
        mask = np.zeros(self.controller.num_keypoints, bool)
        current = self.controller.current
        if current is not None:
            mask[list(current.order[: current.rung.keypoints])] = True
        return mask

    def step(self, motion: MotionParams, now_s: float, packetizer: MotionPacketizer) -> None:
        """Observe the frame captured at ``now_s`` and apply a new choice to ``packetizer`` if there is one."""
        self.controller.observe_motion(motion)
        decision = self.controller.decide(now_s)
        if decision is not None:
            packetizer.set_num_keypoints(decision.rung.keypoints, decision.order)
            self.choices += 1
