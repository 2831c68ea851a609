"""Fuzzing every parser that reads what a peer, a server or a person sends: each input must parse or raise the
error its parser documents, within a time bound.

    python -m bench fuzz --total 1000000 --json fuzz.json   # issue 22's goal: 10^6 inputs over every target
    python -m bench fuzz --total 20000                      # a quick pass (about a minute)
    python -m bench fuzz --total 50000 --only control,images

Targets (``TARGETS``; each names the exceptions its parser documents, anything else is a finding):

- ``signaling_client`` / ``signaling_server``: ``signaling.messages.decode_client_message`` /
  ``decode_server_message`` (``ProtocolError``); ``signaling_loopback``: the same messages sent to a real
  server over loopback WebSocket, each followed by a ping: the server must answer (error, relay or pong),
  log nothing at ERROR and keep serving (a connection it closes for too many rejections is reopened);
- ``control``: ``signaling.control.decode_control`` (``ControlError``), avatar chunks also through the
  ``AvatarAssembler``;
- ``motion_packet``: ``codec.prediction.MotionDepacketizer.receive`` primed with a real stream;
  ``motion_body``: ``codec.bitstream.decode_packet`` against the right reference, so that mutated bodies
  reach the range decoder; ``frame_bundle``: ``codec.enhancement.bundle.unpack_bundle`` then the motion part;
  ``feedback``: ``codec.bitstream.unpack_feedback`` (all ``BitstreamError``);
- ``audio_motion``: ``signaling.audio_motion.unpack_riding`` (``AudioMotionError``) then each message;
  ``rtp_motion``: aiortc's ``RtpPacket.parse`` (``ValueError``) then ``MotionRtpChannel``'s packet handler
  and the audio channel's (riding motion), whose messages go to a depacketizer;
- ``reference_chunk``: ``codec.reference_message.ChunkReassembler.add``; ``reference_message``:
  ``unpack_reference_message`` then ``decode_portrait`` (``BitstreamError``);
- ``images``: ``codec.image_input.read_image`` with the photo limits (reference photo, ``repose``) and with
  the receiver's avatar limits (``ImageInputError``); PNG/JPEG headers are rewritten with huge or zero
  sizes (checksums fixed), and GIF/BMP/TIFF seeds must be refused.

Inputs: mutations of valid messages (bit flips, bytes set to edge values, truncation, extension, spans deleted,
inserted, swapped or duplicated, splices of two messages, varints and numbers made huge; for JSON: values
replaced by huge numbers, NaN, infinities, lone surrogates, deep nesting, wrong types; fields dropped, added
or swapped), and random bytes. An input that takes over ``HANG_S`` is timed again; a hang is one that takes
over ``HANG_S`` both times. A watchdog ends the process with a traceback if 100 inputs run ``WATCHDOG_S``.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import io
import json
import logging
import math
import random
import struct
import sys
import time
import traceback
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

HANG_S = 1.0  # an input slower than this (twice) is a hang
WATCHDOG_S = 60.0  # 100 inputs (one hanging) running this long end the process with every thread's traceback
MAX_FINDINGS_KEPT = 20  # per target: distinct (exception type, place) pairs kept with an example input


# -- mutations -------------------------------------------------------------------------------------
EDGE_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0xA1, 0xB1, 0x88, 0xC0, 0xFE)


def mutate_bytes(rng: random.Random, data: bytes, corpus: Sequence[bytes] = ()) -> bytes:
    """One random structural mutation of ``data`` (``corpus``: other seeds to splice with)."""
    buf = bytearray(data)
    kind = rng.randrange(14)
    if kind == 0 and buf:  # flip bits
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif kind == 1 and buf:  # a random byte
        buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif kind == 2:  # truncate
        del buf[rng.randint(0, len(buf)) :]
    elif kind == 3:  # extend
        buf += rng.randbytes(rng.choice((1, 2, 8, 64, 1500)))
    elif kind == 4 and buf:  # delete a span
        i = rng.randrange(len(buf))
        del buf[i : i + rng.randint(1, 16)]
    elif kind == 5:  # insert random bytes
        i = rng.randint(0, len(buf))
        buf[i:i] = rng.randbytes(rng.randint(1, 16))
    elif kind == 6:  # random bytes, no seed
        return rng.randbytes(rng.choice((0, 1, 2, 5, 12, 40, 300, 1300)))
    elif kind == 7 and buf:  # edge values
        for _ in range(rng.randint(1, 3)):
            buf[rng.randrange(len(buf))] = rng.choice(EDGE_BYTES)
    elif kind == 8 and buf:  # a huge number: a run of 0xFF (varints, lengths, sizes at their maximum)
        i = rng.randrange(len(buf))
        run = rng.choice((1, 2, 4, 8))
        buf[i : i + run] = b"\xff" * (run - 1) + rng.choice((b"\xff", b"\x7f"))
    elif kind == 9 and len(buf) >= 4:  # swap two spans (fields swapped)
        n = rng.randint(1, max(1, len(buf) // 4))
        i, j = sorted(rng.sample(range(len(buf) - n + 1), 2)) if len(buf) - n + 1 >= 2 else (0, 0)
        if j >= i + n:
            buf[i : i + n], buf[j : j + n] = buf[j : j + n], buf[i : i + n]
    elif kind == 10 and buf:  # duplicate a span
        i = rng.randrange(len(buf))
        span = buf[i : i + rng.randint(1, 32)]
        buf[i:i] = span
    elif kind == 11 and corpus:  # splice: this one's head, another's tail
        other = rng.choice(corpus)
        buf = buf[: rng.randint(0, len(buf))] + bytearray(other[rng.randint(0, len(other)) :])
    elif kind == 12 and buf:  # a 32-bit word set to an edge value (big-endian lengths and sizes)
        i = rng.randrange(len(buf))
        buf[i : i + 4] = struct.pack(">I", rng.choice((0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 65535, 65536)))
    else:  # zero a span
        if buf:
            i = rng.randrange(len(buf))
            n = rng.randint(1, 8)
            buf[i : i + n] = bytes(len(buf[i : i + n]))
    return bytes(buf)


def mutate_bytes_more(rng: random.Random, data: bytes, corpus: Sequence[bytes] = ()) -> bytes:
    """One to three mutations (one mostly)."""
    data = mutate_bytes(rng, data, corpus)
    while rng.random() < 0.3:
        data = mutate_bytes(rng, data, corpus)
    return data


SURROGATES = ("\ud800", "\udfff", "\udfff\ud800", "x\udc80")
EDGE_VALUES: tuple[Any, ...] = (
    0, -1, 1, 2**31, 2**32, 2**53 + 1, 2**63, 2**64, -(2**63), 10**30, 10**400, -(2**1024), 1e308, -1e308, 1e-320, float("nan"), float("inf"),
    float("-inf"), -0.0, 0.5, "", " ", "\x00", "\n", "a\r\n", "é", "\U0001f600", "x" * 300, "x" * 70_000, None, True, False,
    [], {}, [[[]]], {"type": "ping"}, ["offer"], "auto", "reset", "sender", "receiver", "viewer", "..", "demo\n", *SURROGATES,
)


HUGE_NUMBER = "\x00huge number\x00"


def _edge_value(rng: random.Random) -> Any:
    if rng.random() < 0.05:  # a number of 5000 digits, over Python's int-from-text limit (put in by mutate_json)
        return HUGE_NUMBER
    return rng.choice(EDGE_VALUES)


def _mutate_value(rng: random.Random, value: Any, keys: Sequence[str]) -> Any:
    if isinstance(value, dict) and value and rng.random() < 0.5:
        out = dict(value)
        key = rng.choice(list(out))
        out[key] = _mutate_value(rng, out[key], keys)
        return out
    if isinstance(value, list) and value and rng.random() < 0.5:
        out_list = list(value)
        i = rng.randrange(len(out_list))
        out_list[i] = _mutate_value(rng, out_list[i], keys)
        return out_list
    if isinstance(value, str) and value and rng.random() < 0.4:  # an edit inside the string
        i = rng.randrange(len(value) + 1)
        return value[:i] + rng.choice(("\ud800", "\n", "\x00", "'", '"', "\\", "é", "\U0001f600", "9" * 10)) + value[i:]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and rng.random() < 0.4:
        choices: list[Any] = [value + 1, value - 1, -value, value * 2**40]
        if isinstance(value, int) and abs(value) < 2**1000:
            choices.append(float(value))  # 3 -> 3.0: an int field given a float
        return rng.choice(choices)
    return _edge_value(rng)


def mutate_json(rng: random.Random, obj: dict[str, Any], types: Sequence[str], keys: Sequence[str]) -> str | bytes:
    """A structural mutation of a message object, serialized (sometimes then mutated as bytes)."""
    out: Any = dict(obj)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        kind = rng.randrange(9)
        if not isinstance(out, dict):
            break
        if kind <= 2 and out:  # replace a value (the type included)
            key = rng.choice(list(out))
            out[key] = _mutate_value(rng, out[key], keys)
        elif kind == 3 and out:  # drop a field
            del out[rng.choice(list(out))]
        elif kind == 4:  # add a field (known or unknown name)
            name = rng.choice([*keys, "x", "", "\ud800", "type ", "__proto__"])
            out[name] = _edge_value(rng)
        elif kind == 5 and len(out) >= 2:  # swap two fields' values
            a, b = rng.sample(list(out), 2)
            out[a], out[b] = out[b], out[a]
        elif kind == 6:  # another message type with these fields
            out["type"] = rng.choice([*types, "Join", "", "pong", "hello\n"])
        elif kind == 7:  # the object wrapped or replaced
            out = rng.choice(([out], "text", 1, None, [], {"type": out}))
        else:  # deep nesting in a field
            depth = rng.choice((10, 1000, 100_000))
            key = rng.choice(list(out) or ["type"])
            text = json.dumps(out)
            return text[:-1] + f', "{key}": ' + "[" * depth + "]" * depth + "}" if out else text
    ensure_ascii = rng.random() < 0.5  # False: lone surrogates stay in the str itself
    try:
        text = json.dumps(out, ensure_ascii=ensure_ascii, allow_nan=True)
    except ValueError:  # an int over Python's digit limit cannot even be written
        text = json.dumps({k: v for k, v in out.items() if not isinstance(v, int)} if isinstance(out, dict) else None)
    text = text.replace(json.dumps(HUGE_NUMBER), "9" * 5000)
    roll = rng.random()
    if roll < 0.15:
        return mutate_bytes(rng, text.encode("utf-8", "surrogatepass")).decode("utf-8", "replace")
    if roll < 0.25:
        return mutate_bytes(rng, text.encode("utf-8", "surrogatepass"))  # bytes: maybe invalid UTF-8
    if roll < 0.3:
        return text.encode("utf-8", "surrogatepass")
    return text


# -- targets ---------------------------------------------------------------------------------------
@dataclass
class Target:
    """One parser: ``make(rng)`` builds an input, ``parse(data)`` feeds it; ``documented`` is what it may raise."""

    name: str
    make: Callable[[random.Random], Any]
    parse: Callable[[Any], object]
    documented: tuple[type[BaseException], ...]
    share: float  # of the total inputs


@dataclass
class Finding:
    kind: str  # "exception" or "hang"
    error: str  # exception type and message, or the time
    where: str  # file:line the exception came from
    example: str  # the input, repr'd (cut)
    count: int = 1


@dataclass
class TargetResult:
    name: str
    inputs: int = 0
    accepted: int = 0
    rejected: int = 0  # a documented exception
    max_ms: float = 0.0
    total_s: float = 0.0
    retimed: int = 0  # inputs over HANG_S once, timed again
    slowest_again_ms: float | None = None  # the slowest input timed again after the run (best of 3): max_ms without the noise
    findings: list[Finding] = field(default_factory=list)

    @property
    def undocumented(self) -> int:
        return sum(f.count for f in self.findings if f.kind == "exception")

    @property
    def hangs(self) -> int:
        return sum(f.count for f in self.findings if f.kind == "hang")


def _where(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    if not tb:
        return "?"
    frame = tb[-1]
    return f"{Path(frame.filename).name}:{frame.lineno}"


def _record(result: TargetResult, kind: str, error: str, where: str, data: Any) -> None:
    for f in result.findings:
        if f.kind == kind and f.where == where and f.error.split(":")[0] == error.split(":")[0]:
            f.count += 1
            return
    if len(result.findings) < MAX_FINDINGS_KEPT:
        result.findings.append(Finding(kind, error[:300], where, repr(data)[:400]))
    else:
        result.findings[-1].count += 1


def run_target(target: Target, count: int, seed: int) -> TargetResult:
    """Feed ``count`` inputs of ``target``; every exception outside ``documented`` and every hang is a finding."""
    rng = random.Random(seed)
    result = TargetResult(target.name)
    with warnings.catch_warnings():  # PIL warns about corrupt EXIF and the like: expected here, not findings
        warnings.simplefilter("ignore")
        slowest = _feed(target, count, rng, result)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            try:
                target.parse(slowest)
            except Exception:  # noqa: BLE001 - classified during the run
                pass
            times.append(time.perf_counter() - start)
        result.slowest_again_ms = 1000 * min(times)
    faulthandler.cancel_dump_traceback_later()
    result.inputs = count
    return result


def _feed(target: Target, count: int, rng: random.Random, result: TargetResult) -> Any:
    """Run the inputs; the slowest one is returned (to be timed again)."""
    clock = time.perf_counter
    slowest: Any = None
    documented = target.documented
    for i in range(count):
        if i % 100 == 0:  # re-armed every 100 inputs (cheap enough): a hang ends the run with its traceback
            faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
        data = target.make(rng)
        start = clock()
        try:
            target.parse(data)
            result.accepted += 1
        except documented:
            result.rejected += 1
        except Exception as exc:  # noqa: BLE001 - the point: anything else is a finding
            _record(result, "exception", f"{type(exc).__name__}: {exc}", _where(exc), data)
        elapsed = clock() - start
        if elapsed > HANG_S:  # noisy on a shared machine: time it again before calling it a hang
            result.retimed += 1
            again = clock()
            try:
                target.parse(data)
            except Exception:  # noqa: BLE001 - already classified above
                pass
            elapsed = min(elapsed, clock() - again)
            if elapsed > HANG_S:
                _record(result, "hang", f"{elapsed:.2f} s", "", data)
        result.total_s += elapsed
        if elapsed * 1000 > result.max_ms:
            result.max_ms = elapsed * 1000
            slowest = data
    return slowest


# -- corpora ---------------------------------------------------------------------------------------
def motion_corpus() -> list[bytes]:
    """Motion packets of a synthetic 20-keypoint trace: KEY and DELTA, 1 and 3 frames a packet, a K change."""
    from codec.prediction import MotionDepacketizer, MotionPacketizer
    from codec.synthetic_trace import synthetic_trace, trace_timestamps_ms

    trace = synthetic_trace(40, 25.0, num_keypoints=20, seed=9)
    stamps = trace_timestamps_ms(40, 25.0)
    packets = []
    for fpp in (1, 3):
        sender = MotionPacketizer(4, 2, fpp, key_interval_frames=0)
        receiver = MotionDepacketizer()
        for i, (m, t) in enumerate(zip(trace, stamps)):
            if i == 20:
                sender.set_num_keypoints(7)
            packet = sender.push(m, t)
            if packet:
                packets.append(packet)
                receiver.receive(packet)
                feedback = receiver.feedback()
                if feedback is not None:
                    sender.on_feedback(feedback)
    return packets


class _MotionSink:
    """A depacketizer primed with the corpus, reset every ``RESET`` inputs so it stays near the seeds' state."""

    RESET = 2000

    def __init__(self, corpus: list[bytes]) -> None:
        self.corpus = corpus
        self.fed = 0
        self._fresh()

    def _fresh(self) -> None:
        from codec.prediction import MotionDepacketizer

        self.depacketizer = MotionDepacketizer()
        for packet in self.corpus:
            self.depacketizer.receive(packet)

    def receive(self, data: bytes) -> object:
        self.fed += 1
        if self.fed % self.RESET == 0:
            self._fresh()
        return self.depacketizer.receive(data)


class _BodyDecoder:
    """Header + body decoding against the corpus' frames, past the depacketizer's duplicate check."""

    def __init__(self, corpus: list[bytes]) -> None:
        from codec.bitstream import CodedFrame, decode_packet, unpack_header

        self._decode, self._header = decode_packet, unpack_header
        self.frames: dict[int, CodedFrame] = {}
        for packet in corpus:
            header = unpack_header(packet)
            reference = None if header.key else self.frames[header.reference_seq]  # type: ignore[index]
            for frame in decode_packet(packet, header, reference):
                self.frames[frame.seq] = frame

    def __call__(self, data: bytes) -> object:
        header = self._header(data)
        reference = None if header.key else self.frames.get(header.reference_seq)  # type: ignore[arg-type]
        if not header.key and reference is None:
            return None
        return self._decode(data, header, reference)


def _png(width: int, height: int, mode: str = "RGB", **save: Any) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(width * 31 + height)
    bands = {"RGB": 3, "RGBA": 4, "L": 1, "P": 1, "I;16": 1, "LA": 2, "CMYK": 4}[mode]
    if mode == "I;16":
        img = Image.fromarray((rng.random((height, width)) * 65535).astype(np.uint16))
    else:
        arr = (rng.random((height, width, bands)) * 255).astype(np.uint8)
        img = Image.fromarray(arr[:, :, 0] if bands == 1 else arr, "L" if mode == "P" else None if mode != "CMYK" else "CMYK")
        if mode == "P":
            img = img.convert("P")
    out = io.BytesIO()
    img.save(out, **save)
    return out.getvalue()


def image_corpus() -> list[bytes]:
    """Small images in every accepted format and mode, plus refused formats (GIF, BMP, TIFF)."""
    from PIL import Image

    seeds = [
        _png(64, 64, format="PNG"), _png(64, 96, "RGBA", format="PNG"), _png(80, 64, "I;16", format="PNG"),
        _png(64, 64, "P", format="PNG", transparency=0), _png(64, 64, "LA", format="PNG"),
        _png(64, 72, format="JPEG", quality=80), _png(64, 64, "L", format="JPEG"), _png(64, 64, "CMYK", format="JPEG"),
        _png(64, 64, format="WEBP", quality=60), _png(64, 64, "RGBA", format="WEBP", lossless=True),
        _png(64, 64, format="GIF"), _png(64, 64, format="BMP"), _png(64, 64, format="TIFF"),
    ]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: EXIF orientation applied on read
    seeds.append(_png(64, 96, format="JPEG", exif=exif.tobytes()))
    return seeds


def _png_with_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height``, with its CRC fixed so the header parses."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return data
    body = struct.pack(">II", width, height) + data[24:29]
    return data[:16] + body + struct.pack(">I", zlib.crc32(b"IHDR" + body)) + data[33:]


def _jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose first SOF marker claims ``width`` x ``height``."""
    i = 2
    while i + 9 < len(data) and data[i] == 0xFF:
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            return data[: i + 5] + struct.pack(">HH", height & 0xFFFF, width & 0xFFFF) + data[i + 9 :]
        i += 2 + length
    return data


SIZES = (0, 1, 63, 64, 65535, 30_000, 100_000, 2**31 - 1, 2**32 - 1)


def _make_image(rng: random.Random, corpus: list[bytes]) -> bytes:
    seed = rng.choice(corpus)
    if rng.random() < 0.2:  # a header claiming a huge, tiny or zero size (decompression bombs, 1-px images)
        w, h = rng.choice(SIZES), rng.choice(SIZES)
        seed = _png_with_size(seed, w, h) if seed[:4] == b"\x89PNG" else _jpeg_with_size(seed, w, h)
        return seed if rng.random() < 0.5 else mutate_bytes(rng, seed, corpus)
    return mutate_bytes_more(rng, seed, corpus)


def signaling_client_seeds() -> list[dict[str, Any]]:
    sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
    return [
        {"type": "join", "room": "demo", "role": "sender"},
        {"type": "join", "room": "fuzz_1", "role": "viewer", "token": "kpt1.fuzz_1.viewer.1999999999.o.AAAA"},
        {"type": "join", "room": "r-2", "role": "receiver", "token": "pw"},
        {"type": "leave"},
        {"type": "ping"},
        {"type": "ping", "nonce": 12345},
        {"type": "offer", "to": "abcd1234", "sdp": sdp},
        {"type": "answer", "to": "abcd1234", "sdp": sdp},
        {"type": "candidate", "to": "abcd1234", "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
         "sdpMid": "0", "sdpMLineIndex": 0},
        {"type": "candidate", "to": "abcd1234", "candidate": None},
    ]


def signaling_server_seeds() -> list[dict[str, Any]]:
    return [
        {"type": "joined", "peer_id": "abcd1234", "room": "demo", "role": "receiver",
         "peers": [{"peer_id": "ef567890", "role": "sender"}, {"peer_id": "aa", "role": "viewer"}]},
        {"type": "peer_joined", "peer_id": "ef567890", "role": "viewer"},
        {"type": "peer_left", "peer_id": "ef567890", "role": "sender", "reason": "disconnected"},
        {"type": "pong", "nonce": 7},
        {"type": "error", "code": "bad_message", "message": "x", "ref": "offer"},
        {"type": "offer", "from": "ef567890", "sdp": "v=0\r\n"},
        {"type": "answer", "from": "ef567890", "sdp": "v=0\r\n"},
        {"type": "candidate", "from": "ef567890", "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0",
         "sdpMLineIndex": 0},
        {"type": "ice_servers", "servers": [{"urls": ["turn:127.0.0.1:3478"], "username": "1:u", "credential": "c"}],
         "expires": 1999999999},
    ]


def control_seeds() -> list[dict[str, Any]]:
    from signaling import control as c

    image = _png(64, 64, format="PNG")
    messages: list[Any] = [
        c.Hello(c.PROTOCOL_VERSION, 7, 25.0, "ab" * 32, "kpcall-test", "1", 14346),
        c.ReferenceStatus("cd" * 32, False), c.ReferenceReady("cd" * 32, True), c.Ping(12.5), c.Pong(1e12),
        c.DelayReport(3.5, 80.0, 2, 1), c.RateDecision(10, "default", 2, None, 12.5, "loss", 40),
        c.RateDecision(0, "coarse", 1, 20.0, 8.0, "start"), c.Capabilities(1, 64), c.MotionTransport("rtp+audio"),
        c.EnhancementKey(65535), c.Command(keypoints="auto", frames_per_packet=2, max_kbps=0.0, view="yaw=10,pitch=-5,roll=0"),
        c.Command(avatar="reset"), *c.avatar_chunks(image, 3),
        c.Stats("receiver", {"fps": 25.0, "state": "ok", "late": 3, "none": None}), c.Status("receiving", "fine"),
        c.Ack("view", "done"), c.ErrorReply("bad_message", "x"),
    ]
    return [json.loads(c.encode_control(msg)) for msg in messages]


def _json_maker(seeds: list[dict[str, Any]]) -> Callable[[random.Random], str | bytes]:
    types = sorted({str(s["type"]) for s in seeds})
    keys = sorted({k for s in seeds for k in s})
    texts = [json.dumps(s).encode() for s in seeds]

    def make(rng: random.Random) -> str | bytes:
        if rng.random() < 0.08:  # byte-level only (the JSON text itself broken)
            data = mutate_bytes_more(rng, rng.choice(texts), texts)
            return data if rng.random() < 0.5 else data.decode("utf-8", "replace")
        return mutate_json(rng, rng.choice(seeds), types, keys)

    return make


def _bytes_maker(corpus: list[bytes]) -> Callable[[random.Random], bytes]:
    def make(rng: random.Random) -> bytes:
        return mutate_bytes_more(rng, rng.choice(corpus), corpus)

    return make


def _control_target() -> Callable[[Any], object]:
    from codec.model.view import ViewControl
    from signaling import control as c

    assembler = c.AvatarAssembler()

    def parse(data: Any) -> object:
        msg = c.decode_control(data)
        if isinstance(msg, c.AvatarChunk):
            return assembler.add(msg)
        if isinstance(msg, c.Command) and msg.view is not None:
            try:
                ViewControl.parse(msg.view)  # what the receiver does with it (ValueError: answered with an error)
            except ValueError as exc:
                raise c.ControlError(str(exc)) from None
        return msg

    return parse


def _reference_corpus() -> tuple[list[bytes], list[bytes]]:
    from codec.reference_message import ReferenceMessage, chunk_message, encode_portrait, pack_reference_message

    rng = np.random.default_rng(0)
    messages, chunks = [], []
    for fmt, (h, w) in (("png", (64, 64)), ("jpeg", (96, 80)), ("webp", (64, 64))):
        image = encode_portrait((rng.random((h, w, 3)) * 255).astype(np.uint8), image_format=fmt)
        message = pack_reference_message(ReferenceMessage.from_image(image, "kpcall-test", "1"))
        messages.append(message)
        chunks += chunk_message(message, max_chunk_bytes=int(rng.choice([200, 1000, 4000])))
    return messages, chunks


MSGPACK_EDGE_VALUES: tuple[Any, ...] = (0, -1, 2**64 - 1, -(2**63), 1e308, float("nan"), "", "x" * 200, b"", None, True, [], {}, "\ud800")


def _reference_message_maker(seeds: list[bytes]) -> Callable[[random.Random], bytes]:
    """Byte mutations of whole messages, or one field replaced in a re-packed message; a mutated image gets its
    SHA-256 recomputed (and, half the time, the header's size copied), so that it reaches the image decoder."""
    import hashlib

    import msgpack

    from codec.reference_message import probe_image

    parsed = [msgpack.unpackb(s, raw=False) for s in seeds]
    images = [p[8] for p in parsed]

    def make(rng: random.Random) -> bytes:
        if rng.random() < 0.4:
            return mutate_bytes_more(rng, rng.choice(seeds), seeds)
        items = list(rng.choice(parsed))
        if rng.random() < 0.7:  # the image mutated (or a header size rewritten), hash fixed
            image = _make_image(rng, images)
            items[8], items[4] = image, hashlib.sha256(image).digest()
            if rng.random() < 0.5:
                try:
                    items[5], items[6], items[7] = probe_image(image)
                except Exception:  # noqa: BLE001 - not an image: the sizes stay those of the seed
                    pass
        else:
            i = rng.randrange(9)
            items[i] = rng.choice(MSGPACK_EDGE_VALUES)
        try:
            return msgpack.packb(items, use_bin_type=True)
        except (ValueError, OverflowError, TypeError):
            return msgpack.packb(["kpref", 1], use_bin_type=True)

    return make


def _reference_message_target(data: bytes) -> object:
    from codec.reference_message import decode_portrait, unpack_reference_message

    return decode_portrait(unpack_reference_message(data))


def _rtp_corpus(motion: list[bytes]) -> list[bytes]:
    from aiortc.rtp import RtpPacket

    from signaling.audio_motion import pack_riding

    out = []
    for i, payload in enumerate(motion[:30]):
        out.append(RtpPacket(payload_type=96, marker=1, sequence_number=(65530 + i) & 0xFFFF, timestamp=i * 3600, ssrc=0x1234,
                             payload=payload).serialize())
        riding = pack_riding([payload, *motion[i + 1 : i + 1 + i % 3]], b"\xfc\xff\xfe" + bytes(i))
        out.append(RtpPacket(payload_type=111, marker=1, sequence_number=i, timestamp=i * 960, ssrc=0x5678, payload=riding).serialize())
    out.append(RtpPacket(payload_type=111, marker=0, sequence_number=99, timestamp=0, ssrc=0x5678, payload=b"\xfc\x00").serialize())
    return out


class _RtpReceiver:
    """aiortc's RTP parse, then the motion channel's and the audio channel's packet handlers (as the link's RTP
    router calls them), their messages into a depacketizer."""

    def __init__(self, motion: list[bytes]) -> None:
        from aiortc.rtp import RtpPacket

        from signaling.rtp_audio import AudioRtpChannel
        from signaling.rtp_motion import MotionRtpChannel

        self._parse = RtpPacket.parse
        self.sink = _MotionSink(motion)
        self.errors: list[str] = []

        def transceiver() -> Any:
            return SimpleNamespace(receiver=SimpleNamespace(), _codecs=[])

        self.motion = MotionRtpChannel(transceiver(), self._message)  # type: ignore[arg-type]
        self.motion.payload_type = 96
        self.audio = AudioRtpChannel(transceiver(), lambda packet: None)  # type: ignore[arg-type]
        self.audio.payload_type = 111
        self.audio.on_motion = self._message
        self.audio.on_bad_motion = self.errors.append

    def _message(self, payload: bytes) -> None:
        from codec.exceptions import BitstreamError

        try:
            self.sink.receive(payload)
        except BitstreamError:
            pass  # the receiver counts it; what is fuzzed here is the RTP layer and the riding split

    def __call__(self, data: bytes) -> object:
        packet = self._parse(data)
        channel = self.audio if packet.payload_type == 111 else self.motion
        coroutine = channel._on_rtp(packet)  # noqa: SLF001 - the handler aiortc's router would await
        try:
            coroutine.send(None)  # no await inside: it runs to completion at once
        except StopIteration:
            return None
        coroutine.close()
        raise RuntimeError("the RTP packet handler awaited something")


def _riding_target(motion: list[bytes]) -> Callable[[bytes], object]:
    from codec.exceptions import BitstreamError
    from signaling.audio_motion import unpack_riding

    sink = _MotionSink(motion)

    def parse(data: bytes) -> object:
        riding = unpack_riding(data)
        for message in riding.messages:
            try:
                sink.receive(message)
            except BitstreamError:
                pass
        return riding

    return parse


def _riding_corpus(motion: list[bytes]) -> list[bytes]:
    from signaling.audio_motion import pack_riding

    return [pack_riding(motion[i : i + 1 + i % 4], b"\xfc" + bytes(i % 7 + 1)) for i in range(len(motion) - 4)]


def _bundle_target(motion: list[bytes]) -> Callable[[bytes], object]:
    from codec.enhancement.bundle import is_bundle, unpack_bundle

    sink = _MotionSink(motion)

    def parse(data: bytes) -> object:  # as the receiver reads a motion message
        if is_bundle(data):
            return sink.receive(unpack_bundle(data).motion_packet)
        return sink.receive(data)

    return parse


def _bundle_corpus(motion: list[bytes]) -> list[bytes]:
    from codec.enhancement.bundle import pack_bundle

    rng = random.Random(4)
    return [pack_bundle(p, rng.randbytes(rng.choice((1, 30, 300))), key=i % 5 == 0) for i, p in enumerate(motion)] + motion[:5]


def _feedback_corpus() -> list[bytes]:
    import msgpack

    from codec.bitstream import Feedback, pack_feedback

    return [
        pack_feedback(Feedback(3, 100, 0xFFFF, None, 500, 3, 1)), pack_feedback(Feedback(0, None, 0, 7)),
        msgpack.packb(["kpfb", 1, 1, 2, 3, 4, 5, 6, 7]),
    ]


def build_targets() -> list[Target]:
    """Every target with its seeds; shares sum to 1."""
    from codec.bitstream import unpack_feedback
    from codec.exceptions import BitstreamError
    from codec.image_input import PHOTO_LIMITS, ImageInputError, ImageLimits, read_image
    from codec.reference_message import ChunkReassembler
    from signaling import messages as m
    from signaling.audio_motion import AudioMotionError
    from signaling.control import ControlError

    motion = motion_corpus()
    ref_messages, ref_chunks = _reference_corpus()
    images = image_corpus()
    reassembler = ChunkReassembler(max_message_bytes=1 << 17)
    avatar_limits = ImageLimits(max_pixels=4096 * 4096)  # receiver.session.MAX_AVATAR_PIXELS

    def read_either(data: bytes) -> object:
        return read_image(data, "the fuzzed image", PHOTO_LIMITS if len(data) % 2 else avatar_limits)

    return [
        Target("signaling_client", _json_maker(signaling_client_seeds()), m.decode_client_message, (m.ProtocolError,), 0.13),
        Target("signaling_server", _json_maker(signaling_server_seeds()), m.decode_server_message, (m.ProtocolError,), 0.09),
        Target("control", _json_maker(control_seeds()), _control_target(), (ControlError,), 0.14),
        Target("motion_packet", _bytes_maker(motion), _MotionSink(motion).receive, (BitstreamError,), 0.12),
        Target("motion_body", _bytes_maker(motion), _BodyDecoder(motion), (BitstreamError,), 0.10),
        Target("frame_bundle", _bytes_maker(_bundle_corpus(motion)), _bundle_target(motion), (BitstreamError,), 0.05),
        Target("feedback", _bytes_maker(_feedback_corpus()), unpack_feedback, (BitstreamError,), 0.05),
        Target("audio_motion", _bytes_maker(_riding_corpus(motion)), _riding_target(motion), (AudioMotionError,), 0.07),
        Target("rtp_motion", _bytes_maker(_rtp_corpus(motion)), _RtpReceiver(motion), (ValueError,), 0.07),
        Target("reference_chunk", _bytes_maker(ref_chunks), reassembler.add, (BitstreamError,), 0.08),
        Target("reference_message", _reference_message_maker(ref_messages), _reference_message_target, (BitstreamError,), 0.02),
        Target("images", lambda rng: _make_image(rng, images), read_either, (ImageInputError,), 0.06),
    ]


LOOPBACK_SHARE = 0.02  # of the total: messages sent to a real server (each answered before the next)


# -- a real server over loopback -------------------------------------------------------------------
class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()[:300]}")


async def _loopback(count: int, seed: int) -> TargetResult:
    import aiohttp

    from signaling import messages as m
    from signaling.limits import ClientLimits
    from signaling.server import ServerConfig, start_server

    rng = random.Random(seed)
    result = TargetResult("signaling_loopback")
    errors = _ErrorLog()
    logging.getLogger().addHandler(errors)
    quiet = logging.getLogger("signaling")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # one INFO line per rejected message otherwise
    limits = ClientLimits(max_connections_per_ip=64, max_rooms_per_ip=64, joins_per_s=1e6, join_burst=1e6,
                          failed_joins_per_s=1e6, failed_join_burst=1e6)
    server = await start_server(ServerConfig(port=0, static_dir=None, rate_per_s=1e6, rate_burst=1e6, limits=limits,
                                             room_tokens={"r-2": "pw"}))
    url = f"http://127.0.0.1:{server.port}/ws"
    nonce = 0
    try:
        async with aiohttp.ClientSession() as http:
            victim = await http.ws_connect(url)
            await victim.send_str(json.dumps({"type": "join", "room": "demo", "role": "receiver"}))
            joined = json.loads((await victim.receive(timeout=5)).data)
            victim_id = joined["peer_id"]
            relayed = 0

            async def drain() -> None:
                nonlocal relayed
                async for frame in victim:
                    if frame.type == aiohttp.WSMsgType.TEXT and '"from"' in frame.data:
                        relayed += 1

            drainer = asyncio.ensure_future(drain())
            seeds = signaling_client_seeds()
            for s in seeds:  # address the victim, so that what passes is really relayed
                if "to" in s:
                    s["to"] = victim_id
            seeds.append({"type": "join", "room": "demo", "role": "sender"})
            make = _json_maker(seeds)
            ws = None
            clock = time.perf_counter
            for _ in range(count):
                if ws is None or ws.closed:  # (re)connect and join the victim's room as its sender
                    ws = await http.ws_connect(url)
                    await ws.send_str(json.dumps({"type": "join", "room": "demo", "role": "sender"}))
                    while json.loads((await ws.receive(timeout=WATCHDOG_S)).data)["type"] not in ("joined", "error"):
                        pass
                data = make(rng)
                nonce += 1
                refused = False
                start = clock()
                try:
                    if isinstance(data, bytes) and rng.random() < 0.5:
                        await ws.send_bytes(data)
                    else:
                        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
                        # a lone surrogate cannot go into a text frame; as the escape \ud800 (what a hostile client sends)
                        await ws.send_str(text.encode("utf-8", "backslashreplace").decode("utf-8"))
                    await ws.send_str(json.dumps({"type": "ping", "nonce": nonce}))
                    while True:  # read up to our pong: every reply in between must be a valid server message
                        frame = await ws.receive(timeout=WATCHDOG_S)
                        if frame.type != aiohttp.WSMsgType.TEXT:
                            if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                                result.rejected += 1  # closed for too many rejections (1008) or an oversize frame
                                break
                            raise RuntimeError(f"unexpected WebSocket frame {frame.type}")
                        reply = m.decode_server_message(frame.data)
                        refused = refused or isinstance(reply, m.Error)
                        if isinstance(reply, m.Pong) and reply.nonce == nonce:
                            if refused:  # answered with an error: the documented way to reject
                                result.rejected += 1
                            else:
                                result.accepted += 1
                            break
                except (ConnectionError, aiohttp.ClientError):
                    result.rejected += 1
                    ws = None
                except Exception as exc:  # noqa: BLE001 - a finding
                    _record(result, "exception", f"{type(exc).__name__}: {exc}", _where(exc), data)
                    ws = None
                elapsed = clock() - start
                if elapsed > HANG_S:
                    _record(result, "hang", f"{elapsed:.2f} s (loopback round trip, not retimed)", "", data)
                result.total_s += elapsed
                result.max_ms = max(result.max_ms, elapsed * 1000)
                result.inputs += 1
            # the server still serves: a fresh client joins and pings
            probe = await http.ws_connect(url)
            await probe.send_str(json.dumps({"type": "ping", "nonce": 0}))
            if json.loads((await probe.receive(timeout=5)).data).get("type") != "pong":
                _record(result, "exception", "the server stopped answering", "", None)
            await probe.close()
            if ws is not None:
                await ws.close()
            await victim.close()
            drainer.cancel()
            logger.info("loopback: %d messages relayed to the victim", relayed)
    finally:
        await server.close()
        logging.getLogger().removeHandler(errors)
        quiet.setLevel(level)
    for line in errors.records:
        _record(result, "exception", f"server logged an error: {line}", "server log", None)
    return result


def run_loopback(count: int, seed: int) -> TargetResult:
    return asyncio.run(_loopback(count, seed))


# -- the whole run ---------------------------------------------------------------------------------
def run_all(total: int, seed: int = 0, only: Sequence[str] | None = None) -> list[TargetResult]:
    """``total`` inputs split over the targets by their shares (only those named in ``only`` when given)."""
    targets = build_targets()
    names = {t.name for t in targets} | {"signaling_loopback"}
    if only:
        unknown = set(only) - names
        if unknown:
            raise ValueError(f"unknown fuzz targets {sorted(unknown)}: pick from {sorted(names)}")
    chosen = [t for t in targets if not only or t.name in only]
    use_loopback = not only or "signaling_loopback" in only
    shares = sum(t.share for t in chosen) + (LOOPBACK_SHARE if use_loopback else 0)
    results = []
    for i, target in enumerate(chosen):
        count = math.ceil(total * target.share / shares)  # at least ``total`` in all
        began = time.monotonic()
        results.append(run_target(target, count, seed * 1000 + i))
        logger.info("%s: %d inputs in %.0f s", target.name, count, time.monotonic() - began)
    if use_loopback:
        results.append(run_loopback(math.ceil(total * LOOPBACK_SHARE / shares), seed * 1000 + 999))
    return results


def report(results: Sequence[TargetResult]) -> str:
    head = f"{'target':<20} {'inputs':>9} {'accepted':>9} {'rejected':>9} {'max ms':>8} {'again ms':>8} {'mean µs':>8} {'undoc':>6} {'hangs':>6}"
    lines = [head]
    for r in results:
        mean_us = 1e6 * r.total_s / max(1, r.inputs)
        again = "-" if r.slowest_again_ms is None else f"{r.slowest_again_ms:.1f}"  # the loopback's round trips: not re-run
        lines.append(f"{r.name:<20} {r.inputs:>9} {r.accepted:>9} {r.rejected:>9} {r.max_ms:>8.1f} {again:>8} "
                     f"{mean_us:>8.0f} {r.undocumented:>6} {r.hangs:>6}")
    lines.append(f"{'total':<20} {sum(r.inputs for r in results):>9} {'':>9} {'':>9} {max(r.max_ms for r in results):>8.1f} "
                 f"{max(r.slowest_again_ms or 0.0 for r in results):>8.1f} {'':>8} {sum(r.undocumented for r in results):>6} "
                 f"{sum(r.hangs for r in results):>6}")
    lines.append("max ms: the slowest input as it ran (noisy on a shared machine); again ms: that input timed again, best of 3")
    for r in results:
        for f in r.findings:
            lines.append(f"  {r.name} {f.kind} x{f.count} at {f.where}: {f.error}\n    input {f.example}")
    return "\n".join(lines)


def add_fuzz_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("fuzz", help="fuzz every parser (signaling, control, motion, RTP, references, images)")
    p.add_argument("--total", type=int, default=20_000, help="inputs over all targets (issue 22's goal: 1000000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (a run is reproducible from it)")
    p.add_argument("--only", default="", help="comma-separated target names (default: all)")
    p.add_argument("--json", type=Path, default=None, help="write the per-target figures here")


def run_fuzz_from_args(args: argparse.Namespace) -> int:
    began = time.monotonic()
    for name in ("codec", "signaling"):  # -v: this module's progress, not a line per rejected input
        logging.getLogger(name).setLevel(logging.WARNING)
    only = [s for s in args.only.split(",") if s] or None
    results = run_all(args.total, args.seed, only)
    print(report(results))
    print(f"{sum(r.inputs for r in results)} inputs in {time.monotonic() - began:.0f} s")
    if args.json is not None:
        rows = [{**asdict(r), "undocumented": r.undocumented, "hangs": r.hangs} for r in results]
        args.json.write_text(json.dumps({"total": args.total, "seed": args.seed, "hang_s": HANG_S, "targets": rows}, indent=1))
    return 1 if any(r.findings for r in results) else 0


if __name__ == "__main__":  # python -m bench.fuzz works too
    parser = argparse.ArgumentParser()
    add_fuzz_parser(parser.add_subparsers(dest="command", required=True))
    sys.exit(run_fuzz_from_args(parser.parse_args(["fuzz", *sys.argv[1:]])))
