"""The reference portrait as our codec sends it: the sender's reference message, chunked, reassembled.

Its bytes are real (``codec.reference_message``: JPEG at the sender's default quality inside the
msgpack message, cut into data-channel chunks), and the receiver renders from the *decoded* portrait,
so the JPEG loss is part of both our codec's and the no-motion floor's quality.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bench.codecs.datachannel import data_channel_wire_bytes
from codec.reference_message import (
    ChunkReassembler,
    ReferenceMessage,
    chunk_message,
    decode_portrait,
    encode_portrait,
    pack_reference_message,
    unpack_reference_message,
)

MODEL_ID, MODEL_VERSION = "kpcall-bench", "1"  # ids in the message when no model is at hand


@dataclass(frozen=True, eq=False)
class SentReference:
    """payload_bytes: the chunks' bytes; wire_bytes: on the data channel; image: (S, S, 3) uint8 as decoded."""

    payload_bytes: int
    wire_bytes: int
    image: np.ndarray = field(repr=False)


def send_reference(image: np.ndarray, model_id: str = MODEL_ID, model_version: str = MODEL_VERSION) -> SentReference:
    """The sender's reference message for ``image`` (as senders code it: codec.reference_message defaults), chunked."""
    message = ReferenceMessage.from_image(encode_portrait(image), model_id=model_id, model_version=model_version)
    chunks = chunk_message(pack_reference_message(message))
    reassembler = ChunkReassembler()
    whole = None
    for chunk in chunks:
        whole = reassembler.add(chunk)
    assert whole is not None, "the reassembler completes on the last chunk"
    decoded = decode_portrait(unpack_reference_message(whole))
    if decoded.shape != image.shape:
        raise RuntimeError(f"the portrait came back {decoded.shape}, sent {image.shape}")
    return SentReference(
        payload_bytes=sum(len(c) for c in chunks),
        wire_bytes=sum(data_channel_wire_bytes(len(c)) for c in chunks),
        image=decoded,
    )
