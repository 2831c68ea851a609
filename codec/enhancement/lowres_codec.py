"""The enhancement layer's codec: the face crop area-downscaled to E×E and coded by SVT-AV1 as a low-delay stream.

Sender::

    encoder = LowResEncoder(size=64, qp=55, fps=25.0)
    data = encoder.encode(face_rgb)          # (256, 256, 3) uint8 in, this frame's bytes out at once
    encoder.request_key()                    # on a receiver's request: the next frame is a key frame

Receiver::

    decoder = LowResDecoder(size=64)
    picture = decoder.decode(data, seq)      # (64, 64, 3) uint8, or None while waiting for a key frame

Encoder settings (``svt_av1_options``): libsvtav1 preset 4, constant quality ``crf = qp`` (1..63),
``svtav1-params pred-struct=1:lookahead=0`` (low-delay prediction, no lookahead), YUV 4:2:0, one thread,
no periodic key frames. Measured with SVT-AV1 through PyAV 18: exactly one packet per input frame,
returned by the same ``encode`` call (nothing is held back for the end of the stream); a frame handed
over with picture type I comes out as a key frame with a sequence header, which a fresh decoder can
start from. ``encode`` checks both on every frame.

Why preset 4 and not the real-time mode (``rtc=1``, which clamps the preset to 7 or faster): at 64² a
picture is cheap to code, and the slower preset codes it with fewer bits. Validation people (7 clips,
100 frames, the shipped model rendering with the pictures, 2026-12-07): at equal face PSNR the pictures
need 0.83× the bits of preset 10 with rtc=1 (BD over the ladder's qp 40–63 at every frame and every 3rd,
26.4–29.2 dB), for 1.5–2.6 ms a picture on one core of the 2-core Intel Xeon (preset 10 rtc: 0.6–0.9 ms).
Preset 3 gave the same BD (0.82×) for 2.7–4.2 ms; rtc=1 at preset 7: 0.89× on the picture's own PSNR.

Payload: one AV1 temporal unit in the low-overhead bitstream format (OBUs with size fields), less its
temporal delimiter OBU (2 bytes a frame, 0.4 kbps at 25 fps: RTP does not carry it either and dav1d
does not need it). A key frame's payload holds a sequence header OBU and a KEY_FRAME frame
(``is_key_frame``).

Receiver rule (``LowResDecoder.decode(data, seq)``): AV1 inter frames are decodable only in order,
after the key frame that starts their chain. ``seq`` is the frame's sequence number on the
enhancement stream, one more per encoded frame (the caller unwraps any wire-format wrap-around):

- a gap (``seq`` more than one past the last seen) means a lost frame: the decoder waits for the next
  key frame and returns None for every frame until then (the caller asks the sender for a key frame);
- a stale or repeated ``seq`` (not past the last seen) is ignored: None, state unchanged;
- a packet whose OBU framing is broken, or that libdav1d rejects, or that decodes to the wrong size
  raises ``EnhancementDecodeError`` and the decoder then waits for a key frame as after a loss;
- a packet that parses and decodes but whose coded bits are damaged gives a damaged picture: only the
  transport (SRTP/DTLS authentication) can catch that.

Without ``seq`` the caller guarantees order and no loss (training-data precomputation).

SVT-AV1, run as root, switches the thread that opens it, and its own workers, to real-time SCHED_FIFO
priority 99; the call that opens an encoder (the first frame after ``__init__``, ``set_qp`` or
``close``) is wrapped in ``codec.thread_scheduling.scheduling_kept``, which puts them back to normal
scheduling; later frames create no threads, so they skip the per-thread check.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from types import TracebackType
from typing import cast

import av
import cv2
import numpy as np
from av.video.codeccontext import VideoCodecContext

from codec.exceptions import BitstreamError
from codec.thread_scheduling import scheduling_kept

logger = logging.getLogger(__name__)

DEFAULT_SIZE = 64  # E: the coded picture is E×E pixels (preset cpu-enh64)
DEFAULT_QP = 55
DEFAULT_FPS = 25.0
SVT_AV1_PRESET = 4
SVT_AV1_PARAMS = "pred-struct=1:lookahead=0"  # low-delay prediction, no lookahead
MIN_QP, MAX_QP = 1, 63  # SVT-AV1's crf range
MIN_SIZE = 8
ENCODER, DECODER = "libsvtav1", "libdav1d"
NO_PERIODIC_KEYFRAMES = 1 << 30  # GOP length: key frames come only at the start and on request
CODEC_THREADS = 1

# AV1 OBU types (AV1 spec 5.3.1, 6.2.2)
OBU_SEQUENCE_HEADER, OBU_TEMPORAL_DELIMITER, OBU_FRAME_HEADER, OBU_FRAME, OBU_PADDING = 1, 2, 3, 6, 15
_OBU_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 15})  # 0 and 9..14 are reserved: never in our stream
_KEY_FRAME = 0  # frame_type of a KEY_FRAME


def svt_av1_options(qp: int, preset: int = SVT_AV1_PRESET) -> dict[str, str]:
    """The libsvtav1 options of the enhancement stream (see the module docstring)."""
    return {"preset": str(preset), "crf": str(qp), "svtav1-params": SVT_AV1_PARAMS}


class EnhancementDecodeError(BitstreamError):
    """An enhancement-layer packet could not be decoded (broken OBU framing, rejected by libdav1d, or
    a picture of the wrong size). The decoder that raised it waits for the next key frame: the caller
    should ask the sender for one (``LowResEncoder.request_key``)."""


def codecs_available() -> bool:
    """True when this PyAV build has the layer's encoder (SVT-AV1) and decoder (libdav1d)."""
    try:
        av.codec.Codec(ENCODER, "w")
        av.codec.Codec(DECODER, "r")
    except (av.error.FFmpegError, ValueError):  # type: ignore[attr-defined]
        return False
    return True


def _check_face(face_rgb: object, min_size: int, name: str = "face_rgb") -> np.ndarray:
    if not isinstance(face_rgb, np.ndarray):
        raise ValueError(f"{name} must be a numpy (S, S, 3) uint8 RGB array, got {type(face_rgb).__name__}")
    if face_rgb.ndim != 3 or face_rgb.shape[2] != 3 or face_rgb.shape[0] != face_rgb.shape[1] or face_rgb.dtype != np.uint8:
        raise ValueError(f"{name} must be a square (S, S, 3) uint8 RGB array, got shape {face_rgb.shape} dtype {face_rgb.dtype}")
    if face_rgb.shape[0] < min_size:
        raise ValueError(f"{name} is {face_rgb.shape[0]}² but the coded picture is {min_size}²: pass the full-size face crop")
    return face_rgb


def downscale(face_rgb: np.ndarray, size: int) -> np.ndarray:
    """(S, S, 3) uint8 face crop -> (size, size, 3) uint8, area-averaged (cv2 INTER_AREA); S >= size.
    Returns the input itself when S == size."""
    _check_face(face_rgb, size)
    if face_rgb.shape[0] == size:
        return face_rgb
    return cv2.resize(np.ascontiguousarray(face_rgb), (size, size), interpolation=cv2.INTER_AREA)  # (size, size, 3)


def upscale(picture: np.ndarray, size: int) -> np.ndarray:
    """(E, E, 3) uint8 decoded picture -> (size, size, 3) uint8, bicubic (cv2 INTER_CUBIC); size >= E."""
    if picture.ndim != 3 or picture.shape[2] != 3 or picture.shape[0] != picture.shape[1] or picture.dtype != np.uint8:
        raise ValueError(f"picture must be a square (E, E, 3) uint8 RGB array, got shape {picture.shape} dtype {picture.dtype}")
    if size < picture.shape[0]:
        raise ValueError(f"upscale to {size}² from {picture.shape[0]}² would shrink the picture: use downscale")
    if picture.shape[0] == size:
        return picture
    return cv2.resize(np.ascontiguousarray(picture), (size, size), interpolation=cv2.INTER_CUBIC)  # (size, size, 3)


def psnr_db(a: np.ndarray, b: np.ndarray, cap_db: float = 99.0) -> float:
    """PSNR in dB of two same-shape uint8 images, capped at ``cap_db`` (identical images: the cap)."""
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {a.shape} and {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return cap_db if mse == 0 else min(cap_db, 10.0 * float(np.log10(255.0**2 / mse)))


# ---------------------------------------------------------------------------------------------- OBUs


@dataclass(frozen=True)
class _Obu:
    type: int
    start: int  # offset of the OBU header in the temporal unit
    payload: bytes


def _read_leb128(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it) of the LEB128 number at ``pos`` (at most 8 bytes, AV1 spec 4.10.5)."""
    value = 0
    for i in range(8):
        if pos + i >= len(data):
            raise ValueError(f"OBU size field runs past the end of the {len(data)}-byte packet")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if value >= 1 << 32:
                raise ValueError(f"OBU size {value} is over 2^32 - 1")
            return value, pos + i + 1
    raise ValueError("OBU size field is longer than 8 bytes")


def _split_obus(data: bytes) -> list[_Obu]:
    """The OBUs of one temporal unit; ValueError (quoting the offset) on any framing inconsistency."""
    if not data:
        raise ValueError("empty packet")
    obus: list[_Obu] = []
    pos = 0
    while pos < len(data):
        header = data[pos]
        if header & 0x80:
            raise ValueError(f"OBU at byte {pos} has its forbidden bit set (header {header:#04x})")
        obu_type, has_extension, has_size = (header >> 3) & 0x0F, bool(header & 0x04), bool(header & 0x02)
        if obu_type not in _OBU_TYPES:
            raise ValueError(f"OBU at byte {pos} has reserved type {obu_type}")
        body = pos + 1 + has_extension
        if body > len(data):
            raise ValueError(f"OBU at byte {pos} is cut inside its header")
        if has_size:
            size, body = _read_leb128(data, body)
        else:  # the last OBU of the unit may omit its size
            size = len(data) - body
        end = body + size
        if end > len(data):
            raise ValueError(f"OBU at byte {pos} (type {obu_type}) claims {size} bytes but only {len(data) - body} remain")
        obus.append(_Obu(obu_type, pos, data[body:end]))
        pos = end
    return obus


def _is_key(obus: list[_Obu]) -> bool:
    sequence = next((o for o in obus if o.type == OBU_SEQUENCE_HEADER), None)
    frame = next((o for o in obus if o.type in (OBU_FRAME, OBU_FRAME_HEADER)), None)
    if sequence is None or frame is None or not sequence.payload:
        return False
    if sequence.payload[0] & 0x08:  # reduced_still_picture_header: every frame is a key frame
        return True
    if not frame.payload:
        return False
    show_existing_frame, frame_type = frame.payload[0] >> 7, (frame.payload[0] >> 5) & 0x03
    return show_existing_frame == 0 and frame_type == _KEY_FRAME


def is_key_frame(data: bytes) -> bool:
    """True when ``data`` (one enhancement packet) holds a sequence header and a KEY_FRAME, so that a
    fresh decoder can start from it; False for inter frames and for data that does not parse."""
    try:
        return _is_key(_split_obus(bytes(data)))
    except ValueError:
        return False


def strip_temporal_delimiters(data: bytes) -> bytes:
    """One AV1 temporal unit (low-overhead format) without its temporal delimiter OBUs, which RTP does not
    carry and libdav1d does not need; ValueError on a framing inconsistency."""
    obus = _split_obus(data)
    if not any(o.type == OBU_TEMPORAL_DELIMITER for o in obus):
        return data
    ends = [o.start for o in obus[1:]] + [len(data)]
    return b"".join(data[o.start:end] for o, end in zip(obus, ends) if o.type != OBU_TEMPORAL_DELIMITER)


# ------------------------------------------------------------------------------------------- sender


class LowResEncoder:
    """Stateful low-delay SVT-AV1 encoder of the E×E face picture: one frame in, its bytes out at once.

    The first frame, the frame after ``request_key()`` or ``encode(..., key=True)``, and the first
    frame after a ``set_qp`` that changes the qp (it re-opens the encoder) are key frames; there are no
    periodic key frames, and ``set_fps`` (a new picture interval) keeps the stream. Call ``close()`` (or use it as a context manager) when done.
    """

    def __init__(self, size: int = DEFAULT_SIZE, qp: int = DEFAULT_QP, fps: float = DEFAULT_FPS,
                 preset: int = SVT_AV1_PRESET) -> None:
        if not isinstance(size, int) or size < MIN_SIZE or size % 2:
            raise ValueError(f"size must be an even number of pixels >= {MIN_SIZE} (YUV 4:2:0), got {size!r}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps!r}")
        self._size = size
        self._qp = _check_qp(qp)
        self._fps = float(fps)
        self._preset = int(preset)
        self._context: VideoCodecContext | None = None
        self._pts = 0  # frames given to the current encoder context
        self._key_requested = False
        self._frames_encoded = 0
        self.last_was_key = False  # the newest frame ``encode`` returned is a key frame

    @property
    def size(self) -> int:
        """E: the coded picture is E×E."""
        return self._size

    @property
    def qp(self) -> int:
        return self._qp

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def frames_encoded(self) -> int:
        return self._frames_encoded

    @property
    def options(self) -> dict[str, str]:
        """The libsvtav1 options in use."""
        return svt_av1_options(self._qp, self._preset)

    def request_key(self) -> None:
        """Make the next encoded frame a key frame (a receiver lost a frame or joined late)."""
        self._key_requested = True

    def set_qp(self, qp: int) -> None:
        """Change the quality (1..63, higher = fewer bytes). SVT-AV1 cannot change it on the fly, so
        the encoder is re-opened and the next frame is a key frame. The same qp is a no-op."""
        qp = _check_qp(qp)
        if qp == self._qp:
            return
        self._close_context()
        self._qp = qp

    def set_fps(self, fps: float) -> None:
        """Change the rate the stream is coded at (a picture with every N-th frame of a call at F fps: F / N). Unlike
        ``set_qp`` the stream goes on (the next frame is an inter frame): at a fixed qp SVT-AV1 codes the same bytes
        whatever the time base (measured 2026-12-07: bit-identical streams at F / N and at F with pts stepped by N, 4
        clips, 64² and 160², N = 2 and 3), so the rate only labels the stream and takes effect when it is next opened."""
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps!r}")
        self._fps = float(fps)

    def encode(self, face_rgb: np.ndarray, key: bool = False) -> bytes:
        """face_rgb: (S, S, 3) uint8 RGB face crop, S >= size (area-downscaled here). Returns this
        frame's payload (module docstring); a key frame when ``key``, requested, or the first."""
        small = downscale(_check_face(face_rgb, self._size), self._size)  # (E, E, 3)
        if self._context is None:
            self._context = self._open()
            self._pts = 0
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(small), format="rgb24").reformat(format="yuv420p")
        frame.pts = self._pts
        want_key = self._pts == 0 or key or self._key_requested
        if want_key and self._pts > 0:
            frame.pict_type = av.video.frame.PictureType.I
        if self._pts == 0:
            with scheduling_kept():  # the first call opens the encoder and starts its threads
                packets = self._context.encode(frame)
        else:
            packets = self._context.encode(frame)
        if len(packets) != 1:
            raise RuntimeError(
                f"{ENCODER} returned {len(packets)} packets for frame {self._pts} instead of exactly one: the low-delay "
                f"options {self.options} do not give one packet per frame with this SVT-AV1 build (check its version)"
            )
        packet = packets[0]
        if want_key and not packet.is_keyframe:
            raise RuntimeError(f"{ENCODER} ignored the key-frame request at frame {self._pts} (check the SVT-AV1 version)")
        self._pts += 1
        self._frames_encoded += 1
        self._key_requested = False
        self.last_was_key = bool(packet.is_keyframe)
        return strip_temporal_delimiters(bytes(packet))

    def close(self) -> None:
        """Flush and release the encoder; a later ``encode`` opens a new one (starting with a key frame)."""
        self._close_context()

    def __enter__(self) -> LowResEncoder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _open(self) -> VideoCodecContext:
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 logs its configuration to stderr otherwise
        rate = Fraction(self._fps).limit_denominator(1001)
        context = cast(VideoCodecContext, av.CodecContext.create(ENCODER, "w"))
        context.width = context.height = self._size
        context.pix_fmt = "yuv420p"
        context.time_base = 1 / rate
        context.framerate = rate
        context.gop_size = NO_PERIODIC_KEYFRAMES
        context.thread_count = CODEC_THREADS
        context.options = self.options
        return context

    def _close_context(self) -> None:
        context, self._context = self._context, None
        if context is not None and self._pts > 0:
            with scheduling_kept():
                late = context.encode(None)  # SVT-AV1 complains on stderr when closed without end of stream
            if late:
                logger.warning("%s returned %d packets only at the end of the stream (not low-delay)", ENCODER, len(late))
        self._pts = 0


def _check_qp(qp: object) -> int:
    if not isinstance(qp, (int, np.integer)) or isinstance(qp, bool) or not MIN_QP <= int(qp) <= MAX_QP:
        raise ValueError(f"qp must be an integer in {MIN_QP}..{MAX_QP} (SVT-AV1 crf; higher = fewer bytes), got {qp!r}")
    return int(qp)


# ----------------------------------------------------------------------------------------- receiver


class LowResDecoder:
    """libdav1d decoder of the enhancement stream with the receiver rule of the module docstring:
    frames decode only in order after a key frame; after a gap or an error it waits for a key frame."""

    def __init__(self, size: int | tuple[int, ...] | None = None) -> None:
        """size: the side E of the pictures, or the sides a picture may have, when known; a decoded picture of any
        other size raises EnhancementDecodeError (checked before the picture is converted to RGB)."""
        sizes = (size,) if isinstance(size, int) else size
        if sizes is not None and (not sizes or any(not isinstance(s, int) or s < MIN_SIZE for s in sizes)):
            raise ValueError(f"size must be None, an integer >= {MIN_SIZE} or a tuple of them, got {size!r}")
        self._sizes = None if sizes is None else tuple(sizes)
        self._context: VideoCodecContext | None = None
        self._needs_key = True
        self._last_seq: int | None = None

    @property
    def needs_key(self) -> bool:
        """True until a key frame is decoded, and again after a gap or a decode error: the caller
        should then ask the sender for a key frame."""
        return self._needs_key

    @property
    def last_seq(self) -> int | None:
        """The highest ``seq`` seen so far (None before the first, or when no seq is passed)."""
        return self._last_seq

    def reset(self) -> None:
        """Forget the stream: wait for a key frame, as at the start."""
        self._context = None
        self._needs_key = True
        self._last_seq = None

    def decode(self, data: bytes, seq: int | None = None) -> np.ndarray | None:
        """One packet in; (E, E, 3) uint8 RGB out, or None while waiting for a key frame (or for a
        stale ``seq``). Raises EnhancementDecodeError on a packet that cannot be decoded."""
        where = f" (seq {seq})" if seq is not None else ""
        if seq is not None:
            if self._last_seq is not None and seq <= self._last_seq:
                logger.debug("enhancement packet seq %d is not past %d: stale, ignored", seq, self._last_seq)
                return None
            if self._last_seq is not None and seq != self._last_seq + 1 and not self._needs_key:
                logger.info("enhancement packets %d..%d lost: waiting for a key frame", self._last_seq + 1, seq - 1)
                self._needs_key = True
            self._last_seq = seq
        try:
            obus = _split_obus(bytes(data))
        except ValueError as e:
            self._fail()
            raise EnhancementDecodeError(f"corrupt enhancement packet{where}: {e}; waiting for a key frame") from e
        key = _is_key(obus)
        if self._needs_key:
            if not key:
                return None
            self._context = self._open()  # start afresh: nothing of a broken stream carries over
        assert self._context is not None  # not waiting for a key frame, so a decoder is open
        packet = av.Packet(bytes(data))
        try:
            frames = self._context.decode(packet)
        except (av.error.FFmpegError, ValueError) as e:  # type: ignore[attr-defined]
            self._fail()
            raise EnhancementDecodeError(f"{DECODER} rejected the enhancement packet{where}: {e}; waiting for a key frame") from e
        if not frames:
            logger.warning("enhancement packet%s gave no picture", where)
            return None
        frame = frames[-1]
        if self._sizes is not None and (frame.width != frame.height or frame.width not in self._sizes):
            self._fail()
            expected = " or ".join(f"{s}x{s}" for s in self._sizes)
            raise EnhancementDecodeError(
                f"enhancement packet{where} decoded to {frame.width}x{frame.height}, expected {expected}: "
                f"sender and receiver disagree on the picture size; waiting for a key frame"
            )
        picture = frame.to_ndarray(format="rgb24")  # (E, E, 3)
        self._needs_key = False
        return picture

    def _fail(self) -> None:
        self._context = None
        self._needs_key = True

    @staticmethod
    def _open() -> VideoCodecContext:
        context = cast(VideoCodecContext, av.CodecContext.create(DECODER, "r"))
        context.thread_count = CODEC_THREADS  # one frame in, one picture out (no frame threading delay)
        context.flags = int(context.flags) | int(av.codec.context.Flags.low_delay)
        return context
