"""codec.reference_message: portrait message round trip, bounds, chunking and strict reassembly."""

from __future__ import annotations

import hashlib
import io
import random
from dataclasses import replace

import msgpack
import numpy as np
import pytest
from PIL import Image

from codec.exceptions import BitstreamError
from codec.reference_message import (
    CHUNK_HEADER_BYTES,
    DATA_CHANNEL_MAX_MESSAGE_BYTES,
    MAX_IMAGE_BYTES,
    ChunkReassembler,
    ReferenceMessage,
    chunk_message,
    decode_portrait,
    encode_portrait,
    pack_reference_message,
    probe_image,
    unpack_reference_message,
)


def noise_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)  # (H, W, 3)


@pytest.fixture(scope="module")
def big_message() -> bytes:
    """A message larger than one data-channel message (a 600x600 noise PNG, ~1 MB)."""
    image = encode_portrait(noise_image(600, 600), image_format="png")
    return pack_reference_message(ReferenceMessage.from_image(image, "kpcall-fv2v", "3"))


def test_round_trip_and_cache_key() -> None:
    rgb = noise_image(40, 32)
    image = encode_portrait(rgb, image_format="png")
    msg = ReferenceMessage.from_image(image, "kpcall-fv2v", "1.2")
    assert msg.content_hash == hashlib.sha256(image).digest()
    assert (msg.width, msg.height, msg.image_format) == (32, 40, "png")
    assert msg.cache_key == f"{hashlib.sha256(image).hexdigest()}:kpcall-fv2v:1.2"
    back = unpack_reference_message(pack_reference_message(msg))
    assert back == msg
    assert np.array_equal(decode_portrait(back), rgb)
    assert probe_image(encode_portrait(rgb, image_format="jpeg")) == (32, 40, "jpeg")
    assert probe_image(encode_portrait(rgb)) == (32, 40, "webp")  # what senders send since 2026-12-07


def test_senders_portrait_is_webp_at_half_the_jpegs_bytes_and_as_faithful() -> None:
    """The default coding (WebP 90) against the JPEG 92 senders used before, on a smooth 256² face-like image."""
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float64)
    face = np.exp(-((xx - 128) ** 2 / 70**2 + (yy - 120) ** 2 / 90**2))  # (256, 256) a bright oval
    rgb = np.stack([200 * face + 30, 150 * face + 40, 120 * face + 50], -1)
    rgb += 6 * (np.sin(xx / 3) * np.cos(yy / 5))[..., None]  # fine texture
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    webp, jpeg = encode_portrait(rgb), encode_portrait(rgb, image_format="jpeg", quality=92)
    msg = ReferenceMessage.from_image(webp, "kpcall-fv2v", "1")
    back = decode_portrait(unpack_reference_message(pack_reference_message(msg)))
    err = np.mean((back.astype(np.float64) - rgb) ** 2)
    assert msg.image_format == "webp" and len(webp) < 0.75 * len(jpeg), (len(webp), len(jpeg))
    assert 10 * np.log10(255**2 / err) > 38.0


def test_image_bounds() -> None:
    with pytest.raises(BitstreamError, match=r"portrait of 1100x1000 pixels exceeds the limit \(1048576 pixels"):
        ReferenceMessage.from_image(encode_portrait_unchecked(1100, 1000), "m", "1")
    with pytest.raises(BitstreamError, match=f"portrait of {MAX_IMAGE_BYTES + 1} bytes exceeds {MAX_IMAGE_BYTES}"):
        ReferenceMessage.from_image(bytes(MAX_IMAGE_BYTES + 1), "m", "1")
    with pytest.raises(BitstreamError, match="the portrait is not a readable image"):
        ReferenceMessage.from_image(b"GIF89a not really", "m", "1")
    gif = io.BytesIO()
    Image.fromarray(noise_image(4, 4)).save(gif, format="GIF")
    with pytest.raises(BitstreamError, match=r"the portrait is not a readable image in an accepted format \(jpeg, png, webp\)"):
        ReferenceMessage.from_image(gif.getvalue(), "m", "1")
    with pytest.raises(BitstreamError, match="model_id must be a non-empty string"):
        ReferenceMessage.from_image(encode_portrait(noise_image(8, 8)), "", "1")


def test_degenerate_portraits_are_not_references() -> None:
    """A 1x1 dot and a 512x2048 strip fit the pixel limit but are no face crop: refused from the header."""
    with pytest.raises(BitstreamError, match=r"portrait of 1x1 pixels is not a face crop \(short side ≥ 8, aspect ratio ≤ 3:1\)"):
        ReferenceMessage.from_image(encode_portrait_unchecked(1, 1), "m", "1")
    with pytest.raises(BitstreamError, match=r"portrait of 512x2048 pixels is not a face crop"):
        ReferenceMessage.from_image(encode_portrait_unchecked(512, 2048), "m", "1")
    with pytest.raises(BitstreamError, match="is not a face crop"):
        encode_portrait(noise_image(4, 4))


def test_sixteen_bit_grey_portrait_decodes_to_mid_grey() -> None:
    out = io.BytesIO()
    Image.fromarray(np.full((32, 32), 0x8000, np.uint16)).save(out, format="PNG")  # mode I;16
    rgb = decode_portrait(ReferenceMessage.from_image(out.getvalue(), "m", "1"))
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    assert np.all(rgb == 128)


def encode_portrait_unchecked(w: int, h: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (w, h)).save(out, format="PNG")
    return out.getvalue()


def test_unpack_rejects_inconsistent_messages() -> None:
    image = encode_portrait(noise_image(8, 8), image_format="png")
    msg = ReferenceMessage.from_image(image, "m", "1")
    fields = ["kpref", 1, "m", "1", msg.content_hash, 8, 8, "png", image]

    def packed(**changes: object) -> bytes:
        items = list(fields)
        names = ["tag", "version", "model_id", "model_version", "hash", "width", "height", "format", "image"]
        for name, value in changes.items():
            items[names.index(name)] = value
        return msgpack.packb(items, use_bin_type=True)

    cases = [
        (packed(), None),
        (packed(version=2), r"unsupported reference message version 2 \(this build reads 1\)"),
        (packed(tag="kpfb"), "not a reference message: tag 'kpfb'"),
        (packed(hash=bytes(32)), "content_hash 0{64} is not the SHA-256 of the image"),
        (packed(width=9), "the image is 8x8 png, the message says 9x8 png"),
        (packed(format="jpeg"), "the image is 8x8 png, the message says 8x8 jpeg"),
        (packed(width="8"), "reference message width must be an int"),
        (packed(model_id=None), "model_id must be a non-empty string"),
        (packed(image=image[:20]), "the portrait is not a readable image"),
        (msgpack.packb([1, 2]), "reference message must be a 9-item msgpack array"),
        (b"\x93\x01", "reference message is not valid msgpack"),
    ]
    for buf, message in cases:
        if message is None:
            assert unpack_reference_message(buf) == msg
            continue
        with pytest.raises(BitstreamError, match=message):
            unpack_reference_message(buf)
    with pytest.raises(BitstreamError, match="content_hash must be 32 bytes"):
        pack_reference_message(replace(msg, content_hash=b"x"))


def test_chunks_fit_the_data_channel_and_reassemble_in_any_order(big_message: bytes) -> None:
    chunks = chunk_message(big_message)
    assert len(big_message) > DATA_CHANNEL_MAX_MESSAGE_BYTES and len(chunks) >= 4
    assert all(len(c) <= DATA_CHANNEL_MAX_MESSAGE_BYTES for c in chunks)
    assert len(chunks[0]) == DATA_CHANNEL_MAX_MESSAGE_BYTES
    order = list(range(len(chunks))) + [1, 0]  # duplicates are fine
    random.Random(0).shuffle(order)
    reassembler = ChunkReassembler()
    results = [reassembler.add(chunks[i]) for i in order]
    done = [r for r in results if r is not None]
    assert done == [big_message]
    assert reassembler.pending <= 1  # a duplicate arriving after completion starts a partial that is later evicted
    single = chunk_message(b"tiny")
    assert len(single) == 1 and ChunkReassembler().add(single[0]) == b"tiny"
    assert ChunkReassembler().add(chunk_message(b"")[0]) == b""


def header(digest: bytes, index: int, count: int, total: int) -> bytes:
    return b"KC\x01" + digest + index.to_bytes(2, "big") + count.to_bytes(2, "big") + total.to_bytes(4, "big")


def test_reassembler_rejects_inconsistent_chunks() -> None:
    message = bytes(range(256)) * 4  # 1024 bytes
    chunks = chunk_message(message, max_chunk_bytes=CHUNK_HEADER_BYTES + 300)  # 300 + 300 + 300 + 124
    digest = hashlib.sha256(message).digest()
    cases = [
        ([header(digest, 0, 5, 1024) + message[:300]], "chunk says 5 chunks / 1024 bytes, earlier chunks of the message said 4 / 1024"),
        ([header(digest, 2, 4, 1024) + message[:299]], "chunk 2 carries 299 bytes, other chunks 300"),
        ([chunks[3][:-1]], "last chunk carries 123 bytes, 124 expected"),
        ([bytearray(chunks[1][:-1]) + b"\xff"], "chunk 1 arrived twice with different payloads"),
        ([header(digest, 4, 4, 1024) + b"x"], "chunk index 4 is not below the chunk count 4"),
        ([header(digest, 0, 4, 10**9) + b"x"], "message of 1000000000 bytes exceeds the limit"),
        ([header(digest, 0, 900, 100) + b"x"], "900 chunks for a 100-byte message is inconsistent"),
        ([b"KC\x01" + digest[:10]], "truncated chunk: 13 bytes, the header alone is 43"),
        ([b"XX" + chunks[1][2:]], "not a reference-message chunk: magic b'XX'"),
        ([b"KC\x07" + chunks[1][3:]], r"unsupported chunk version 7 \(this build reads 1\)"),
        ([bytes(DATA_CHANNEL_MAX_MESSAGE_BYTES + 1)], "oversize chunk"),
    ]
    for extra, message_text in cases:
        reassembler = ChunkReassembler()
        assert reassembler.add(chunks[0]) is None and reassembler.add(chunks[1]) is None
        with pytest.raises(BitstreamError, match=message_text):
            for chunk in extra:
                reassembler.add(bytes(chunk))
    forged = [header(digest, i, 4, 1024) + (b"\0" * (300 if i < 3 else 124)) for i in range(4)]
    reassembler = ChunkReassembler()
    with pytest.raises(BitstreamError, match="reassembled message does not match its id"):
        for chunk in forged:
            reassembler.add(chunk)
    assert reassembler.pending == 0


def test_reassembler_memory_is_bounded() -> None:
    reassembler = ChunkReassembler(max_pending=2)
    for i in range(5):
        message = bytes([i]) * 1000
        reassembler.add(chunk_message(message, max_chunk_bytes=CHUNK_HEADER_BYTES + 400)[0])
    assert reassembler.pending == 2
    with pytest.raises(BitstreamError, match="a chunk must be bytes, got str"):
        reassembler.add("x")  # type: ignore[arg-type]


def test_golden_reference_message_chunks() -> None:
    """The message and chunk formats are byte-stable (regenerate with KPCALL_REGEN_GOLDEN=1)."""
    import os
    from pathlib import Path

    golden = Path(__file__).parent / "golden"
    portrait = golden / "portrait_12x10.png"
    if os.environ.get("KPCALL_REGEN_GOLDEN") == "1":
        if not portrait.exists():
            portrait.write_bytes(encode_portrait(noise_image(10, 12, seed=5), image_format="png"))
        message = pack_reference_message(ReferenceMessage.from_image(portrait.read_bytes(), "kpcall-test", "1"))
        for i, chunk in enumerate(chunk_message(message, max_chunk_bytes=CHUNK_HEADER_BYTES + 200)):
            (golden / f"reference_chunk_{i}.bin").write_bytes(chunk)
    message = pack_reference_message(ReferenceMessage.from_image(portrait.read_bytes(), "kpcall-test", "1"))
    chunks = chunk_message(message, max_chunk_bytes=CHUNK_HEADER_BYTES + 200)
    assert len(chunks) >= 2
    for i, chunk in enumerate(chunks):
        assert (golden / f"reference_chunk_{i}.bin").read_bytes() == chunk
    assert not (golden / f"reference_chunk_{len(chunks)}.bin").exists()
    reassembler = ChunkReassembler()
    results = [reassembler.add((golden / f"reference_chunk_{i}.bin").read_bytes()) for i in range(len(chunks))]
    msg = unpack_reference_message(results[-1] or b"")
    assert msg.model_id == "kpcall-test" and (msg.width, msg.height) == (12, 10)
