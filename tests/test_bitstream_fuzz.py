"""Fuzzing every parser: motion packets (through the receiver), feedback, reference messages, chunks.

Each input must either parse or raise BitstreamError — never another exception, never a hang.
A fast subset runs by default; the ``slow`` tests feed ≥ 100,000 inputs to each parser.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import msgpack
import numpy as np
import pytest

from codec.bitstream import CodedFrame, Feedback, decode_packet, pack_feedback, unpack_feedback, unpack_header
from codec.exceptions import BitstreamError
from codec.prediction import MotionDepacketizer, MotionPacketizer
from codec.reference_message import (
    ChunkReassembler,
    ReferenceMessage,
    chunk_message,
    encode_portrait,
    pack_reference_message,
    unpack_reference_message,
)
from codec.synthetic_trace import synthetic_trace, trace_timestamps_ms


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One random structural mutation of ``data``."""
    buf = bytearray(data)
    kind = rng.randrange(8)
    if kind == 0 and buf:  # flip bits
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif kind == 1 and buf:  # random byte
        buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif kind == 2:  # truncate
        del buf[rng.randint(0, len(buf)) :]
    elif kind == 3:  # append
        buf += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == 4 and buf:  # delete a span
        i = rng.randrange(len(buf))
        del buf[i : i + rng.randint(1, 8)]
    elif kind == 5:  # insert
        i = rng.randint(0, len(buf))
        buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif kind == 6:  # pure random
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    else:  # interesting integers at a random place
        if buf:
            i = rng.randrange(len(buf))
            buf[i] = rng.choice([0x00, 0x7F, 0x80, 0xFF, 0xA1, 0x88])
    return bytes(buf)


def motion_corpus() -> list[bytes]:
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
                sender.on_feedback(receiver.feedback())  # type: ignore[arg-type]
    return packets


def primed_receiver(corpus: list[bytes]) -> MotionDepacketizer:
    receiver = MotionDepacketizer()
    for packet in corpus:
        receiver.receive(packet)
    return receiver


class BodyDecoder:
    """Header + body decoding against the corpus' decoded frames (skipping the receiver's duplicate
    check, so mutated bodies of known sequence numbers are really decoded)."""

    def __init__(self, corpus: list[bytes]) -> None:
        self.frames: dict[int, CodedFrame] = {}
        for packet in corpus:
            header = unpack_header(packet)
            reference = None if header.key else self.frames[header.reference_seq]  # type: ignore[index]
            for frame in decode_packet(packet, header, reference):
                self.frames[frame.seq] = frame
        self.bodies_decoded = 0

    def __call__(self, data: bytes) -> object:
        header = unpack_header(data)
        reference = None if header.key else self.frames.get(header.reference_seq)  # type: ignore[arg-type]
        if not header.key and reference is None:
            return None
        self.bodies_decoded += 1
        return decode_packet(data, header, reference)


def run_fuzz(count: int, seed: int, corpus: list[bytes], target: Callable[[bytes], object], budget_s: float) -> int:
    rng = random.Random(seed)
    accepted = 0
    start = time.monotonic()
    for _ in range(count):
        data = mutate(rng, rng.choice(corpus))
        if rng.random() < 0.3:
            data = mutate(rng, data)
        try:
            target(data)
            accepted += 1
        except BitstreamError:
            pass
    assert time.monotonic() - start < budget_s, "a parser is too slow on garbage"
    return accepted


def reference_corpus() -> tuple[list[bytes], list[bytes]]:
    rng = np.random.default_rng(0)
    image = encode_portrait((rng.random((24, 20, 3)) * 255).astype(np.uint8), image_format="png")
    message = pack_reference_message(ReferenceMessage.from_image(image, "kpcall-test", "1"))
    return [message], chunk_message(message, max_chunk_bytes=200)


def _receive_on(receiver: MotionDepacketizer) -> Callable[[bytes], object]:
    return receiver.receive


def _reassemble(data: bytes, reassembler: ChunkReassembler = ChunkReassembler(max_message_bytes=1 << 16)) -> object:
    return reassembler.add(data)


FEEDBACK_CORPUS = [
    pack_feedback(Feedback(3, 100, 0xFFFF, None, 500, 3, 1)),
    pack_feedback(Feedback(0, None, 0, 7)),
    msgpack.packb(["kpfb", 1, 1, 2, 3, 4, 5, 6, 7]),
]


def test_fuzz_motion_packets_fast() -> None:
    corpus = motion_corpus()
    run_fuzz(2000, 1, corpus, _receive_on(primed_receiver(corpus)), budget_s=60)
    bodies = BodyDecoder(corpus)
    run_fuzz(2000, 5, corpus, bodies, budget_s=60)
    assert bodies.bodies_decoded > 500  # the mutations reach the range decoder, not just the header


def test_fuzz_feedback_fast() -> None:
    run_fuzz(3000, 2, FEEDBACK_CORPUS, unpack_feedback, budget_s=30)


def test_fuzz_reference_message_and_chunks_fast() -> None:
    messages, chunks = reference_corpus()
    run_fuzz(300, 3, messages, unpack_reference_message, budget_s=60)
    run_fuzz(3000, 4, chunks, _reassemble, budget_s=30)


@pytest.mark.slow
def test_fuzz_motion_packets_100k() -> None:
    corpus = motion_corpus()
    run_fuzz(100_000, 11, corpus, _receive_on(primed_receiver(corpus)), budget_s=1800)
    run_fuzz(100_000, 15, corpus, BodyDecoder(corpus), budget_s=1800)


@pytest.mark.slow
def test_fuzz_feedback_100k() -> None:
    run_fuzz(100_000, 12, FEEDBACK_CORPUS, unpack_feedback, budget_s=600)


@pytest.mark.slow
def test_fuzz_reference_message_and_chunks_100k() -> None:
    messages, chunks = reference_corpus()
    run_fuzz(100_000, 13, messages, unpack_reference_message, budget_s=1800)
    run_fuzz(100_000, 14, chunks, _reassemble, budget_s=600)
