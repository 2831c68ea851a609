"""LEB128 varints as the wire formats here use them: minimal length, a bounded number of bytes.

``codec.bitstream`` (motion packets) and ``codec.enhancement.bundle`` (frame bundles) both read and
write them; each turns a ``VarintError`` into its own format's error and checks its own value range.
"""

from __future__ import annotations

from typing import Literal

VarintProblem = Literal["truncated", "non-minimal", "too long"]


class VarintError(ValueError):
    """A varint that cannot be read; ``problem`` says which way."""

    def __init__(self, problem: VarintProblem) -> None:
        super().__init__(problem)
        self.problem: VarintProblem = problem


def put_varint(out: bytearray, value: int) -> None:
    """Append ``value`` (≥ 0) as a minimal LEB128 varint."""
    if value < 0:
        raise ValueError(f"a varint holds a value ≥ 0, got {value}")
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return
        out.append(byte | 0x80)


def get_varint(buf: bytes, pos: int, max_bytes: int) -> tuple[int, int]:
    """(value, position after it) of the varint at ``pos``; VarintError when it runs past the end, is not
    minimal, or is longer than ``max_bytes``."""
    value = 0
    for i in range(max_bytes):
        if pos + i >= len(buf):
            raise VarintError("truncated")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i and byte == 0:
                raise VarintError("non-minimal")
            return value, pos + i + 1
    raise VarintError("too long")
