"""Messages on the reliable "control" data channel between sender, receiver and viewers (JSON text).

Binary messages on the same channel are the codec's own formats: reference-message chunks
(sender -> receiver, ``codec.reference_message``) and Feedback (receiver -> sender,
``codec.bitstream.pack_feedback``); this module covers the text messages. Each is one JSON object
with a ``"type"``; ``decode_control`` validates the schema and the size (≤ ``MAX_CONTROL_BYTES``) and
raises ``ControlError`` (a ValueError quoting the bad value) for anything else. The layouts are
documented in ``signaling/PROTOCOL.md``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, TypeAlias

PROTOCOL_VERSION = 1
MAX_CONTROL_BYTES = 64 * 1024
MAX_STATS_FIELDS = 64
MAX_STATS_NUMBER = 2**53  # a stats value beyond this is not exact in JavaScript (the page reads them)
MAX_AVATAR_BYTES = 4 * 1024 * 1024
MAX_AVATAR_CHUNK_BYTES = 32 * 1024  # decoded bytes per avatar chunk (base64 makes it ~43 KiB of text)
HEX_HASH = re.compile(r"^[0-9a-f]{64}$")
STAT_KEY = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
VIEW_PATTERN = re.compile(r"^[a-z0-9=,.:\- ]{1,128}$")


class ControlError(ValueError):
    """A control message that cannot be accepted."""


@dataclass(frozen=True)
class Hello:
    """sender -> receiver, first message: the stream and the reference portrait it drives."""

    TYPE: ClassVar[str] = "hello"
    version: int
    stream_id: int
    fps: float
    content_hash: str  # hex SHA-256 of the encoded portrait (the cache key with the model id)
    model_id: str
    model_version: str
    reference_bytes: int  # size of the packed reference message


@dataclass(frozen=True)
class ReferenceStatus:
    """receiver -> sender: whether it holds the announced reference (False: send it)."""

    TYPE: ClassVar[str] = "reference_status"
    content_hash: str
    have: bool


@dataclass(frozen=True)
class ReferenceReady:
    """receiver -> sender (and viewers): the reference is prepared, rendering can start."""

    TYPE: ClassVar[str] = "reference_ready"
    content_hash: str
    cached: bool  # True when it came from the receiver's cache instead of the wire


@dataclass(frozen=True)
class Ping:
    """Round-trip probe; the other side answers ``Pong`` with the same ``t_ms``."""

    TYPE: ClassVar[str] = "ping"
    t_ms: float


@dataclass(frozen=True)
class Pong:
    TYPE: ClassVar[str] = "pong"
    t_ms: float


@dataclass(frozen=True)
class DelayReport:
    """receiver -> sender: playout health since the last report (for the bandwidth controller)."""

    TYPE: ClassVar[str] = "delay_report"
    jitter_ms: float  # p95 of the per-packet arrival delay above its minimum, over the last 100 packets
    playout_delay_ms: float  # the jitter buffer's current target delay
    late_frames: int  # cumulative frames that arrived after their playout time
    concealed_frames: int  # cumulative output frames synthesized without their motion
    # output frames the receiver synthesized per second since its last report, sent while the sender sends pictures
    # (the controller leaves out pictures it could not show); omitted when None
    rendered_fps: float | None = None


@dataclass(frozen=True)
class RateDecision:
    """sender -> receiver -> viewers: what the bandwidth controller chose and why."""

    TYPE: ClassVar[str] = "rate_decision"
    keypoints: int
    preset: str
    frames_per_packet: int
    max_kbps: float | None
    estimated_kbps: float
    reason: str
    enhancement_qp: int | None = None  # the enhancement layer's qp on this rung (None: motion only); omitted when None
    enhancement_interval: int | None = None  # a picture with every N-th frame on this rung (None: motion only, or 1)
    enhancement_size: int | None = None  # the picture's side on this rung (None: motion only)


@dataclass(frozen=True)
class Capabilities:
    """receiver -> sender, before ``reference_status``: optional formats it reads. Sent only by a receiver
    whose model has the enhancement branch; a sender that never gets it sends plain motion packets."""

    TYPE: ClassVar[str] = "capabilities"
    frame_bundle: int  # the frame-bundle version it reads (codec.enhancement.bundle; 0: none)
    enhancement_size: int  # E of its model's enhancement branch (0: none)
    enhancement_max_size: int = 0  # the largest picture side it reads (codec.enhancement.picture_rate; 0: E only)


MOTION_TRANSPORTS = ("rtp", "datachannel", "rtp+audio")


@dataclass(frozen=True)
class MotionTransport:
    """receiver -> sender: carry this link's motion (and the receiver's feedback back) as RTP on the offer's video
    transceiver (``signaling.rtp_motion``), or back on the "motion" data channel. Sent only by a receiver that found
    that transceiver in the offer; a sender that never hears it keeps the data channel. "rtp+audio" (sent after "rtp",
    by a receiver that plays the sender's audio): motion may also ride inside the audio's RTP packets
    (``signaling.audio_motion``); a sender that does not do that answers with an error and stays on plain RTP."""

    TYPE: ClassVar[str] = "motion_transport"
    transport: str  # one of MOTION_TRANSPORTS


@dataclass(frozen=True)
class EnhancementKey:
    """receiver -> sender: its enhancement decoder waits for a key picture (a picture was lost, late or
    corrupt); the sender makes the next picture it sends after motion frame ``seq`` a key frame."""

    TYPE: ClassVar[str] = "enhancement_key"
    seq: int  # the newest motion frame sequence number the receiver has seen (16 bits)


@dataclass(frozen=True)
class Command:
    """viewer -> receiver (-> sender): settings to change; absent fields (None) are left unchanged.

    keypoints / frames_per_packet: an int override, or "auto" to give it back to the controller;
    max_kbps: a cap in kbps, or 0 for no cap; view: "frontal" or "yaw=..,pitch=..,roll=..";
    avatar: "reset" to drive the sender's own portrait again.
    """

    TYPE: ClassVar[str] = "command"
    keypoints: int | str | None = None
    frames_per_packet: int | str | None = None
    max_kbps: float | None = None
    view: str | None = None
    avatar: str | None = None

    def sender_part(self) -> Command | None:
        """The fields the sender handles (None if there are none)."""
        if self.keypoints is None and self.frames_per_packet is None and self.max_kbps is None:
            return None
        return Command(self.keypoints, self.frames_per_packet, self.max_kbps)


@dataclass(frozen=True)
class AvatarChunk:
    """viewer -> receiver: one piece of a new avatar image (JPEG/PNG/WebP), base64 in ``data``."""

    TYPE: ClassVar[str] = "avatar_chunk"
    upload_id: int
    index: int
    count: int
    data: str = field(repr=False)

    def payload(self) -> bytes:
        return base64.b64decode(self.data, validate=True)


@dataclass(frozen=True)
class Stats:
    """sender or receiver -> viewers: numbers for the page (keys and units in PROTOCOL.md)."""

    TYPE: ClassVar[str] = "stats"
    source: str  # "sender" or "receiver"
    values: dict[str, float | int | str | None]


@dataclass(frozen=True)
class Status:
    """receiver -> viewers: what the call is doing, e.g. "waiting for a sender", "sender left"."""

    TYPE: ClassVar[str] = "status"
    state: str
    detail: str = ""
    control: bool | None = None  # (receiver -> viewer, on open) whether this viewer may send commands and avatars; absent: unsaid


@dataclass(frozen=True)
class Ack:
    """receiver -> viewer: a command was carried out (view, avatar) or passed on to the sender
    (keypoints, frames_per_packet, max_kbps: the sender's next ``rate_decision`` confirms those)."""

    TYPE: ClassVar[str] = "ack"
    command: str  # the command field it answers: "view", "avatar", "keypoints", "max_kbps", ...
    detail: str = ""


@dataclass(frozen=True)
class ErrorReply:
    """Either way: an answer to a message that was rejected (the channel stays usable)."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str


ControlMessage: TypeAlias = (
    Hello | ReferenceStatus | ReferenceReady | Ping | Pong | DelayReport | RateDecision | Capabilities | MotionTransport
    | EnhancementKey
    | Command | AvatarChunk | Stats | Status | Ack | ErrorReply
)
_TYPES: dict[str, type] = {
    cls.TYPE: cls
    for cls in (
        Hello, ReferenceStatus, ReferenceReady, Ping, Pong, DelayReport, RateDecision, Capabilities, MotionTransport, EnhancementKey, Command,
        AvatarChunk, Stats, Status, Ack, ErrorReply,
    )
}


def encode_control(msg: ControlMessage) -> str:
    """A control message as JSON text; ControlError if it would exceed ``MAX_CONTROL_BYTES``."""
    obj = {"type": msg.TYPE, **{k: v for k, v in asdict(msg).items()
                                if v is not None or (isinstance(msg, (RateDecision, Stats)) and k != "enhancement_qp")}}
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    if len(text.encode()) > MAX_CONTROL_BYTES:
        raise ControlError(f"{msg.TYPE} message of {len(text.encode())} bytes exceeds {MAX_CONTROL_BYTES}")
    return text


def _finite(value: object) -> bool:
    """A JSON number that is not NaN or infinite. An int of any size qualifies (``math.isfinite`` would raise
    OverflowError for one above ~1e308, which JSON text can carry: ``1`` and 400 zeros); the callers bound it."""
    return type(value) is int or (type(value) is float and math.isfinite(value))


def _number(obj: dict[str, Any], key: str, low: float, high: float, optional: bool = False) -> float | None:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not _finite(value) or not low <= value <= high:
        raise ControlError(f"control field {key!r} must be a number in [{low:g}, {high:g}], got {value!r:.40}")
    return float(value)


def _integer(obj: dict[str, Any], key: str, low: int, high: int) -> int:
    value = obj.get(key)
    if type(value) is not int or not low <= value <= high:
        raise ControlError(f"control field {key!r} must be an integer in [{low}, {high}], got {value!r:.40}")
    return value


def _text(obj: dict[str, Any], key: str, max_chars: int, pattern: re.Pattern[str] | None = None, optional: bool = False) -> str | None:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > max_chars:
        raise ControlError(f"control field {key!r} must be a string of ≤ {max_chars} characters, got {value!r:.40}")
    if pattern is not None and not pattern.match(value):
        raise ControlError(f"control field {key!r} = {value!r:.60} does not match {pattern.pattern}")
    return value


def _auto_or_int(obj: dict[str, Any], key: str, low: int, high: int) -> int | str | None:
    value = obj.get(key)
    if value is None or value == "auto":
        return value  # type: ignore[no-any-return]
    return _integer(obj, key, low, high)


def _flag(obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key)
    if not isinstance(value, bool):
        raise ControlError(f"control field {key!r} must be true or false, got {value!r:.40}")
    return value


def decode_control(data: str | bytes) -> ControlMessage:
    """JSON text -> a control message; ControlError for anything malformed, unknown or oversize."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise ControlError("control message is not UTF-8 text") from None
    if not isinstance(data, str):
        raise ControlError(f"control message must be text, got {type(data).__name__}")
    if len(data) > MAX_CONTROL_BYTES:
        raise ControlError(f"control message of {len(data)} characters exceeds {MAX_CONTROL_BYTES}")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ControlError(f"control message is not valid JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ControlError(f"control message must be a JSON object with a string 'type', got {data[:60]!r}")
    kind = obj["type"]
    cls = _TYPES.get(kind)
    if cls is None:
        raise ControlError(f"unknown control message type {kind!r:.40}; expected one of {sorted(_TYPES)}")
    fields = set(cls.__dataclass_fields__)
    extra = set(obj) - fields - {"type"}
    if extra:
        raise ControlError(f"{kind!r} message has unknown fields {sorted(extra)[:5]}")
    if cls is Hello:
        version = _integer(obj, "version", 1, 1000)
        if version != PROTOCOL_VERSION:
            raise ControlError(f"unsupported control protocol version {version} (this build speaks {PROTOCOL_VERSION})")
        return Hello(
            version, _integer(obj, "stream_id", 0, 2**32 - 1), _number(obj, "fps", 1.0, 120.0),  # type: ignore[arg-type]
            _text(obj, "content_hash", 64, HEX_HASH), _text(obj, "model_id", 128), _text(obj, "model_version", 128),  # type: ignore[arg-type]
            _integer(obj, "reference_bytes", 0, 64 * 1024 * 1024),
        )
    if cls is ReferenceStatus:
        return ReferenceStatus(_text(obj, "content_hash", 64, HEX_HASH), _flag(obj, "have"))  # type: ignore[arg-type]
    if cls is ReferenceReady:
        return ReferenceReady(_text(obj, "content_hash", 64, HEX_HASH), _flag(obj, "cached"))  # type: ignore[arg-type]
    if cls in (Ping, Pong):
        return cls(_number(obj, "t_ms", 0.0, 1e15))  # type: ignore[no-any-return]
    if cls is DelayReport:
        return DelayReport(
            _number(obj, "jitter_ms", 0.0, 1e6), _number(obj, "playout_delay_ms", 0.0, 1e6),  # type: ignore[arg-type]
            _integer(obj, "late_frames", 0, 2**53), _integer(obj, "concealed_frames", 0, 2**53),
            _number(obj, "rendered_fps", 0.0, 1000.0, optional=True),
        )
    if cls is RateDecision:
        return RateDecision(
            _integer(obj, "keypoints", 0, 64), _text(obj, "preset", 32), _integer(obj, "frames_per_packet", 1, 64),  # type: ignore[arg-type]
            _number(obj, "max_kbps", 0.0, 1e6, optional=True), _number(obj, "estimated_kbps", 0.0, 1e6), _text(obj, "reason", 256),  # type: ignore[arg-type]
            None if obj.get("enhancement_qp") is None else _integer(obj, "enhancement_qp", 1, 63),
            None if obj.get("enhancement_interval") is None else _integer(obj, "enhancement_interval", 1, 4),
            None if obj.get("enhancement_size") is None else _integer(obj, "enhancement_size", 1, 1024),
        )
    if cls is MotionTransport:
        transport = _text(obj, "transport", 16)
        if transport not in MOTION_TRANSPORTS:
            raise ControlError(f"motion transport {transport!r} is not one of {list(MOTION_TRANSPORTS)}")
        return MotionTransport(transport)
    if cls is Capabilities:
        return Capabilities(_integer(obj, "frame_bundle", 0, 255), _integer(obj, "enhancement_size", 0, 1024),
                            _integer(obj, "enhancement_max_size", 0, 1024) if "enhancement_max_size" in obj else 0)
    if cls is EnhancementKey:
        return EnhancementKey(_integer(obj, "seq", 0, 65535))
    if cls is Command:
        max_kbps = _number(obj, "max_kbps", 0.0, 1e5, optional=True)
        avatar = _text(obj, "avatar", 16, optional=True)
        if avatar not in (None, "reset"):
            raise ControlError(f"command field 'avatar' must be \"reset\" (upload images with avatar_chunk), got {avatar!r}")
        return Command(
            _auto_or_int(obj, "keypoints", 0, 64), _auto_or_int(obj, "frames_per_packet", 1, 8), max_kbps,
            _text(obj, "view", 128, VIEW_PATTERN, optional=True), avatar,
        )
    if cls is AvatarChunk:
        count = _integer(obj, "count", 1, MAX_AVATAR_BYTES // MAX_AVATAR_CHUNK_BYTES + 1)
        index = _integer(obj, "index", 0, count - 1)
        text = _text(obj, "data", 4 * MAX_AVATAR_CHUNK_BYTES // 3 + 4)
        chunk = AvatarChunk(_integer(obj, "upload_id", 0, 2**31), index, count, text)  # type: ignore[arg-type]
        try:
            chunk.payload()
        except (binascii.Error, ValueError):
            raise ControlError("avatar_chunk 'data' is not valid base64") from None
        return chunk
    if cls is Stats:
        source = _text(obj, "source", 16)
        values = obj.get("values")
        if not isinstance(values, dict) or len(values) > MAX_STATS_FIELDS:
            raise ControlError(f"stats 'values' must be an object of ≤ {MAX_STATS_FIELDS} fields")
        for key, value in values.items():
            if not STAT_KEY.match(key):
                raise ControlError(f"stats key {key!r:.40} must match {STAT_KEY.pattern}")
            ok = value is None or (isinstance(value, str) and len(value) <= 256) or (
                _finite(value) and abs(value) <= MAX_STATS_NUMBER
            )
            if not ok:
                raise ControlError(f"stats value of {key!r} must be a finite number of magnitude ≤ 2**53, a short string or null, got {value!r:.40}")
        return Stats(source, values)  # type: ignore[arg-type]
    if cls is Status:
        control = None if obj.get("control") is None else _flag(obj, "control")
        return Status(_text(obj, "state", 64), _text(obj, "detail", 512, optional=True) or "", control)  # type: ignore[arg-type]
    if cls is Ack:
        return Ack(_text(obj, "command", 32), _text(obj, "detail", 512, optional=True) or "")  # type: ignore[arg-type]
    assert cls is ErrorReply
    return ErrorReply(_text(obj, "code", 64), _text(obj, "message", 512))  # type: ignore[arg-type]


class AvatarAssembler:
    """Reassembles one avatar upload from ``AvatarChunk`` messages (bounded; a new upload id restarts)."""

    def __init__(self, max_bytes: int = MAX_AVATAR_BYTES) -> None:
        self.max_bytes = max_bytes
        self._upload_id: int | None = None
        self._count = 0
        self._parts: dict[int, bytes] = {}
        self._size = 0

    def add(self, chunk: AvatarChunk) -> bytes | None:
        """The whole image once every chunk arrived, else None; ControlError when it grows too large."""
        if chunk.upload_id != self._upload_id or chunk.count != self._count:
            self._upload_id, self._count, self._parts, self._size = chunk.upload_id, chunk.count, {}, 0
        payload = chunk.payload()
        if len(payload) > MAX_AVATAR_CHUNK_BYTES:
            raise ControlError(f"avatar chunk of {len(payload)} bytes exceeds {MAX_AVATAR_CHUNK_BYTES}")
        if chunk.index not in self._parts:
            self._size += len(payload)
            if self._size > self.max_bytes:
                self._upload_id, self._parts, self._size = None, {}, 0
                raise ControlError(f"avatar upload exceeds {self.max_bytes} bytes: send a smaller image")
            self._parts[chunk.index] = payload
        if len(self._parts) < self._count:
            return None
        image = b"".join(self._parts[i] for i in range(self._count))
        self._upload_id, self._parts, self._size = None, {}, 0
        return image


def avatar_chunks(image: bytes, upload_id: int) -> list[AvatarChunk]:
    """Split an encoded image into AvatarChunk messages (what a viewer sends)."""
    if len(image) > MAX_AVATAR_BYTES:
        raise ValueError(f"avatar image of {len(image)} bytes exceeds {MAX_AVATAR_BYTES}")
    pieces = [image[i : i + MAX_AVATAR_CHUNK_BYTES] for i in range(0, max(1, len(image)), MAX_AVATAR_CHUNK_BYTES)]
    return [AvatarChunk(upload_id, i, len(pieces), base64.b64encode(p).decode()) for i, p in enumerate(pieces)]
