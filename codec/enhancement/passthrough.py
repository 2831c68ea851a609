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

Such a rung's motion serves only the frames after a lost picture (until the key picture that restarts the stream): it
is sent with ``codec.enhancement.picture_rate.RUNG_KEYPOINTS`` keypoints, as every enhanced rung's.
"""

from __future__ import annotations


def shows_picture(picture_side: int, output_side: int, interval: int, own: bool) -> bool:
    """Whether a frame is shown as its decoded picture: its own picture (``own``), at the output's side, from a
    stream with a picture every frame (``interval`` 1: no alternation between pictures and renders)."""
    return own and interval == 1 and picture_side == output_side
