"""The enhancement layer towards one receiver: its SVT-AV1 encoder, key requests, costs, and a guard against a hung encoder.

Each picture is coded on the encoder's own worker thread and waited for at most ``ENCODE_TIMEOUT_S``
(``FIRST_ENCODE_TIMEOUT_S`` for the call that opens SVT-AV1 and starts its threads). SVT-AV1 has been seen to
hang for good inside an encode call (``codec.data enhance``, 2026-12-06: every thread of the process waiting on
a futex, on a loaded 2-core machine); in a call that would freeze the sender's event loop and every receiver's
motion with it. A call past the timeout is taken as hung: that encoder and its thread are abandoned (a native
call cannot be interrupted; the thread is left to itself), ``encode`` raises ``EncoderHung`` (the caller sends
the frame's motion alone), and the next picture opens a fresh encoder with a key frame.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from codec.bitstream import seq_newer
from codec.enhancement.lowres_codec import LowResEncoder
from codec.enhancement.picture_rate import MAX_INTERVAL

logger = logging.getLogger(__name__)

ENCODE_TIMEOUT_S = 0.25  # one 64² picture takes ~2-10 ms; 10 frame intervals at 25 fps is a hang
FIRST_ENCODE_TIMEOUT_S = 3.0  # the first call opens SVT-AV1 and starts its threads


class EncoderHung(RuntimeError):
    """SVT-AV1 did not return in time; the encoder was abandoned and the next picture opens a fresh one."""


class EnhancementSender:
    """Per receiver link: pictures at the rung's size and qp, key frames when the receiver asks, after a gap or a new size."""

    def __init__(self, encoder_factory: Callable[[int, int, float], Any] = LowResEncoder) -> None:
        self._factory = encoder_factory
        self.encoder: Any = None  # a LowResEncoder, opened on the first picture
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None
        self._encoded = 0  # pictures the current encoder returned
        self._since_picture = 0  # frames of an enhanced rung sent without a picture since the last one
        self.paused = True  # no picture went out for the previous frame: the next one must be a key frame
        self.last_key_seq: int | None = None  # motion seq of the newest key picture sent
        self.pictures = 0
        self.key_pictures = 0
        self.bytes = 0
        self.key_requests = 0
        self.key_requests_ignored = 0  # a key picture after the requested seq was already on its way
        self.hangs = 0  # encoders abandoned because a call did not return in time
        self.qp: int | None = None  # of the newest picture
        self.last_was_key = False  # the newest picture is a key picture
        self.encode_ms: deque[float] = deque(maxlen=500)

    def due(self, interval: int) -> bool:
        """Whether this frame gets a picture at one picture every ``interval`` frames: the first after a pause (a
        key), then every ``interval``-th frame offered (``skip`` counts the ones in between)."""
        return self.paused or self._since_picture + 1 >= interval

    def step(self, interval: int) -> int:
        """The interval the bundle of the picture due now says: ``interval`` for the first after a pause (a key), else
        the frames since the previous picture. They differ only just after a shorter interval was chosen (a picture
        due under the old one may be more than the new interval after the one before); the stream goes on across an
        interval change (``LowResEncoder.set_fps``), and the receiver reads a step unlike the bundle's as a lost
        picture. Call before ``encode``."""
        return interval if self.paused or self.encoder is None else min(MAX_INTERVAL, self._since_picture + 1)

    def skip(self) -> None:
        """A frame of an enhanced rung went without a picture (not due): the receiver renders it with the last one."""
        self._since_picture += 1

    def encode(self, face: np.ndarray, size: int, qp: int, fps: float) -> tuple[bytes, bool]:
        """This frame's picture at ``qp``, coded as a stream at ``fps`` (the call's rate / the interval), and whether it
        is a key frame; ``EncoderHung`` if SVT-AV1 hung. A new ``size`` (a rung with a larger or smaller picture) closes
        the encoder and opens one at that size: its first picture is a key frame."""
        if self.encoder is not None and self.encoder.size != size:
            self.close()
            self.paused = True
        if self.encoder is None:
            self.encoder = self._factory(size, qp, fps)
            self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="svt-av1")
            self._encoded = 0
        assert self._worker is not None
        self.encoder.set_qp(qp)
        self.encoder.set_fps(fps)
        self.qp = qp
        timeout_s = FIRST_ENCODE_TIMEOUT_S if self._encoded == 0 else ENCODE_TIMEOUT_S
        start = time.perf_counter()
        future = self._worker.submit(self.encoder.encode, face, self.paused)
        try:
            data: bytes = future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            self.hangs += 1
            self._abandon()
            raise EncoderHung(
                f"SVT-AV1 did not return within {timeout_s:g} s (hang {self.hangs}): encoder abandoned; this frame goes as "
                "motion alone and the next picture opens a fresh encoder (a key frame)"
            ) from None
        self.encode_ms.append((time.perf_counter() - start) * 1000.0)
        self._encoded += 1
        self._since_picture = 0
        self.paused = False
        self.last_was_key = bool(self.encoder.last_was_key)
        return data, self.last_was_key

    def on_key_request(self, seq: int) -> None:
        self.key_requests += 1
        if self.last_key_seq is not None and seq_newer(self.last_key_seq, seq):
            self.key_requests_ignored += 1
            return
        self.paused = True  # the next picture is a key frame

    def stats(self) -> dict[str, Any]:
        return {
            "pictures": self.pictures, "key_pictures": self.key_pictures, "bytes": self.bytes,
            "key_requests": self.key_requests, "key_requests_ignored": self.key_requests_ignored,
            "encode_ms_median": round(float(np.median(self.encode_ms)), 3) if self.encode_ms else None,
            "qp": self.qp, "encoder_hangs": self.hangs,
        }

    def _abandon(self) -> None:
        """Forget a hung encoder and its thread without waiting for either."""
        if self._worker is not None:
            self._worker.shutdown(wait=False, cancel_futures=True)
        self.encoder = self._worker = None
        self.paused = True

    def close(self) -> None:
        """Close the encoder on its own thread (queued after any picture in flight); never waits for it."""
        encoder, worker = self.encoder, self._worker
        self.encoder = self._worker = None
        if encoder is not None and worker is not None:
            worker.submit(encoder.close)
            worker.shutdown(wait=False)
