"""The no-motion floor: the receiver shows the reference portrait for every frame.

It costs what our codec costs before any motion arrives (the reference portrait, sent once) and
nothing per frame. Talking heads move little, so whole-frame metrics of this "codec" are high; the
gap between a codec and this floor is what its motion (or video) actually buys.
"""

from __future__ import annotations

import time

import numpy as np

from bench.codecs.base import BenchClip, Codec, StreamInfo
from bench.codecs.reference import MODEL_ID, MODEL_VERSION, send_reference


class NoMotionFloor(Codec):
    """Output = the reference portrait as the receiver decodes it, for every driving frame."""

    codec = "no-motion floor"
    setting = "output = reference"

    def __init__(self, model_id: str = MODEL_ID, model_version: str = MODEL_VERSION) -> None:
        self.model_id, self.model_version = model_id, model_version  # carried in the reference message

    def params(self) -> dict[str, object]:
        return {"reference": "the reference message (JPEG portrait), decoded"}

    def run(self, clip: BenchClip, shown: np.ndarray | None = None) -> tuple[StreamInfo, np.ndarray]:
        idx = self.shown_indices(clip, shown)
        sent = send_reference(clip.frames[0], self.model_id, self.model_version)
        decode_ms = np.zeros(idx.size)
        reconstruction = np.empty((idx.size,) + clip.frames.shape[1:], np.uint8)
        for i in range(idx.size):
            start = time.perf_counter()
            reconstruction[i] = sent.image
            decode_ms[i] = (time.perf_counter() - start) * 1e3
        info = StreamInfo(
            start_payload_bytes=sent.payload_bytes,
            start_wire_bytes=sent.wire_bytes,
            payload_bytes=0,
            wire_bytes=0,
            packets=0,
            encode_ms=np.zeros(clip.num_driving),
            decode_ms=decode_ms,
        )
        return info, reconstruction
