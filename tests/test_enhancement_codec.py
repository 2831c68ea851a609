"""The enhancement layer's SVT-AV1 / libdav1d codec: low delay, key frames, the receiver's loss rule."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from bench.synthetic_clip import synthetic_talking_head
from codec.enhancement.lowres_codec import (OBU_TEMPORAL_DELIMITER, EnhancementDecodeError, LowResDecoder, LowResEncoder, codecs_available,
                                            _split_obus, downscale, is_key_frame, psnr_db, upscale)
from codec.exceptions import BitstreamError

SIZE = 48
NUM_FRAMES = 30


pytestmark = pytest.mark.skipif(not codecs_available(), reason="this PyAV build has no libsvtav1/libdav1d")


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """(30, 256, 256, 3) uint8 synthetic talking head."""
    return synthetic_talking_head(NUM_FRAMES, 256)


def _encode(faces: np.ndarray, qp: int, keys: tuple[int, ...] = ()) -> list[bytes]:
    with LowResEncoder(SIZE, qp) as encoder:
        return [encoder.encode(face, key=i in keys) for i, face in enumerate(faces)]


@pytest.fixture(scope="module")
def stream(faces: np.ndarray) -> list[bytes]:
    """qp 55, key frames at 0 and 15."""
    return _encode(faces, 55, keys=(15,))


@pytest.fixture(scope="module")
def clean(stream: list[bytes]) -> list[np.ndarray]:
    """The pictures of a decoder that sees every packet in order."""
    decoder = LowResDecoder(SIZE)
    pictures = [decoder.decode(data, i) for i, data in enumerate(stream)]
    assert all(p is not None for p in pictures)
    return [p for p in pictures if p is not None]


def test_downscale_upscale_shapes(faces: np.ndarray) -> None:
    small = downscale(faces[0], SIZE)
    assert small.shape == (SIZE, SIZE, 3) and small.dtype == np.uint8
    assert downscale(small, SIZE) is small
    assert upscale(small, 256).shape == (256, 256, 3)
    with pytest.raises(ValueError, match="would shrink"):
        upscale(faces[0], SIZE)


def test_round_trip_quality_at_48(faces: np.ndarray) -> None:
    """Decoded vs the area-downscaled input: measured 32.1 dB at qp 40 and 28.5 dB at qp 55 on this clip."""
    for qp, floor_db in ((40, 30.0), (55, 26.0)):
        decoder = LowResDecoder(SIZE)
        psnrs = []
        for i, data in enumerate(_encode(faces, qp)):
            picture = decoder.decode(data, i)
            assert picture is not None and picture.shape == (SIZE, SIZE, 3) and picture.dtype == np.uint8
            psnrs.append(psnr_db(picture, downscale(faces[i], SIZE)))
        assert np.mean(psnrs) > floor_db, f"qp {qp}: mean PSNR {np.mean(psnrs):.1f} dB"


def test_bytes_fall_as_qp_rises(faces: np.ndarray) -> None:
    totals = [sum(len(d) for d in _encode(faces, qp)) for qp in (40, 48, 55, 63)]
    assert totals == sorted(totals, reverse=True) and len(set(totals)) == 4, totals


def test_one_packet_per_frame_without_delay_and_keys(stream: list[bytes], caplog: pytest.LogCaptureFixture) -> None:
    assert len(stream) == NUM_FRAMES and all(stream)  # encode() returns each frame's bytes at once
    assert [i for i, d in enumerate(stream) if is_key_frame(d)] == [0, 15]
    assert all(o.type != OBU_TEMPORAL_DELIMITER for d in stream for o in _split_obus(d))
    decoder = LowResDecoder(SIZE)
    assert decoder.needs_key
    assert all(decoder.decode(d) is not None for d in stream)  # one picture per packet, at once
    assert not decoder.needs_key
    with caplog.at_level(logging.WARNING):
        encoder = LowResEncoder(SIZE)
        encoder.encode(np.zeros((64, 64, 3), np.uint8))
        encoder.close()  # flushes: nothing may come out only at the end
    assert "end of the stream" not in caplog.text


def test_set_fps_keeps_the_stream_and_codes_what_a_stream_at_that_rate_would(faces: np.ndarray) -> None:
    """A new picture interval is not a new stream: no key frame, and the bytes are those of an encoder opened at the
    new rate (at a fixed qp SVT-AV1's output does not depend on the time base)."""
    with LowResEncoder(SIZE, qp=55, fps=25.0) as encoder, LowResEncoder(SIZE, qp=55, fps=25.0 / 3) as opened_at_rate:
        kept = [encoder.encode(faces[i]) for i in range(3)]
        encoder.set_fps(25.0 / 3)  # a picture with every 3rd frame
        kept.append(encoder.encode(faces[3]))
        assert not encoder.last_was_key and not is_key_frame(kept[-1]) and encoder.fps == pytest.approx(25.0 / 3)
        assert kept == [opened_at_rate.encode(faces[i]) for i in range(4)]


def test_request_key_and_set_qp(faces: np.ndarray) -> None:
    encoder = LowResEncoder(SIZE, qp=55)
    out = [encoder.encode(faces[i]) for i in range(3)]
    encoder.request_key()
    out += [encoder.encode(faces[i]) for i in range(3, 5)]
    encoder.set_qp(55)  # unchanged: no re-open
    out.append(encoder.encode(faces[5]))
    encoder.set_qp(40)
    assert encoder.qp == 40 and encoder.size == SIZE
    out += [encoder.encode(faces[i]) for i in range(6, 8)]
    encoder.close()
    assert [is_key_frame(d) for d in out] == [True, False, False, True, False, False, True, False]
    assert encoder.frames_encoded == 8


def test_a_lost_frame_waits_for_the_next_key(stream: list[bytes], clean: list[np.ndarray]) -> None:
    decoder = LowResDecoder(SIZE)
    got = {i: decoder.decode(stream[i], i) for i in range(5)}
    assert all(p is not None for p in got.values())
    # packet 5 lost
    for i in range(6, 15):
        assert decoder.decode(stream[i], i) is None and decoder.needs_key
    for i in range(15, NUM_FRAMES):  # the key frame at 15 and what follows decode as without loss
        picture = decoder.decode(stream[i], i)
        assert picture is not None and np.array_equal(picture, clean[i]), i
    assert not decoder.needs_key and decoder.last_seq == NUM_FRAMES - 1
    assert decoder.decode(stream[10], 10) is None and not decoder.needs_key  # stale: ignored


def test_a_decoder_can_join_at_a_key_frame(stream: list[bytes], clean: list[np.ndarray]) -> None:
    decoder = LowResDecoder(SIZE)
    assert decoder.decode(stream[3], 3) is None  # not a key frame
    for i in range(15, 18):
        picture = decoder.decode(stream[i], i)
        assert picture is not None and np.array_equal(picture, clean[i])


def test_corrupt_packets_raise_and_the_decoder_recovers_at_a_key(stream: list[bytes], clean: list[np.ndarray]) -> None:
    decoder = LowResDecoder(SIZE)
    for i in range(3):
        decoder.decode(stream[i], i)
    with pytest.raises(EnhancementDecodeError, match=r"corrupt enhancement packet \(seq 3\): OBU at byte 0 has its "
                                                     r"forbidden bit set \(header 0xff\); waiting for a key frame"):
        decoder.decode(b"\xff" * 20, 3)
    assert decoder.needs_key
    truncated = stream[4][:-3]
    with pytest.raises(BitstreamError, match="claims .* bytes but only .* remain"):
        decoder.decode(truncated, 4)
    with pytest.raises(EnhancementDecodeError, match="empty packet"):
        decoder.decode(b"", 5)
    assert decoder.decode(stream[6], 6) is None  # still waiting for a key frame
    for i in range(15, 20):
        picture = decoder.decode(stream[i], i)
        assert picture is not None and np.array_equal(picture, clean[i])


def test_a_picture_of_the_wrong_size_is_rejected(stream: list[bytes]) -> None:
    decoder = LowResDecoder(32)
    with pytest.raises(EnhancementDecodeError, match="decoded to 48x48, expected 32x32"):
        decoder.decode(stream[0])
    assert decoder.needs_key


def test_a_new_stream_of_another_announced_size_decodes_from_its_key(stream: list[bytes], faces: np.ndarray) -> None:
    """A rung with a larger picture: the sender opens a new stream at that side, whose key picture the same decoder
    takes when it reads both sides; a side it does not read is refused."""
    decoder = LowResDecoder((SIZE, 96))
    assert [decoder.decode(data, i).shape for i, data in enumerate(stream[:5])] == [(SIZE, SIZE, 3)] * 5
    with LowResEncoder(96, 55) as encoder:
        larger = [encoder.encode(face) for face in faces[5:10]]
    assert [decoder.decode(data, 5 + i).shape for i, data in enumerate(larger)] == [(96, 96, 3)] * 5
    assert not decoder.needs_key
    with pytest.raises(EnhancementDecodeError, match="decoded to 96x96, expected 48x48 or 64x64"):
        LowResDecoder((SIZE, 64)).decode(larger[0])


@pytest.mark.parametrize("bad, message", [
    (np.zeros((256, 256), np.uint8), r"got shape \(256, 256\)"),
    (np.zeros((256, 256, 3), np.float32), "dtype float32"),
    (np.zeros((256, 200, 3), np.uint8), "square"),
    (np.zeros((32, 32, 3), np.uint8), "is 32² but the coded picture is 48²"),
    ([[0]], "got list"),
])
def test_encode_rejects_bad_input(bad: object, message: str) -> None:
    encoder = LowResEncoder(SIZE)
    with pytest.raises(ValueError, match=message):
        encoder.encode(bad)  # type: ignore[arg-type]


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="qp must be an integer in 1..63"):
        LowResEncoder(SIZE, qp=70)
    with pytest.raises(ValueError, match="qp must be an integer in 1..63"):
        LowResEncoder(SIZE).set_qp(0)
    with pytest.raises(ValueError, match="fps must be positive"):
        LowResEncoder(SIZE).set_fps(0)
    with pytest.raises(ValueError, match="even number of pixels"):
        LowResEncoder(47)


def test_damaged_packets_never_escape_as_other_errors(stream: list[bytes], clean: list[np.ndarray]) -> None:
    """Seeded fuzz: random byte changes and cuts give a picture, None or EnhancementDecodeError, and a
    clean key frame afterwards decodes exactly."""
    rng = np.random.default_rng(0)
    decoder = LowResDecoder(SIZE)
    for seq in range(300):
        data = bytearray(stream[int(rng.integers(NUM_FRAMES))])
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
        if rng.random() < 0.3:
            data = data[: int(rng.integers(1, len(data) + 1))]
        try:
            picture = decoder.decode(bytes(data), seq)
        except EnhancementDecodeError:
            continue
        assert picture is None or picture.shape == (SIZE, SIZE, 3)
    for i in range(15, 18):
        picture = decoder.decode(stream[i], 300 + i)
        assert picture is not None and np.array_equal(picture, clean[i])


def test_the_encoder_says_which_frames_are_keys_as_the_bitstream_does() -> None:
    face = (np.random.default_rng(3).random((96, 96, 3)) * 255).astype(np.uint8)
    with LowResEncoder(size=SIZE, qp=55) as encoder:
        flags = []
        for i in range(5):
            data = encoder.encode(np.roll(face, i, axis=1), key=i == 3)
            flags.append(encoder.last_was_key)
            assert encoder.last_was_key == is_key_frame(data)
    assert flags == [True, False, False, True, False]
