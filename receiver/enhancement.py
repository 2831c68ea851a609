"""The receiver's enhancement layer: decodes the pictures that ride in frame bundles and keeps each with its frame.

One ``EnhancementReceiver`` per sender link. Frame bundles carry one frame each (the sender sends them
only at one frame per packet). A picture rides with every frame, or with every N-th (the bundle says N,
``codec.enhancement.picture_rate``): its position in the AV1 chain follows from its motion frame's
sequence number (unwrapped here): the picture after one at frame s belongs to frame s + N, and any other
step is a lost picture (or a new chain, which starts with a key picture). ``LowResDecoder`` applies the loss
rule: after a gap, a stale or a corrupt picture it returns nothing until the next key picture.

Which picture a frame renders with (``take``): its own, else the newest decoded picture less than N frames
older (the frames between two pictures), else none: the frame renders from motion alone (a lost, late or
undecodable picture never freezes the face). ``key_request_due`` says when to ask the sender for a key
picture (at once, then again every ``key_retry_ms`` while still waiting: the key bundle itself may be lost).

    enhancement = EnhancementReceiver(size=64)
    enhancement.receive(bundle, stream_id, seq, num_frames, now_ms)   # after the motion part was accepted
    picture = enhancement.take(stream_id, seq)                        # at playout: (E, E, 3) uint8 or None
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from codec.bitstream import SEQ_MODULUS, unwrap_seq
from codec.enhancement.bundle import MAX_INTERVAL, FrameBundle
from codec.exceptions import BitstreamError

logger = logging.getLogger(__name__)

MAX_KEPT_PICTURES = 128  # decoded pictures kept for their frames' playout (~5 s at 25 fps; the jitter buffer holds ≤ 0.5 s)
KEY_RETRY_MS = 300.0
# A picture that comes more than its interval after the newest one waits this long for the ones between: bundles that
# ride in audio packets and bundles too large to ride take different paths and can swap places (a 20 s bench call at
# 30 kbps lost its chain 6 times so, asking for a key picture each time, 2026-12-07). Its frame renders meanwhile with
# the picture before it, if still within that one's interval.
REORDER_WAIT_MS = 80.0
MAX_HELD = 8  # pictures waiting at most (beyond: the gap is taken as a loss at once)


@dataclass(frozen=True)
class EnhancementCounts:
    """Cumulative counts of one sender link's enhancement pictures."""

    received: int  # pictures that arrived in a bundle whose motion part was accepted
    decoded: int  # ... that decoded to a picture
    dropped: int  # ... that did not: waiting for a key picture, stale, corrupt, or in a bundle of more than one frame
    ignored: int  # ... not decoded because this receiver's model has no enhancement branch
    key_requests: int  # enhancement_key messages sent


class EnhancementReceiver:
    """See the module docstring. ``size`` = E of the synthesizer's branch; 0 = no branch (pictures are
    counted and ignored). Pictures of E or of a larger side up to ``max_size`` (``readable_sizes``: the top rungs)
    decode; 0 = E only."""

    def __init__(self, size: int, key_retry_ms: float = KEY_RETRY_MS, max_size: int = 0,
                 reorder_wait_ms: float = REORDER_WAIT_MS) -> None:
        self.size = size
        self.key_retry_ms = key_retry_ms
        self.reorder_wait_ms = reorder_wait_ms
        self._decoder = None
        if size:
            from codec.enhancement.lowres_codec import LowResDecoder  # PyAV's codecs only where they are used
            from codec.enhancement.picture_rate import readable_sizes

            self._decoder = LowResDecoder(readable_sizes(size, max_size))
        self._stream_id: int | None = None
        self._last_ext: int | None = None
        self._pictures: OrderedDict[tuple[int, int], tuple[np.ndarray, int]] = OrderedDict()  # (stream, ext seq) -> picture, interval
        self._chain: tuple[int, int] | None = None  # (ext seq, chain index) of the newest picture handed to the decoder
        self._held: dict[int, tuple[FrameBundle, float]] = {}  # ext seq -> (bundle, arrival ms): waiting for the one before
        self._newest_seq: int | None = None
        self._last_request_ms: float | None = None
        self.received = self.decoded = self.dropped = self.ignored = self.key_requests = 0

    @property
    def active(self) -> bool:
        """True once a bundle arrived (the sender sends the layer)."""
        return self._stream_id is not None

    @property
    def needs_key(self) -> bool:
        """The decoder waits for a key picture (and the sender sends the layer)."""
        return self._decoder is not None and self.active and self._decoder.needs_key

    def counts(self) -> EnhancementCounts:
        return EnhancementCounts(self.received, self.decoded, self.dropped, self.ignored, self.key_requests)

    def receive(self, bundle: FrameBundle, stream_id: int, seq: int, num_frames: int, now_ms: float) -> np.ndarray | None:
        """The picture of motion frame ``seq`` of ``stream_id`` (its motion packet already accepted): decoded and
        kept for ``take``; returns it, or None when it could not be used (counted) or waits for the one before it."""
        self.received += 1
        if self._decoder is None:
            self.ignored += 1
            return None
        if stream_id != self._stream_id:  # a new stream: its chain starts afresh
            if self._stream_id is not None:
                logger.info("enhancement stream %d replaces %d: waiting for its key picture", stream_id, self._stream_id)
            self._stream_id, self._last_ext, self._chain = stream_id, None, None
            self._decoder.reset()
            self._pictures.clear()
            self.dropped += len(self._held)
            self._held.clear()
        ext = unwrap_seq(seq, self._last_ext)
        if self._newest_seq is None or self._last_ext is None or ext > self._last_ext:
            self._newest_seq = seq
        self._last_ext = ext if self._last_ext is None else max(self._last_ext, ext)
        if num_frames != 1:
            self.dropped += 1
            logger.info("a frame bundle carried %d motion frames (the layer needs 1 per packet): its picture is dropped", num_frames)
            return None
        picture = None
        if self._chain is not None and ext - self._chain[0] > bundle.interval and not bundle.key and len(self._held) < MAX_HELD:
            self._held[ext] = (bundle, now_ms)  # the picture before it may come yet (a bundle on another path)
        else:
            picture = self._decode(bundle, ext)
        self._drain(now_ms)
        return picture

    def _decode(self, bundle: FrameBundle, ext: int) -> np.ndarray | None:
        """Hand one picture to the decoder in chain order; keep it for ``take`` when it decodes."""
        try:
            picture = self._decoder.decode(bundle.picture, self._chain_index(ext, bundle.interval))  # type: ignore[union-attr]
        except BitstreamError as exc:  # EnhancementDecodeError: the decoder now waits for a key picture
            self.dropped += 1
            logger.info("enhancement picture of frame %d dropped: %s", ext % SEQ_MODULUS, exc)
            return None
        if picture is None:
            self.dropped += 1
            return None
        self.decoded += 1
        self._last_request_ms = None  # a later loss asks again at once
        assert self._stream_id is not None
        self._pictures[(self._stream_id, ext)] = (picture, bundle.interval)
        while len(self._pictures) > MAX_KEPT_PICTURES:
            self._pictures.popitem(last=False)
        return picture

    def _drain(self, now_ms: float) -> None:
        """Decode the held pictures that now follow the chain; one held past ``REORDER_WAIT_MS`` goes as it is (the
        one before it is lost: the decoder waits for a key picture, asked for by ``key_request_due``)."""
        while self._held:
            first = min(self._held)
            bundle, arrived_ms = self._held[first]
            follows = self._chain is None or first - self._chain[0] <= bundle.interval
            if not follows and now_ms - arrived_ms < self.reorder_wait_ms:
                return
            del self._held[first]
            self._decode(bundle, first)

    def _chain_index(self, ext: int, interval: int) -> int:
        """The picture's place in the AV1 chain (what ``LowResDecoder.decode`` checks for gaps): one past the newest
        picture's when it comes ``interval`` frames after it, two past (a gap: lost pictures, or a new chain that opens
        with a key picture) when later, the newest's own (stale: ignored) when not later."""
        if self._chain is None:
            index = 0
        else:
            last_ext, last_index = self._chain
            step = ext - last_ext
            index = last_index + 1 if step == interval else last_index + 2 if step > 0 else last_index
        if self._chain is None or index > self._chain[1]:
            self._chain = (ext, index)
        return index

    def take(self, stream_id: int, seq: int) -> np.ndarray | None:
        """The picture frame ``seq`` (16 bits) renders with: its own, else the newest one less than its interval frames
        older; None when there is none (the frame renders from motion alone)."""
        if stream_id != self._stream_id or self._last_ext is None:
            return None
        ext = unwrap_seq(seq % SEQ_MODULUS, self._last_ext)
        for age in range(MAX_INTERVAL):
            kept = self._pictures.get((stream_id, ext - age))
            if kept is not None:
                picture, interval = kept
                return picture if age < interval else None
        return None

    def own_picture(self, stream_id: int, seq: int) -> tuple[np.ndarray, int] | None:
        """Frame ``seq``'s own picture and the interval its bundle said, or None (it has none: an older picture, if
        any, serves it through ``take``)."""
        if stream_id != self._stream_id or self._last_ext is None:
            return None
        return self._pictures.get((stream_id, unwrap_seq(seq % SEQ_MODULUS, self._last_ext)))

    def key_request_due(self, now_ms: float) -> int | None:
        """The sequence number to put in an ``enhancement_key`` message when one should go now, else None."""
        if not self.needs_key or self._newest_seq is None:
            return None
        if self._last_request_ms is not None and now_ms - self._last_request_ms < self.key_retry_ms:
            return None
        self._last_request_ms = now_ms
        self.key_requests += 1
        return self._newest_seq
