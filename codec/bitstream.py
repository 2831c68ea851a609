"""Motion packets and receiver feedback on the wire: documented layouts, pack/unpack, body coding.

A motion packet carries 1-8 consecutive frames of one stream. Its body is coded with the adaptive
binary range coder of ``codec.range_coder``; the receiver-feedback message is msgpack. This module and
``codec.reference_message`` are the only ones that touch msgpack (``codec.baseline_coders`` holds
the zstd alternatives the bench compares against).

Motion packet layout (version 1; integers big-endian; varint = LEB128, minimal length, ≤ 5 bytes)::

    byte 0     0xA0 | VERSION                    magic nibble 0xA, version 1..15
    byte 1     flags: bit 7  KEY (1) / DELTA (0)
                      bits 6-4 number of frames - 1 (1..8 frames)
                      bit 3  layout follows (always 1 in KEY packets)
                      bits 2-0 KEY: 0; DELTA: reference distance d if 1..7, 0 = d in a varint
    varint     stream id (0 .. 2^32 - 1); ids below ONE_BYTE_STREAM_IDS = 128 take one byte, so pick
               small ones (a random 31-bit id costs 4 more bytes in every packet)
    u16        sequence number of the packet's first frame; frame i is (seq + i) mod 2^16
    DELTA with flags bits 2-0 = 0: varint  reference distance d (8..MAX_REFERENCE_DISTANCE)
               A DELTA packet's first frame is predicted from frame (seq - d) mod 2^16, which the
               receiver has confirmed
    KEY only:  u32     capture timestamp of the first frame, ms mod 2^32
    layout (when flagged; a DELTA without it inherits its reference frame's layout):
               u8      quantizer preset id (``codec.quantize.PRESETS``)
               u8      K, the number of keypoint rows (0..64)
               ceil(K/8) bytes  presence bitmask: bit k%8 of byte k//8 set = δ_k is sent;
                       unused high bits 0
    body       range-coded frames (``codec.range_coder``), minimal termination, never ends in 0x00

Body, per frame: the capture-timestamp interval residual, then the integer grid indices
(``codec.quantize``) of yaw, pitch, roll, t_x, t_y, t_z and (x, y, z) of δ for every present
keypoint in index order. A DELTA packet's first frame is predicted from its reference frame; every
later frame of a packet from the frame before it (a packet arrives whole or not at all, so this is as
loss-robust). KEY packets code the first frame's values absolutely. The prediction is the previous
decoded integer (closed loop: no drift), the residual is coded with a zero flag, a sign and an
exp-Golomb magnitude whose contexts depend on that field's residual in the previous frame and on the
previous field's (pose) or previous keypoint's same-axis (δ) residual in this frame.

The adaptive probabilities are chained through references: a DELTA packet starts from the model
state the reference frame's packet ended with (both sides kept it), so statistics are learned over
the whole stream yet a lost packet never desynchronizes the receiver. KEY packets, and packets whose
layout's preset or K differs from the reference's, start from a fresh model.

Capture timestamps: the first frame of a DELTA packet codes ``dt - g · last_interval`` where dt is
its distance in ms from the reference, g the sequence distance and last_interval the interval the
chain last saw (``dt // g`` of the previous step); later frames code ``dt - last_interval``.

Entropy coding choice, measured by ``python -m bench bitstream`` (seeded synthetic trace, 30 s,
feedback 100 ms after each packet, KEY every 250 frames, default preset, 25 fps); bytes per frame,
every option with the same 5-6-byte packet header and the same residuals:

| K, frames/packet | float32 | float16 | fixed-width | msgpack | +zstd | +zstd, dict | range coder |
|------------------|---------|---------|-------------|---------|-------|-------------|-------------|
| K=20, 1          | 269.1   | 137.1   | 88.1        | 76.1    | 48.6  | 37.3        | 14.0        |
| K=20, 3          | 265.7   | 133.7   | 84.7        | 72.0    | 24.8  | 19.9        | 8.6         |
| K=5, 3           | 85.7    | 43.7    | 28.7        | 27.0    | 17.5  | 13.2        | 5.1         |

zstd (level 19, magicless, no checksum, content size or dictionary id) still spends ≥ 5 bytes per
packet on frame and block headers and learns nothing within a 30-200-byte packet; the shipped
dictionary helps by ~20 %. The context-adaptive range coder is 2.3-2.7x smaller than the best zstd
option, so it is the format. With K = 20 the whole payload, headers included, is 0.96-1.03x the
order-0 entropy of the coded residuals (the contexts beat that memoryless bound, which excludes
headers); with small K the fixed 5-6-byte header dominates (K = 0: 2.5-4x). Of the body, δ takes
~80 %, angles ~12 %, translation ~5 %, KEY values ~2.5 %, timestamps < 1 %. Also measured and
rejected: contexts split by prediction gap (+0-4 %), a decaying per-field activity context
(+0-1 %), contexts pooled over keypoints (+4-9 %), a second neighbour (same keypoint, previous
axis: ±0 %), coding the most active keypoint per axis first as every other keypoint's neighbour
(±1 %).

Temporal dead zone: with the error bound fixed at step/2, the absolute grid already is the widest
dead zone the bound allows (a value that stays in its cell costs a zero residual, and estimator
noise smaller than a step rarely flips a cell); hysteresis on a finer grid would keep the bound but
re-centre after every update, doubling the update rate of drifting values.

Cost in CPython on the 2-core dev machine (bench, default preset, K = 20): encode 0.5 / 0.8 ms and
decode 0.8 / 1.2 ms per packet of 1 / 3 frames (the decoder re-encodes the body to check that it is
canonical); the worst case, 8 frames of K = 64 uniformly random values, decodes in ~35 ms.

Feedback message (receiver -> sender, reliable control channel): msgpack array
``[FEEDBACK_TAG, VERSION, stream_id, acked_seq | nil, acked_mask, key_request_after | nil,
frames_received, frames_lost, frames_undecodable]``; see ``Feedback``.

Every ``unpack*`` raises ``BitstreamError`` (and nothing else) for any malformed input.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import msgpack

from codec.exceptions import BitstreamError
from codec.motion import MAX_NUM_KEYPOINTS
from codec.quantize import PRESETS, QuantizerPreset
from codec.range_coder import PREFIX_CONTEXTS, RangeCoderError, RangeDecoder, RangeEncoder, new_model
from codec.varint import VarintError, get_varint, put_varint

MAGIC_NIBBLE = 0xA
VERSION = 1
FLAG_KEY = 0x80
FLAG_LAYOUT = 0x08
FLAG_DISTANCE = 0x07
MAX_INLINE_DISTANCE = 7
MAX_FRAMES_PER_PACKET = 8
MAX_REFERENCE_DISTANCE = 128
MAX_PACKET_BYTES = 8192  # 8 frames of K = 64 uniformly random values on the fine grid: ~3.1 kB
SEQ_MODULUS = 1 << 16
TIMESTAMP_MODULUS = 1 << 32
MAX_STREAM_ID = (1 << 32) - 1
ONE_BYTE_STREAM_IDS = 128  # stream ids in [0, 128) cost one header byte
NUM_POSE_FIELDS = 6
MAX_INTERVAL_RESIDUAL = 1 << 33
MAX_INTERVAL_MS = 1 << 16  # the interval prediction is clamped to ±65 s

# Context layout of the adaptive model, per field: zero flag 3 (previous residual) x 3 (neighbour
# residual); sign 3 x 3; magnitude 3 sets (previous residual). (Also splitting by the prediction
# gap, 1 vs longer, measured slightly worse: the extra contexts learn too slowly.)
_ZERO_PER_FIELD = 9
_SIGN_PER_FIELD = 9
_MAG_SETS_PER_FIELD = 3
_KEY_CLASSES = 9  # angles yaw/pitch/roll, translation x/y/z, δ x/y/z
_KEY_SET = 2 + PREFIX_CONTEXTS
_TS_SET = 2 + PREFIX_CONTEXTS
_PROB_HALF = 1 << 14


def _serial_distance(newer: int, older: int) -> int:
    """(newer - older) mod 2^16, the forward distance between sequence numbers."""
    return (newer - older) % SEQ_MODULUS


def seq_newer(a: int, b: int) -> bool:
    """True if sequence number ``a`` is after ``b`` (RFC 1982 serial arithmetic on 16 bits)."""
    d = _serial_distance(a, b)
    return 0 < d < SEQ_MODULUS // 2


def unwrap_seq(seq: int, near: int | None) -> int:
    """The unwrapped (ever-growing) sequence number of 16-bit ``seq`` closest to the unwrapped ``near``
    (None: ``seq`` itself, the first one seen)."""
    if near is None:
        return seq
    delta = _serial_distance(seq, near)
    return near + (delta - SEQ_MODULUS if delta >= SEQ_MODULUS // 2 else delta)


@dataclass(frozen=True)
class Layout:
    """What a frame's values mean: the quantizer preset and which of the K keypoints' δ are sent."""

    preset_id: int
    present: tuple[bool, ...]  # (K,)

    @property
    def num_keypoints(self) -> int:
        return len(self.present)

    @property
    def num_fields(self) -> int:
        """Values per frame on the full grid: 6 pose fields + 3 per keypoint row (absent rows are 0)."""
        return NUM_POSE_FIELDS + 3 * len(self.present)

    @property
    def preset(self) -> QuantizerPreset:
        return PRESETS[self.preset_id]

    def compatible(self, other: Layout) -> bool:
        """Same preset and K: values can be predicted across the two (the mask may differ)."""
        return self.preset_id == other.preset_id and len(self.present) == len(other.present)


@dataclass(frozen=True, eq=False)
class CodingState:
    """What both ends keep after coding a packet, for packets that reference one of its frames."""

    layout: Layout
    model: array  # uint16 adaptive probabilities (fast, slow) per context
    prev_residual: tuple[int, ...]  # (num_fields,) residuals of the packet's last frame
    last_interval_ms: int


@dataclass(frozen=True, eq=False)
class CodedFrame:
    """One frame as both ends know it after coding: seq, timestamp, grid values and chain state.

    values: (6 + 3K,) grid indices: yaw, pitch, roll, t_x, t_y, t_z, then δ row-major (absent rows 0).
    """

    seq: int
    timestamp_ms: int
    values: tuple[int, ...]
    state: CodingState


@dataclass(frozen=True)
class PacketHeader:
    """The parsed fixed part of a motion packet (see the module docstring for the wire layout)."""

    key: bool
    num_frames: int
    stream_id: int
    seq: int
    reference_distance: int  # 0 for KEY packets
    timestamp_ms: int | None  # KEY packets only
    layout: Layout | None  # None: inherit the reference frame's layout
    size: int  # header bytes; the body follows

    @property
    def reference_seq(self) -> int | None:
        return None if self.key else (self.seq - self.reference_distance) % SEQ_MODULUS

    @property
    def seqs(self) -> list[int]:
        return [(self.seq + i) % SEQ_MODULUS for i in range(self.num_frames)]


# ---------------------------------------------------------------------------------------------
# Header


def _get_varint(buf: bytes, pos: int, what: str, max_value: int) -> tuple[int, int]:
    try:
        value, end = get_varint(buf, pos, 5)
    except VarintError as exc:
        raise BitstreamError({
            "truncated": f"truncated packet: {what} varint runs past the end ({len(buf)} bytes)",
            "non-minimal": f"non-minimal varint for {what} at byte {pos}",
            "too long": f"varint for {what} at byte {pos} is longer than 5 bytes",
        }[exc.problem]) from None
    if value > max_value:
        raise BitstreamError(f"{what} {value} exceeds the maximum {max_value}")
    return value, end


def _pack_layout(out: bytearray, layout: Layout) -> None:
    out.append(layout.preset_id)
    out.append(layout.num_keypoints)
    mask = bytearray((layout.num_keypoints + 7) // 8)
    for k, flag in enumerate(layout.present):
        if flag:
            mask[k // 8] |= 1 << (k % 8)
    out += mask


def pack_header(header: PacketHeader) -> bytes:
    """The header bytes of ``header`` (its ``size`` field is ignored)."""
    if not 1 <= header.num_frames <= MAX_FRAMES_PER_PACKET:
        raise ValueError(f"num_frames {header.num_frames} not in [1, {MAX_FRAMES_PER_PACKET}]")
    if not 0 <= header.stream_id <= MAX_STREAM_ID:
        raise ValueError(f"stream_id {header.stream_id} not in [0, {MAX_STREAM_ID}]")
    if header.key and (header.layout is None or header.timestamp_ms is None):
        raise ValueError("a KEY header needs a layout and a timestamp")
    if not header.key and not 1 <= header.reference_distance <= MAX_REFERENCE_DISTANCE:
        raise ValueError(f"reference distance {header.reference_distance} not in [1, {MAX_REFERENCE_DISTANCE}]")
    out = bytearray([(MAGIC_NIBBLE << 4) | VERSION])
    flags = (FLAG_KEY if header.key else 0) | ((header.num_frames - 1) << 4)
    flags |= FLAG_LAYOUT if header.layout is not None else 0
    if not header.key and header.reference_distance <= MAX_INLINE_DISTANCE:
        flags |= header.reference_distance
    out.append(flags)
    put_varint(out, header.stream_id)
    out += (header.seq % SEQ_MODULUS).to_bytes(2, "big")
    if header.key:
        assert header.timestamp_ms is not None
        out += (header.timestamp_ms % TIMESTAMP_MODULUS).to_bytes(4, "big")
    elif header.reference_distance > MAX_INLINE_DISTANCE:
        put_varint(out, header.reference_distance)
    if header.layout is not None:
        _pack_layout(out, header.layout)
    return bytes(out)


def unpack_header(buf: bytes) -> PacketHeader:
    """Parse and validate a motion packet's header; BitstreamError for anything malformed."""
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"a motion packet must be bytes, got {type(buf).__name__}")
    buf = bytes(buf)
    if len(buf) > MAX_PACKET_BYTES:
        raise BitstreamError(f"oversize motion packet: {len(buf)} bytes > {MAX_PACKET_BYTES}")
    if len(buf) < 2:
        raise BitstreamError(f"truncated motion packet: {len(buf)} bytes, the header needs at least 6")
    if buf[0] >> 4 != MAGIC_NIBBLE:
        raise BitstreamError(f"not a motion packet: first byte 0x{buf[0]:02x}, expected 0x{MAGIC_NIBBLE:x}?")
    if buf[0] & 0x0F != VERSION:
        raise BitstreamError(f"unsupported motion packet version {buf[0] & 0x0F} (this build reads {VERSION})")
    flags = buf[1]
    key = bool(flags & FLAG_KEY)
    if key and flags & FLAG_DISTANCE:
        raise BitstreamError(f"KEY packet with reference-distance bits set in flags 0x{flags:02x}")
    num_frames = ((flags >> 4) & 0x07) + 1
    has_layout = bool(flags & FLAG_LAYOUT)
    if key and not has_layout:
        raise BitstreamError("KEY packet without a layout")
    stream_id, pos = _get_varint(buf, 2, "stream id", MAX_STREAM_ID)
    if pos + 2 > len(buf):
        raise BitstreamError(f"truncated motion packet: sequence number missing ({len(buf)} bytes)")
    seq = int.from_bytes(buf[pos : pos + 2], "big")
    pos += 2
    timestamp_ms: int | None = None
    distance = 0
    if key:
        if pos + 4 > len(buf):
            raise BitstreamError(f"truncated KEY packet: timestamp missing ({len(buf)} bytes)")
        timestamp_ms = int.from_bytes(buf[pos : pos + 4], "big")
        pos += 4
    elif flags & FLAG_DISTANCE:
        distance = flags & FLAG_DISTANCE
    else:
        distance, pos = _get_varint(buf, pos, "reference distance", MAX_REFERENCE_DISTANCE)
        if distance <= MAX_INLINE_DISTANCE:
            raise BitstreamError(f"reference distance {distance} in a varint (1..7 go in the flags byte)")
    layout = None
    if has_layout:
        if pos + 2 > len(buf):
            raise BitstreamError(f"truncated motion packet: layout missing ({len(buf)} bytes)")
        preset_id, num_keypoints = buf[pos], buf[pos + 1]
        pos += 2
        if preset_id not in PRESETS:
            raise BitstreamError(f"unknown quantizer preset id {preset_id} (known: {sorted(PRESETS)})")
        if num_keypoints > MAX_NUM_KEYPOINTS:
            raise BitstreamError(f"K = {num_keypoints} exceeds the maximum of {MAX_NUM_KEYPOINTS}")
        mask_len = (num_keypoints + 7) // 8
        if pos + mask_len > len(buf):
            raise BitstreamError(f"truncated motion packet: presence mask needs {mask_len} bytes")
        mask = int.from_bytes(buf[pos : pos + mask_len], "little")
        pos += mask_len
        if mask >> num_keypoints:
            raise BitstreamError(f"presence mask 0x{mask:x} has bits set beyond K = {num_keypoints}")
        layout = Layout(preset_id, tuple(bool(mask >> k & 1) for k in range(num_keypoints)))
    if pos < len(buf) and buf[-1] == 0:
        raise BitstreamError("motion packet body ends in 0x00 (not produced by any encoder: corrupt)")
    return PacketHeader(key, num_frames, stream_id, seq, distance, timestamp_ms, layout, pos)


# ---------------------------------------------------------------------------------------------
# Body


class _Contexts:
    """Context indices of the adaptive model for one layout (K fixes the model size)."""

    def __init__(self, num_keypoints: int) -> None:
        fields = NUM_POSE_FIELDS + 3 * num_keypoints
        self.zero = 0
        self.sign = self.zero + fields * _ZERO_PER_FIELD
        self.mag = self.sign + fields * _SIGN_PER_FIELD
        self.key = self.mag + fields * _MAG_SETS_PER_FIELD * PREFIX_CONTEXTS
        self.ts = self.key + _KEY_CLASSES * _KEY_SET
        self.total = self.ts + _TS_SET


def fresh_model(num_keypoints: int) -> array:
    """The model a KEY packet (or a change of preset or K) starts from: every context at p = 1/2."""
    return array("H", new_model(_Contexts(num_keypoints).total))


def _field_order(layout: Layout) -> list[int]:
    """Indices into the full (6 + 3K) value vector of the fields that are coded, in wire order."""
    order = list(range(NUM_POSE_FIELDS))
    for k, flag in enumerate(layout.present):
        if flag:
            order += [NUM_POSE_FIELDS + 3 * k, NUM_POSE_FIELDS + 3 * k + 1, NUM_POSE_FIELDS + 3 * k + 2]
    return order


def _neighbour_fields(order: list[int]) -> list[int]:
    """For each coded field (wire position), the wire position of its context neighbour, or -1.

    Pose: the previous field of its group (pitch <- yaw, roll <- pitch, t_y <- t_x, t_z <- t_y);
    δ: the same axis of the previous present keypoint.
    """
    out = []
    for pos, field in enumerate(order):
        if field < NUM_POSE_FIELDS:
            out.append(pos - 1 if field % 3 else -1)
        else:
            out.append(pos - 3 if pos - 3 >= NUM_POSE_FIELDS else -1)
    return out


def _bounds(layout: Layout) -> list[int]:
    """q_max of every field of the full value vector."""
    preset = layout.preset
    return list(preset.angle_qmax) + [preset.translation_qmax] * 3 + [preset.expression_qmax] * (3 * layout.num_keypoints)


def _key_class(field: int) -> int:
    return field if field < NUM_POSE_FIELDS else NUM_POSE_FIELDS + (field - NUM_POSE_FIELDS) % 3


def _b2(v: int) -> int:
    return 2 if v >= 2 or v <= -2 else (1 if v else 0)


def _sg(v: int) -> int:
    return 2 if v > 0 else (0 if v < 0 else 1)


class _Coder:
    """Runs the frame coding procedure once, as encoder (values given) or decoder (values read)."""

    def __init__(self, layout: Layout, reference: CodedFrame | None) -> None:
        self.layout = layout
        self.ctx = _Contexts(layout.num_keypoints)
        self.order = _field_order(layout)
        self.neighbour = _neighbour_fields(self.order)
        self.bounds = _bounds(layout)
        if reference is None or not reference.state.layout.compatible(layout):
            self.model = list(fresh_model(layout.num_keypoints))
            self.prev = [0] * layout.num_fields
            self.last_interval = 0
        else:
            self.model = list(reference.state.model)
            self.prev = list(reference.state.prev_residual)
            self.last_interval = reference.state.last_interval_ms
        self.pred: list[int] | None = None if reference is None else list(reference.values)
        self.pred_ts = None if reference is None else reference.timestamp_ms

    def code_frame(
        self,
        coder: RangeEncoder | RangeDecoder,
        values: Sequence[int] | None,
        timestamp_ms: int | None,
        gap: int,
    ) -> tuple[list[int], int]:
        """Code one frame. Encoder: ``values``/``timestamp_ms`` given; decoder: None (returns them)."""
        ctx, model = self.ctx, self.model
        encoding = isinstance(coder, RangeEncoder)
        # Timestamp: the header holds a KEY packet's first timestamp; otherwise code the interval.
        if self.pred_ts is None:
            assert timestamp_ms is not None, "a KEY packet's first timestamp comes from the header"
            ts = timestamp_ms
        else:
            expected = gap * self.last_interval
            if encoding:
                assert timestamp_ms is not None
                dt = (timestamp_ms - self.pred_ts + TIMESTAMP_MODULUS // 2) % TIMESTAMP_MODULUS - TIMESTAMP_MODULUS // 2
                coder.encode_int(model, ctx.ts, ctx.ts + 1, ctx.ts + 2, dt - expected)  # type: ignore[union-attr]
            else:
                dt = expected + coder.decode_int(model, ctx.ts, ctx.ts + 1, ctx.ts + 2, MAX_INTERVAL_RESIDUAL)  # type: ignore[union-attr]
            ts = (self.pred_ts + dt) % TIMESTAMP_MODULUS
            self.last_interval = max(-MAX_INTERVAL_MS, min(MAX_INTERVAL_MS, dt // gap))
        full = [0] * self.layout.num_fields
        residual = [0] * self.layout.num_fields
        coded: list[int] = []  # residuals in wire order, for the neighbour contexts
        key = self.pred is None
        for pos, field in enumerate(self.order):
            qmax = self.bounds[field]
            if key:
                base = ctx.key + _key_class(field) * _KEY_SET
                if encoding:
                    assert values is not None
                    r = values[field]
                    coder.encode_int(model, base, base + 1, base + 2, r)  # type: ignore[union-attr]
                else:
                    r = coder.decode_int(model, base, base + 1, base + 2, qmax)  # type: ignore[union-attr]
                value = r
            else:
                p = self.prev[field]
                n = coded[self.neighbour[pos]] if self.neighbour[pos] >= 0 else 0
                zc = ctx.zero + field * _ZERO_PER_FIELD + _b2(p) * 3 + _b2(n)
                sc = ctx.sign + field * _SIGN_PER_FIELD + _sg(p) * 3 + _sg(n)
                mc = ctx.mag + (field * _MAG_SETS_PER_FIELD + _b2(p)) * PREFIX_CONTEXTS
                assert self.pred is not None
                if encoding:
                    assert values is not None
                    r = values[field] - self.pred[field]
                    coder.encode_int(model, zc, sc, mc, r)  # type: ignore[union-attr]
                else:
                    r = coder.decode_int(model, zc, sc, mc, 2 * qmax)  # type: ignore[union-attr]
                value = self.pred[field] + r
            if not -qmax <= value <= qmax:
                raise RangeCoderError(f"field {field} decodes to {value}, outside the quantizer's ±{qmax}")
            coded.append(r)
            residual[field] = r
            full[field] = value
        if not key:
            self.prev = residual
        else:
            self.prev = [0] * self.layout.num_fields
        self.pred = full
        self.pred_ts = ts
        return full, ts

    def state(self) -> CodingState:
        return CodingState(self.layout, array("H", self.model), tuple(self.prev), self.last_interval)


def encode_packet(
    stream_id: int,
    seq: int,
    layout: Layout,
    frames: Sequence[tuple[Sequence[int], int]],
    reference: CodedFrame | None,
) -> tuple[bytes, list[CodedFrame]]:
    """Code ``frames`` [(values (6 + 3K,) grid indices, capture timestamp ms), ...] into one packet.

    A KEY packet when ``reference`` is None, else a DELTA predicted from ``reference`` (whose
    layout must have the same preset and K). Returns the packet and the frames as the receiver will
    know them (for later references). Values of absent keypoints must be 0.
    """
    if not 1 <= len(frames) <= MAX_FRAMES_PER_PACKET:
        raise ValueError(f"a packet holds 1..{MAX_FRAMES_PER_PACKET} frames, got {len(frames)}")
    key = reference is None
    distance = 0
    if reference is not None:
        if not reference.state.layout.compatible(layout):
            raise ValueError("the reference's preset or K differs from the layout: send a KEY packet")
        distance = _serial_distance(seq, reference.seq)
        if not 1 <= distance <= MAX_REFERENCE_DISTANCE:
            raise ValueError(f"reference {reference.seq} is {distance} frames before {seq}: not in [1, {MAX_REFERENCE_DISTANCE}]")
    send_layout = layout if key or reference is None or reference.state.layout != layout else None
    header = PacketHeader(
        key, len(frames), stream_id, seq % SEQ_MODULUS, distance,
        frames[0][1] % TIMESTAMP_MODULUS if key else None, send_layout, 0,
    )
    head = pack_header(header)
    bounds = _bounds(layout)
    for i, (values, _) in enumerate(frames):
        if len(values) != layout.num_fields:
            raise ValueError(f"frame {i} has {len(values)} values, the layout needs {layout.num_fields}")
        for f, (v, qmax) in enumerate(zip(values, bounds)):
            if not -qmax <= v <= qmax:
                raise ValueError(f"frame {i} field {f} value {v} is outside the preset's grid ±{qmax}")
    coder = _Coder(layout, reference)
    encoder = RangeEncoder()
    coded_values: list[tuple[list[int], int]] = []
    for i, (values, timestamp_ms) in enumerate(frames):
        gap = distance if i == 0 else 1
        coded_values.append(coder.code_frame(encoder, [int(v) for v in values], timestamp_ms % TIMESTAMP_MODULUS, gap))
    state = coder.state()
    coded = [
        CodedFrame((seq + i) % SEQ_MODULUS, ts, tuple(v), state) for i, (v, ts) in enumerate(coded_values)
    ]
    packet = head + encoder.finish()
    if len(packet) > MAX_PACKET_BYTES:
        raise ValueError(f"packet of {len(packet)} bytes exceeds {MAX_PACKET_BYTES}: send fewer frames per packet")
    return packet, coded


def decode_packet(
    buf: bytes, header: PacketHeader, reference: CodedFrame | None
) -> list[CodedFrame]:
    """Decode the body of a packet whose header was parsed by ``unpack_header``.

    ``reference`` must be the frame ``header.reference_seq`` for a DELTA packet (None for KEY).
    BitstreamError for a body that is inconsistent: values outside the quantizer range, a layout
    mismatch, or bytes that are not exactly what the encoder produces for the decoded frames.
    """
    if header.key != (reference is None):
        raise BitstreamError("internal: a DELTA packet needs its reference frame, a KEY packet none")
    if reference is not None and reference.seq != header.reference_seq:
        raise BitstreamError(f"reference frame {reference.seq} is not the packet's reference {header.reference_seq}")
    layout = header.layout if header.layout is not None else (reference.state.layout if reference else None)
    assert layout is not None  # unpack_header guarantees KEY packets have a layout
    if reference is not None and not reference.state.layout.compatible(layout):
        raise BitstreamError(
            f"DELTA packet layout (preset {layout.preset_id}, K {layout.num_keypoints}) is incompatible with its "
            f"reference's (preset {reference.state.layout.preset_id}, K {reference.state.layout.num_keypoints})"
        )
    body = bytes(buf[header.size :])
    coder = _Coder(layout, reference)
    decoder = RangeDecoder(body)
    frames: list[tuple[list[int], int]] = []
    try:
        for i in range(header.num_frames):
            gap = header.reference_distance if i == 0 else 1
            first_ts = header.timestamp_ms if (header.key and i == 0) else None
            frames.append(coder.code_frame(decoder, None, first_ts, gap))
    except RangeCoderError as exc:
        raise BitstreamError(f"corrupt motion packet body (seq {header.seq}): {exc}") from None
    if decoder.bytes_read > len(body) + 64:
        raise BitstreamError(f"corrupt motion packet body (seq {header.seq}): decoding ran far past its end")
    # Canonical check: the exact bytes must be what the encoder makes of the decoded frames.
    encoder = RangeEncoder()
    check = _Coder(layout, reference)
    for i, (values, ts) in enumerate(frames):
        check.code_frame(encoder, values, ts, header.reference_distance if i == 0 else 1)
    if encoder.finish() != body:
        raise BitstreamError(f"corrupt motion packet body (seq {header.seq}): bytes do not re-encode identically")
    state = coder.state()
    return [CodedFrame((header.seq + i) % SEQ_MODULUS, ts, tuple(v), state) for i, (v, ts) in enumerate(frames)]


def residuals_for_packet(
    layout: Layout, frames: Sequence[Sequence[int]], reference_values: Sequence[int] | None
) -> list[list[int]]:
    """The integer residuals a packet codes, per frame in wire order (for the bench's entropy and
    the zstd alternatives): a KEY packet's first frame absolute (``reference_values`` None), every
    other frame minus the frame it is predicted from."""
    order = _field_order(layout)
    pred = None if reference_values is None else list(reference_values)
    out = []
    for values in frames:
        out.append([values[f] - (pred[f] if pred is not None else 0) for f in order])
        pred = list(values)
    return out


# ---------------------------------------------------------------------------------------------
# Feedback

FEEDBACK_TAG = "kpfb"
ACK_MASK_BITS = 32


@dataclass(frozen=True)
class Feedback:
    """Receiver -> sender report for one stream; travels on the reliable control channel.

    acked_seq: the newest frame the receiver decoded (None: none yet); acked_mask: bit i set = frame
    (acked_seq - 1 - i) mod 2^16 was decoded too (i < 32). Every acked frame is one the receiver keeps
    as a reference. key_request_after: not None = "I cannot decode: send a KEY packet newer than
    this sequence number" (the newest one it has seen). frames_received / frames_lost /
    frames_undecodable: cumulative counts (lost = sequence gaps never filled, undecodable = received
    but their reference was missing).
    """

    stream_id: int
    acked_seq: int | None
    acked_mask: int = 0
    key_request_after: int | None = None
    frames_received: int = 0
    frames_lost: int = 0
    frames_undecodable: int = 0

    def pack(self) -> bytes:
        """The msgpack message (same as ``pack_feedback``)."""
        return pack_feedback(self)

    @staticmethod
    def unpack(buf: bytes) -> Feedback:
        """Parse a feedback message (same as ``unpack_feedback``); BitstreamError if malformed."""
        return unpack_feedback(buf)

    def acked(self) -> list[int]:
        """All sequence numbers this feedback confirms, newest first."""
        if self.acked_seq is None:
            return []
        out = [self.acked_seq]
        for i in range(ACK_MASK_BITS):
            if self.acked_mask >> i & 1:
                out.append((self.acked_seq - 1 - i) % SEQ_MODULUS)
        return out


def pack_feedback(feedback: Feedback) -> bytes:
    """Feedback -> msgpack bytes."""
    return msgpack.packb(
        [
            FEEDBACK_TAG, VERSION, feedback.stream_id, feedback.acked_seq, feedback.acked_mask,
            feedback.key_request_after, feedback.frames_received, feedback.frames_lost,
            feedback.frames_undecodable,
        ]
    )


MAX_FEEDBACK_BYTES = 256


def unpack_feedback(buf: bytes) -> Feedback:
    """msgpack bytes -> Feedback; BitstreamError for anything malformed."""
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"feedback must be bytes, got {type(buf).__name__}")
    if len(buf) > MAX_FEEDBACK_BYTES:
        raise BitstreamError(f"oversize feedback message: {len(buf)} bytes > {MAX_FEEDBACK_BYTES}")
    try:
        items = msgpack.unpackb(bytes(buf), raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise BitstreamError(f"feedback is not valid msgpack: {exc}") from None
    if not isinstance(items, list) or len(items) != 9:
        raise BitstreamError(f"feedback must be a 9-item msgpack array, got {type(items).__name__}")
    if items[0] != FEEDBACK_TAG:
        raise BitstreamError(f"not a feedback message: tag {items[0]!r}, expected {FEEDBACK_TAG!r}")
    if items[1] != VERSION:
        raise BitstreamError(f"unsupported feedback version {items[1]!r} (this build reads {VERSION})")
    _, _, stream_id, acked_seq, acked_mask, key_after, received, lost, undecodable = items

    def check_int(name: str, value: object, high: int, optional: bool = False) -> None:
        if optional and value is None:
            return
        if type(value) is not int or not 0 <= value <= high:
            raise BitstreamError(f"feedback {name} must be an int in [0, {high}], got {value!r}")

    check_int("stream_id", stream_id, MAX_STREAM_ID)
    check_int("acked_seq", acked_seq, SEQ_MODULUS - 1, optional=True)
    check_int("acked_mask", acked_mask, (1 << ACK_MASK_BITS) - 1)
    check_int("key_request_after", key_after, SEQ_MODULUS - 1, optional=True)
    for name, value in (("frames_received", received), ("frames_lost", lost), ("frames_undecodable", undecodable)):
        check_int(name, value, (1 << 63) - 1)
    if acked_seq is None and acked_mask:
        raise BitstreamError(f"feedback acked_mask 0x{acked_mask:x} without an acked_seq")
    return Feedback(stream_id, acked_seq, acked_mask, key_after, received, lost, undecodable)

