"""Golden vectors for the browser receiver's control protocol (signaling/static/codec/control.js, reference_message.js,
signaling/static/receiver/session.js), written by the Python side.

    python -m tests.control_js_vectors /tmp/control.json
    KPCALL_CONTROL_VECTORS=/tmp/control.json KPCALL_CONTROL_OUT=/tmp/out.json node --test tests/js_receiver/

- ``control``: every control message type as ``signaling.control.encode_control`` writes it, with the fields
  ``decode_control`` reads back; ``control_errors``: malformed texts with the exact ControlError message.
- ``chunks``: a sender's reference message (the astronaut crop as JPEG, as ``sender.portrait.make_reference``
  makes it) split by ``chunk_message`` and fed in order, shuffled with duplicates, and broken ways, each with what
  ``ChunkReassembler`` returned (the message's SHA-256) or its BitstreamError message; ``references``: packed
  messages with what ``unpack_reference_message`` read or its error.
- ``session``: a sender's hello, reference chunks and motion packets (the synthetic trace) for ``SenderLink``.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
from PIL import Image

from codec.bitstream import Feedback
from codec.exceptions import BitstreamError
from codec.prediction import MotionPacketizer
from codec.reference_message import ChunkReassembler, ReferenceMessage, chunk_message, pack_reference_message, unpack_reference_message
from codec.synthetic_trace import synthetic_trace, trace_timestamps_ms
from signaling import control as c

MODEL_ID, MODEL_VERSION = "kpcall-test", "7"


def control_messages() -> list[c.ControlMessage]:
    h = "ab" * 32
    return [
        c.Hello(1, 17, 25.0, h, MODEL_ID, MODEL_VERSION, 23456), c.ReferenceStatus(h, False), c.ReferenceReady(h, True),
        c.Ping(123456.75), c.Pong(0.0), c.DelayReport(3.25, 45.0, 2, 9), c.DelayReport(3.25, 45.0, 2, 9, 11.5),
        c.RateDecision(12, "default", 2, 8.0, 7.4, "under the cap"), c.RateDecision(20, "fine", 1, None, 11.5, "no cap", 40),
        c.RateDecision(20, "default", 1, 15.0, 12.4, "cap 15 kbps", 48, 3), c.RateDecision(20, "default", 1, 30.0, 24.1, "cap 30 kbps", 55, 1, 128),
        c.Capabilities(1, 64), c.Capabilities(1, 64, 192), c.MotionTransport("rtp+audio"), c.EnhancementKey(65535),
        c.Command(keypoints="auto", max_kbps=12.5), c.Command(frames_per_packet=3, view="yaw=10,pitch=0,roll=0", avatar="reset"),
        c.AvatarChunk(5, 0, 2, "aGVsbG8="), c.Stats("receiver", {"fps": 25.0, "keypoints": 12, "preset": "fine", "latency_ms_median": None}),
        c.Status("receiving", "reference ready"), c.Status("waiting", "waiting for a sender", False), c.Ack("view", "view set to frontal"), c.ErrorReply("bad_packet", "truncated header"),
    ]


CONTROL_ERRORS = [
    "not json", "[1, 2]", '{"type": 5}', '{"type": "nope"}', '{"type": "ping", "t_ms": 1, "extra": 2, "more": 3}',
    '{"type": "hello", "version": 2, "stream_id": 1, "fps": 25, "content_hash": "' + "a" * 64 + '", "model_id": "m", '
    '"model_version": "1", "reference_bytes": 5}',
    '{"type": "hello", "version": 1, "stream_id": -1, "fps": 25, "content_hash": "x", "model_id": "m", "model_version": "1", '
    '"reference_bytes": 5}',
    '{"type": "hello", "version": 1, "stream_id": 1, "fps": 500, "content_hash": "x", "model_id": "m", "model_version": "1", '
    '"reference_bytes": 5}',
    '{"type": "hello", "version": 1, "stream_id": 1, "fps": 25, "content_hash": "ABC", "model_id": "m", "model_version": "1", '
    '"reference_bytes": 5}',
    '{"type": "hello", "version": 1, "stream_id": 1, "fps": 25, "content_hash": "' + "a" * 64 + '", "model_id": 7, '
    '"model_version": "1", "reference_bytes": 5}',
    '{"type": "reference_status", "content_hash": "' + "b" * 64 + '", "have": 1}',
    '{"type": "ping", "t_ms": "soon"}', '{"type": "ping", "t_ms": -5}', '{"type": "ping", "t_ms": 1e16}', '{"type": "ping"}',
    '{"type": "delay_report", "jitter_ms": 1, "playout_delay_ms": 2, "late_frames": 1.5, "concealed_frames": 0}',
    '{"type": "rate_decision", "keypoints": 65, "preset": "x", "frames_per_packet": 1, "max_kbps": null, "estimated_kbps": 1, '
    '"reason": "r"}',
    '{"type": "rate_decision", "keypoints": 6, "preset": "x", "frames_per_packet": 1, "max_kbps": null, "estimated_kbps": 1, '
    '"reason": "r", "enhancement_qp": 0}',
    '{"type": "rate_decision", "keypoints": 6, "preset": "x", "frames_per_packet": 1, "max_kbps": null, "estimated_kbps": 1, '
    '"reason": "r", "enhancement_qp": 40, "enhancement_interval": 5}',
    '{"type": "motion_transport", "transport": "carrier pigeon"}', '{"type": "enhancement_key", "seq": 70000}',
    '{"type": "command", "avatar": "mine"}', '{"type": "command", "view": "UP"}', '{"type": "command", "keypoints": "many"}',
    '{"type": "command", "max_kbps": true}',
    '{"type": "avatar_chunk", "upload_id": 1, "index": 3, "count": 2, "data": ""}',
    '{"type": "avatar_chunk", "upload_id": 1, "index": 0, "count": 1, "data": "abc"}',
    '{"type": "stats", "source": "receiver", "values": []}', '{"type": "stats", "source": "receiver", "values": {"Bad": 1}}',
    '{"type": "stats", "source": "receiver", "values": {"ok": [1]}}', '{"type": "stats", "source": "r", "values": {"big": 2e16}}', '{"type": "status", "state": 5}', '{"type": "status", "state": "x", "control": 1}',
    '{"type": "error", "code": "x", "message": "' + "m" * 600 + '"}', '{"type": "ack", "command": "' + "c" * 40 + '"}',
    '{"type": "hello", "version": "one"}', '"just a string"', '{"type": "reference_ready", "content_hash": "' + "c" * 64 + '"}',
]


def control_vectors() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    good = []
    for msg in control_messages():
        text = c.encode_control(msg)
        assert c.decode_control(text) == msg
        good.append({"text": text, "fields": {"type": msg.TYPE, **asdict(msg)}})
    bad = []
    for text in CONTROL_ERRORS:
        try:
            c.decode_control(text)
        except c.ControlError as exc:
            bad.append({"text": text, "error": str(exc), "exact": not text.startswith("not json")})
        else:
            raise AssertionError(f"{text!r} decodes in Python: not an error vector")
    return good, bad


def portrait_reference(size: int = 256) -> ReferenceMessage:
    """The sender's reference message for the astronaut (face region resized to size², JPEG as the sender encodes it)."""
    from sender.portrait import default_portrait, make_reference

    def crop(image: np.ndarray, output_size: int) -> np.ndarray:
        return np.asarray(Image.fromarray(image[20:276, 120:376]).resize((output_size, output_size), Image.Resampling.LANCZOS))

    return make_reference(default_portrait(), size, MODEL_ID, MODEL_VERSION, crop=crop)


def _reassemble(chunks: list[bytes], max_pending: int = 2) -> list[dict[str, Any]]:
    """Feed chunks to a fresh ChunkReassembler: per chunk the message's SHA-256 (complete), null, or the error."""
    reassembler = ChunkReassembler(max_pending=max_pending)
    out: list[dict[str, Any]] = []
    for chunk in chunks:
        event: dict[str, Any] = {"chunk": chunk.hex()}
        try:
            whole = reassembler.add(chunk)
            event["message_sha256"] = None if whole is None else hashlib.sha256(whole).hexdigest()
        except BitstreamError as exc:
            event["error"] = str(exc)
        out.append(event)
    return out


def _with(chunk: bytes, at: int, value: bytes) -> bytes:
    return chunk[:at] + value + chunk[at + len(value):]


def chunk_vectors(packed: bytes) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(24)
    chunks = chunk_message(packed, 4096 + 43)
    shuffled = chunks + rng.sample(chunks, 3)
    rng.shuffle(shuffled)
    other = chunk_message(b"x" * 5000, 1000 + 43)
    first = chunks[0]
    return {
        "in_order": _reassemble(chunks),
        "shuffled_with_duplicates": _reassemble(shuffled),
        "one_chunk": _reassemble(chunk_message(packed)),
        "interleaved_pending_drop": _reassemble([other[0], chunks[0], chunk_message(b"y" * 3000, 1043)[0], *chunks[1:], *other[1:]]),
        "empty_chunk": _reassemble([b""]),
        "truncated": _reassemble([first[:20]]),
        "bad_magic": _reassemble([b"KX" + first[2:]]),
        "bad_magic_quote": _reassemble([b"'\x00" + first[2:]]),
        "bad_version": _reassemble([_with(first, 2, b"\x02")]),
        "index_past_count": _reassemble([_with(first, 35, (500).to_bytes(2, "big"))]),
        "over_limit": _reassemble([_with(first, 39, (10 ** 9).to_bytes(4, "big"))]),
        "count_vs_total": _reassemble([_with(_with(first, 37, (60).to_bytes(2, "big")), 39, (50).to_bytes(4, "big"))]),
        "count_changes": _reassemble([chunks[0], _with(chunks[1], 37, (len(chunks) + 1).to_bytes(2, "big"))]),
        "duplicate_differs": _reassemble([chunks[1], chunks[1][:-1] + bytes([chunks[1][-1] ^ 1])]),
        "size_differs": _reassemble([chunks[0], chunks[1][:-1]]),
        "last_too_long": _reassemble([chunks[0], chunks[-1] + b"zz"]),
        "single_short": _reassemble([chunk_message(packed)[0][:-1]]),
        "corrupt_payload": _reassemble([c if i != 2 else c[:-1] + bytes([c[-1] ^ 0xFF]) for i, c in enumerate(chunks)]),
    }


def _pack(items: list[Any]) -> bytes:
    return msgpack.packb(items, use_bin_type=True)


def reference_vectors(msg: ReferenceMessage) -> list[dict[str, Any]]:
    base = ["kpref", 1, msg.model_id, msg.model_version, msg.content_hash, msg.width, msg.height, msg.image_format, msg.image]

    def variant(**changes: Any) -> bytes:
        items = list(base)
        for index, value in changes.items():
            items[int(index[1:])] = value
        return _pack(items)

    cases = {
        "valid": (pack_reference_message(msg), True),
        "not_msgpack": (b"\xc1\x00", False),
        "not_array": (_pack({"a": 1}), True),
        "short_array": (_pack(base[:8]), True),
        "bad_tag": (variant(i0="kpxx"), True),
        "bad_version": (variant(i1=2), True),
        "float_width": (variant(i5=256.5), False),
        "str_format": (variant(i7=5), True),
        "hash_mismatch": (variant(i4=bytes(32)), True),
        "size_mismatch": (variant(i5=128), True),
        "format_mismatch": (variant(i7="png"), True),
        "not_an_image": (variant(i8=b"GIF89a" + bytes(100)), True),
    }
    out = []
    for name, (data, exact) in cases.items():
        event: dict[str, Any] = {"name": name, "data": data.hex(), "exact": exact}
        try:
            got = unpack_reference_message(data)
            event["message"] = {"model_id": got.model_id, "model_version": got.model_version, "content_hash": got.content_hash.hex(),
                                "width": got.width, "height": got.height, "image_format": got.image_format,
                                "image_sha256": hashlib.sha256(got.image).hexdigest()}
        except BitstreamError as exc:
            event["error"] = str(exc)
        out.append(event)
    return out


def session_vectors(msg: ReferenceMessage, packed: bytes) -> dict[str, Any]:
    """What a sender sends a receiver: hello, the reference's chunks, then 40 frames of motion, 2 frames per packet."""
    packetizer = MotionPacketizer(stream_id=9, frames_per_packet=2)
    packetizer.set_num_keypoints(12)
    motions = synthetic_trace(40, 25.0, seed=3)
    packets = []
    for i, (motion, ts) in enumerate(zip(motions, trace_timestamps_ms(40, 25.0))):
        packet = packetizer.push(motion, ts + 1_000_000)
        if packet is not None:
            packets.append({"hex": packet.hex(), "arrival_ms": 1_000_000 + ts + 30 + (i % 3) * 7})
            if len(packets) == 3:
                packetizer.on_feedback(Feedback(9, (2 * len(packets) - 1) % 65536))
    hello = c.Hello(1, 9, 25.0, msg.content_hash.hex(), MODEL_ID, MODEL_VERSION, len(packed))
    return {
        "hello": c.encode_control(hello), "chunks": [ch.hex() for ch in chunk_message(packed, 8192 + 43)], "packets": packets,
        "content_hash": msg.content_hash.hex(), "image_sha256": hashlib.sha256(msg.image).hexdigest(),
        "model_id": MODEL_ID, "model_version": MODEL_VERSION,
    }


def build_vectors() -> dict[str, Any]:
    msg = portrait_reference()
    packed = pack_reference_message(msg)
    good, bad = control_vectors()
    return {
        "control": good, "control_errors": bad, "chunks": chunk_vectors(packed), "references": reference_vectors(msg),
        "session": session_vectors(msg, packed),
        "sha256": [{"hex": bytes(range(n % 256)).hex() * (1 + n // 256), "sha256": hashlib.sha256(bytes(range(n % 256)) * (1 + n // 256)).hexdigest()}
                   for n in (0, 1, 55, 56, 64, 119, 1000)],
    }


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(json.dumps(build_vectors()))
