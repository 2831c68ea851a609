"""When the receiver shows the decoded picture itself instead of the generator's output.

A top rung sends the face crop at the output's own side (256²) with every frame. There the picture *is* the frame,
coded by SVT-AV1, and the generator, which reads it beside the motion, does not improve on it. Chosen on the
validation people (`python -m bench rd --people val --codecs ours,av1 --enhancement-rungs 256:qp40,256:qp48,256:qp55
...`, 8 people, 100 frames each, 2026-12-07; the AV1 baseline codes the very same crops with the very same encoder
settings, so its frames are these pictures): face PSNR of the picture against the generator's output with it, qp 40
35.78 against 34.25 dB, qp 48 33.70 against 33.08, qp 55 31.80 against 31.89 (a tie). So a frame that has its own
picture, at the output's side, from a stream with a picture every frame, is shown as decoded, and costs no render.
Frames between pictures (a picture every N-th frame: no alternation between the two), frames whose picture was lost,
smaller pictures, and an avatar or a turned view (the picture shows the sender's own face in the sender's pose)
still go through the generator.

    if shows_picture(picture.shape[0], output_size, interval, own=True):
        image = picture                      # (S, S, 3) uint8, as decoded

A sender sends such a rung's motion with ``fallback_keypoints(K)`` keypoints (see ``FALLBACK_KEYPOINTS``).
"""

from __future__ import annotations

# Such a rung's motion is only the fallback for frames whose picture was lost (until the key picture that restarts the
# stream): it is sent with this many keypoints' δ, not all. Validation people (`python -m bench rd --people val
# --codecs ours --keypoints 20,10,5,0 --presets default,coarse --frames-per-packet 1 --frames 100`, 7 clips,
# 2026-12-07), motion alone at 1 frame per packet, payload kbps and face PSNR: K = 20 4.92, 26.40 dB; K = 10 3.33,
# 25.51; K = 5 2.52, 25.18; K = 0 1.70, 24.73 (pose only: the mouth stays still). K = 5 saves 2.4 kbps on every top
# rung for 1.2 dB on frames that are rendered only after a loss, where they stand in for a 31-35 dB picture anyway.
FALLBACK_KEYPOINTS = 5


def shows_picture(picture_side: int, output_side: int, interval: int, own: bool) -> bool:
    """Whether a frame is shown as its decoded picture: its own picture (``own``), at the output's side, from a
    stream with a picture every frame (``interval`` 1: no alternation between pictures and renders)."""
    return own and interval == 1 and picture_side == output_side


def fallback_keypoints(num_keypoints: int) -> int:
    """Keypoints sent on a rung whose frames are shown as their decoded pictures (at most ``FALLBACK_KEYPOINTS``)."""
    return min(num_keypoints, FALLBACK_KEYPOINTS)
