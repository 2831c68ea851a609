"""Loss-robust motion streaming: the sender (packetizer) and receiver (depacketizer) state machines.

Sender::

    packetizer = MotionPacketizer(stream_id=1, preset_id=DEFAULT_PRESET_ID, frames_per_packet=2,
                                  key_interval_frames=250)
    packet = packetizer.push(motion, capture_ts_ms)   # bytes to send on the unreliable channel, or None
    packetizer.on_feedback(Feedback.unpack(msg))      # feedback arriving on the reliable channel
    packetizer.request_key()                          # e.g. a new receiver joined
    packetizer.set_present_mask(mask) / set_num_keypoints(n) / set_preset(preset_id)
    packet = packetizer.flush()                       # send a partly filled packet now

Receiver::

    depacketizer = MotionDepacketizer()
    for frame in depacketizer.receive(packet):        # BitstreamError for a malformed packet
        show(frame.seq, frame.capture_ts_ms, frame.motion, frame.stream_id)
    feedback = depacketizer.feedback()                # None until a packet arrived
    if feedback is not None:
        control_channel.send(feedback.pack())         # e.g. after each packet or every 40-100 ms

How loss is survived:
- A DELTA packet predicts its first frame from a frame the receiver has *confirmed* in feedback (its
  sequence number is in the packet); the packet's later frames predict from the frame before them in
  the same packet. So a lost or late packet never corrupts any other: a frame decodes exactly to
  the sender's quantized value or not at all.
- The sender references the newest confirmed frame within ``MAX_REFERENCE_DISTANCE`` frames that
  has the same preset and K; with none, it sends a KEY packet (absolute values). It also sends a KEY
  every ``key_interval_frames`` frames (0: never) and when the receiver asks.
- The receiver keeps every decoded frame for ``MAX_REFERENCE_DISTANCE + MAX_FRAMES_PER_PACKET``
  sequence numbers, acks the newest decoded frame (plus a 32-frame bitmap), and asks for a KEY when a
  packet's reference is missing (``Feedback.key_request_after`` = the newest sequence number it has
  seen). The sender honours a request unless a KEY newer than that is already on the way; it then
  stops trusting older acks, so its next DELTA predicts from a frame the receiver confirmed afterwards.
- Frames come out of ``receive`` in increasing sequence order; a late frame older than one already
  returned is decoded and kept as a reference but not returned again. Duplicates are ignored.
- Until the first ack arrives (one round trip), every packet is a KEY.

A restarted sender must use a new stream id (the depacketizer keeps separate state for up to
``max_streams`` stream ids); changing the preset or the model's K makes the next packet a KEY,
changing the present mask does not.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from codec.bitstream import (
    ACK_MASK_BITS,
    MAX_FRAMES_PER_PACKET,
    MAX_REFERENCE_DISTANCE,
    MAX_STREAM_ID,
    NUM_POSE_FIELDS,
    SEQ_MODULUS,
    CodedFrame,
    Feedback,
    Layout,
    decode_packet,
    encode_packet,
    seq_newer,
    unpack_header,
    unwrap_seq,
)
from codec.exceptions import BitstreamError
from codec.motion import MotionParams
from codec.quantize import DEFAULT_PRESET_ID, get_preset

logger = logging.getLogger(__name__)

RECEIVER_HISTORY = MAX_REFERENCE_DISTANCE + MAX_FRAMES_PER_PACKET
DEFAULT_KEY_INTERVAL_FRAMES = 250  # 10 s at 25 fps


@dataclass(frozen=True, eq=False)
class DecodedFrame:
    """One frame the receiver decoded: exactly the sender's quantized motion."""

    stream_id: int
    seq: int  # 16-bit wrapping sequence number
    capture_ts_ms: int  # sender's capture timestamp, ms mod 2^32
    motion: MotionParams
    key: bool  # carried by a KEY packet


def _values_of(motion: MotionParams, preset_id: int, present: np.ndarray) -> tuple[tuple[int, ...], int]:
    quantized = get_preset(preset_id).quantize(motion.with_present(present))
    values = np.concatenate([quantized.angles, quantized.translation, quantized.expression.ravel()])
    return tuple(int(v) for v in values), quantized.clipped


def motion_from_values(values: Sequence[int], layout: Layout) -> MotionParams:
    """Grid indices (6 + 3K,) of a layout -> MotionParams (q · step)."""
    preset = layout.preset
    a = preset.angle_step_deg
    v = np.asarray(values, dtype=np.float64)
    return MotionParams(
        float(v[0]) * a,
        float(v[1]) * a,
        float(v[2]) * a,
        (v[3:NUM_POSE_FIELDS] * preset.translation_step).astype(np.float32),
        (v[NUM_POSE_FIELDS:].reshape(-1, 3) * preset.expression_step).astype(np.float32),  # (K, 3)
        np.array(layout.present, dtype=bool),
    )


@dataclass
class _SentFrame:
    frame: CodedFrame
    acked: bool = False


class MotionPacketizer:
    """Sender state machine: quantizes MotionParams, groups frames, picks references, emits packets."""

    def __init__(
        self,
        stream_id: int,
        preset_id: int = DEFAULT_PRESET_ID,
        frames_per_packet: int = 1,
        key_interval_frames: int = DEFAULT_KEY_INTERVAL_FRAMES,
        initial_seq: int = 0,
    ) -> None:
        if not 0 <= stream_id <= MAX_STREAM_ID:
            raise ValueError(f"stream_id must be in [0, {MAX_STREAM_ID}], got {stream_id}")
        if not 1 <= frames_per_packet <= MAX_FRAMES_PER_PACKET:
            raise ValueError(f"frames_per_packet must be in [1, {MAX_FRAMES_PER_PACKET}], got {frames_per_packet}")
        if key_interval_frames < 0:
            raise ValueError(f"key_interval_frames must be ≥ 0 (0 = no periodic KEY), got {key_interval_frames}")
        get_preset(preset_id)
        self.stream_id = stream_id
        self.preset_id = preset_id
        self.frames_per_packet = frames_per_packet
        self.key_interval_frames = key_interval_frames
        self._next_seq = initial_seq % SEQ_MODULUS
        self._mask: np.ndarray | None = None
        self._count_order: tuple[int, list[int] | None] | None = None
        self._pending: list[tuple[tuple[int, ...], int]] = []
        self._pending_layout: Layout | None = None
        self._history: OrderedDict[int, _SentFrame] = OrderedDict()
        self._key_requested = False
        self._last_key_seq: int | None = None
        self._frames_since_key = 0
        self._ack_floor: int | None = None  # acks of frames older than this are ignored
        self.packets_sent = 0
        self.key_packets_sent = 0
        self.frames_sent = 0
        self.bytes_sent = 0
        self.clipped_values = 0

    # -- configuration -------------------------------------------------------------------------
    def set_present_mask(self, mask: Sequence[bool] | np.ndarray | None) -> None:
        """Send δ only for keypoints whose flag is True (None: every keypoint the motion has)."""
        self._mask = None if mask is None else np.asarray(mask, dtype=bool).reshape(-1).copy()
        self._count_order = None

    def set_num_keypoints(self, count: int | None, order: Sequence[int] | None = None) -> None:
        """Send δ of only ``count`` keypoints: the first ``count`` of ``order`` (default 0, 1, 2, ...).

        None sends all. The mask is built when the next frame arrives (it needs the motion's K).
        """
        self._mask = None
        if count is None:
            self._count_order = None
            return
        if count < 0:
            raise ValueError(f"count must be ≥ 0, got {count}")
        self._count_order = (count, None if order is None else [int(k) for k in order])

    def set_preset(self, preset_id: int) -> None:
        """Switch the quantizer preset (the next packet is a KEY)."""
        get_preset(preset_id)
        self.preset_id = preset_id

    def request_key(self) -> None:
        """Make the next packet a KEY packet."""
        self._key_requested = True

    # -- feedback --------------------------------------------------------------------------------
    def on_feedback(self, feedback: Feedback) -> None:
        """Honour receiver feedback for this stream (feedback for other streams is ignored)."""
        if feedback.stream_id != self.stream_id:
            return
        floor = self._ack_floor
        if floor is not None and (self._next_seq - floor) % SEQ_MODULUS > MAX_REFERENCE_DISTANCE:
            floor = self._ack_floor = None  # every frame from before the request has left the history
        for seq in feedback.acked():
            sent = self._history.get(seq)
            if sent is not None and (floor is None or not seq_newer(floor, seq)):
                sent.acked = True
                # Feedback is ordered (reliable channel): nothing older than the request follows.
                self._ack_floor = None
        after = feedback.key_request_after
        if after is not None and (self._last_key_seq is None or not seq_newer(self._last_key_seq, after)):
            logger.info("stream %d: receiver asks for a KEY after seq %d", self.stream_id, after)
            self._key_requested = True
            for sent in self._history.values():
                sent.acked = False
            self._ack_floor = self._next_seq if not self._pending else (self._next_seq - len(self._pending)) % SEQ_MODULUS

    # -- frames ----------------------------------------------------------------------------------
    def _present(self, motion: MotionParams) -> np.ndarray:
        present = motion.present.copy()
        if self._count_order is not None:
            count, order = self._count_order
            chosen = list(range(motion.num_keypoints)) if order is None else order
            mask = np.zeros(motion.num_keypoints, bool)
            for k in chosen[:count]:
                if not 0 <= k < motion.num_keypoints:
                    raise ValueError(f"keypoint index {k} in the order is outside K = {motion.num_keypoints}")
                mask[k] = True
            return present & mask
        if self._mask is None:
            return present
        if self._mask.shape != present.shape:
            raise ValueError(f"present mask has {self._mask.size} flags but the motion has K = {motion.num_keypoints}")
        return present & self._mask

    def push(self, motion: MotionParams, capture_ts_ms: int) -> bytes | None:
        """Add one frame; returns a packet when one is complete (or the layout changed), else None."""
        if not isinstance(motion, MotionParams):
            raise TypeError(f"push() needs MotionParams, got {type(motion).__name__}")
        present = self._present(motion)
        layout = Layout(self.preset_id, tuple(bool(p) for p in present))
        values, clipped = _values_of(motion, self.preset_id, present)
        if clipped:
            logger.debug("stream %d: %d values outside the quantizer range were clamped", self.stream_id, clipped)
        self.clipped_values += clipped
        out = None
        if self._pending and layout != self._pending_layout:
            out = self.flush()
        self._pending.append((values, int(capture_ts_ms)))
        self._pending_layout = layout
        if len(self._pending) >= self.frames_per_packet and out is None:
            # (a layout change that came with a smaller frames_per_packet already flushed a packet: push returns
            # one, so this frame goes out with the next push)
            out = self.flush()
        return out

    def _reference(self, layout: Layout, first_seq: int) -> CodedFrame | None:
        if self._key_requested:
            return None
        if self.key_interval_frames and self._frames_since_key >= self.key_interval_frames:
            return None
        for seq in reversed(self._history):
            sent = self._history[seq]
            distance = (first_seq - seq) % SEQ_MODULUS
            if not 1 <= distance <= MAX_REFERENCE_DISTANCE:
                continue
            if sent.acked and sent.frame.state.layout.compatible(layout):
                return sent.frame
        return None

    def flush(self) -> bytes | None:
        """Emit the buffered frames now as a (possibly short) packet; None if nothing is buffered."""
        if not self._pending:
            return None
        assert self._pending_layout is not None
        first_seq = self._next_seq
        reference = self._reference(self._pending_layout, first_seq)
        packet, coded = encode_packet(self.stream_id, first_seq, self._pending_layout, self._pending, reference)
        if reference is None:
            self._last_key_seq = first_seq
            self._key_requested = False
            self._frames_since_key = 0
            self.key_packets_sent += 1
        self._frames_since_key += len(coded)
        for frame in coded:
            self._history[frame.seq] = _SentFrame(frame)
            self._history.move_to_end(frame.seq)
        while self._history:
            oldest = next(iter(self._history))
            if (first_seq + len(coded) - oldest) % SEQ_MODULUS <= MAX_REFERENCE_DISTANCE:
                break
            del self._history[oldest]
        self._next_seq = (first_seq + len(coded)) % SEQ_MODULUS
        self.packets_sent += 1
        self.frames_sent += len(coded)
        self.bytes_sent += len(packet)
        self._pending = []
        self._pending_layout = None
        return packet


@dataclass
class _StreamState:
    history: OrderedDict[int, CodedFrame]
    newest_seen: int | None = None
    newest_output: int | None = None
    highest_ext: int | None = None  # unwrapped sequence numbers for loss counting
    lowest_ext: int | None = None
    seen_ext: set[int] | None = None
    seen_forgotten: int = 0
    frames_undecodable: int = 0
    key_request_after: int | None = None


class MotionDepacketizer:
    """Receiver state machine: decodes packets, keeps references, produces Feedback."""

    def __init__(self, max_streams: int = 4) -> None:
        if max_streams < 1:
            raise ValueError(f"max_streams must be ≥ 1, got {max_streams}")
        self.max_streams = max_streams
        self._streams: OrderedDict[int, _StreamState] = OrderedDict()
        self._last_stream: int | None = None
        self.packets_received = 0
        self.packets_rejected = 0
        self.packets_duplicate = 0

    def _stream(self, stream_id: int) -> _StreamState:
        state = self._streams.get(stream_id)
        if state is None:
            state = _StreamState(OrderedDict(), seen_ext=set())
            self._streams[stream_id] = state
            while len(self._streams) > self.max_streams:
                evicted, _ = self._streams.popitem(last=False)
                logger.info("forgetting motion stream %d (more than %d streams)", evicted, self.max_streams)
        self._streams.move_to_end(stream_id)
        return state

    @staticmethod
    def _mark_seen(state: _StreamState, seqs: list[int]) -> None:
        assert state.seen_ext is not None
        for seq in seqs:
            if state.highest_ext is None:
                ext = seq
                state.highest_ext = state.lowest_ext = ext
            else:
                ext = unwrap_seq(seq, state.highest_ext)
                state.highest_ext = max(state.highest_ext, ext)
                assert state.lowest_ext is not None
                if ext < state.lowest_ext:
                    state.lowest_ext = ext
            state.seen_ext.add(ext)
        # Forget exact membership far behind the newest (keep the count): bounded memory.
        assert state.highest_ext is not None
        if len(state.seen_ext) > 4 * RECEIVER_HISTORY:
            horizon = state.highest_ext - 2 * RECEIVER_HISTORY
            old = [e for e in state.seen_ext if e < horizon]
            state.seen_ext.difference_update(old)
            state.seen_forgotten += len(old)

    def receive(self, buf: bytes) -> list[DecodedFrame]:
        """Decode one packet; returns its frames newer than any returned before (oldest first).

        BitstreamError for a malformed packet (the state is unchanged). A DELTA packet whose reference
        is missing returns [] and makes ``feedback()`` ask for a KEY.
        """
        try:
            header = unpack_header(buf)
        except BitstreamError:
            self.packets_rejected += 1
            raise
        state = self._streams.get(header.stream_id)
        seqs = header.seqs
        if state is not None and all(seq in state.history for seq in seqs):
            self.packets_duplicate += 1
            self._streams.move_to_end(header.stream_id)
            return []
        reference = None
        if not header.key:
            assert header.reference_seq is not None
            reference = state.history.get(header.reference_seq) if state is not None else None
            if reference is None:
                state = self._stream(header.stream_id)
                self._last_stream = header.stream_id
                self.packets_received += 1
                self._mark_seen(state, seqs)
                self._update_newest_seen(state, seqs[-1])
                state.frames_undecodable += len(seqs)
                state.key_request_after = state.newest_seen
                logger.debug(
                    "stream %d: packet %d references %d, which is not here: asking for a KEY",
                    header.stream_id, header.seq, header.reference_seq,
                )
                return []
        try:
            frames = decode_packet(buf, header, reference)
        except BitstreamError:
            self.packets_rejected += 1
            raise
        state = self._stream(header.stream_id)
        self._last_stream = header.stream_id
        self.packets_received += 1
        self._mark_seen(state, seqs)
        self._update_newest_seen(state, seqs[-1])
        state.key_request_after = None
        for frame in frames:
            state.history[frame.seq] = frame
            state.history.move_to_end(frame.seq)
        self._prune(state)
        out = []
        for frame in frames:
            if state.newest_output is not None and not seq_newer(frame.seq, state.newest_output):
                continue
            state.newest_output = frame.seq
            layout = frame.state.layout
            out.append(
                DecodedFrame(header.stream_id, frame.seq, frame.timestamp_ms, motion_from_values(frame.values, layout), header.key)
            )
        return out

    @staticmethod
    def _update_newest_seen(state: _StreamState, seq: int) -> None:
        if state.newest_seen is None or seq_newer(seq, state.newest_seen):
            state.newest_seen = seq

    @staticmethod
    def _prune(state: _StreamState) -> None:
        assert state.newest_seen is not None
        for seq in list(state.history):
            if (state.newest_seen - seq) % SEQ_MODULUS > RECEIVER_HISTORY:
                del state.history[seq]
        while len(state.history) > RECEIVER_HISTORY + 1:
            state.history.popitem(last=False)

    def feedback(self, stream_id: int | None = None) -> Feedback | None:
        """What to tell the sender of ``stream_id`` (default: the stream of the latest packet).

        None before any packet of that stream arrived.
        """
        sid = self._last_stream if stream_id is None else stream_id
        if sid is None or sid not in self._streams:
            return None
        state = self._streams[sid]
        acked_seq = None
        for seq in state.history:
            if acked_seq is None or seq_newer(seq, acked_seq):
                acked_seq = seq
        mask = 0
        if acked_seq is not None:
            for i in range(ACK_MASK_BITS):
                if (acked_seq - 1 - i) % SEQ_MODULUS in state.history:
                    mask |= 1 << i
        received = len(state.seen_ext or ()) + state.seen_forgotten
        expected = 0 if state.highest_ext is None else state.highest_ext - (state.lowest_ext or 0) + 1
        return Feedback(
            stream_id=sid,
            acked_seq=acked_seq,
            acked_mask=mask,
            key_request_after=state.key_request_after,
            frames_received=received,
            frames_lost=max(0, expected - received),
            frames_undecodable=state.frames_undecodable,
        )

    def stream_ids(self) -> list[int]:
        """Stream ids with state here, least recently active first."""
        return list(self._streams)


__all__ = [
    "DEFAULT_KEY_INTERVAL_FRAMES",
    "DecodedFrame",
    "MotionDepacketizer",
    "MotionPacketizer",
    "motion_from_values",
]
