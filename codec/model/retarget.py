"""Cross-identity: drive another portrait (a person, a painting, a cartoon) with the sender's motion.

Absolute mode uses the sender's pose and expression as they are. Relative mode (as in FOMM and
face-vid2vid demos) applies the *change* since the driver's first frame on top of the avatar's own
pose and expression, so the avatar keeps its head position and neutral face:
    angles_out = avatar + (motion − driver_first), t likewise, δ likewise.
"""

from __future__ import annotations

import numpy as np

from codec.motion import MotionParams


def retarget_relative(motion: MotionParams, source_reference_motion: MotionParams, avatar_reference_motion: MotionParams) -> MotionParams:
    """motion: the driver's current frame; source_reference_motion: the driver's first frame (or its
    reference); avatar_reference_motion: the avatar's own motion. Keypoints whose δ is absent in
    ``motion`` keep the avatar's own δ."""
    if not (motion.num_keypoints == source_reference_motion.num_keypoints == avatar_reference_motion.num_keypoints):
        raise ValueError("retargeting needs the same K for the motion and both references")
    delta = avatar_reference_motion.expression + (motion.expression - source_reference_motion.expression)
    delta = np.where(motion.present[:, None], delta, avatar_reference_motion.expression)
    return MotionParams(
        avatar_reference_motion.yaw + motion.yaw - source_reference_motion.yaw,
        avatar_reference_motion.pitch + motion.pitch - source_reference_motion.pitch,
        avatar_reference_motion.roll + motion.roll - source_reference_motion.roll,
        avatar_reference_motion.translation + motion.translation - source_reference_motion.translation,
        delta,
        np.ones(motion.num_keypoints, bool),
    )
