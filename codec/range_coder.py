"""A small adaptive binary range coder with exp-Golomb integer binarization (the packet body coder).

The coder is LZMA-style (32-bit range, bytewise carry propagation) with two changes for tiny
packets: the encoder terminates with the shortest byte string that identifies the final interval
(trailing zero bytes dropped; the decoder reads zeros past the end), so a packet body costs about one
byte over its information content instead of LZMA's four-byte flush; and each binary context holds
two probability estimates, a fast one (rate 2^-4) and a slow one (2^-7), whose mean is used, plus a
use count: the first uses adapt at rate 1/2, 1/4, 1/4, 1/8, ... (a counting estimator) until the
count reaches the fixed rates. Packets are tiny and a KEY restarts the model, so learning speed
matters: on the synthetic benchmark trace (default preset, K = 20, 30 fps) the count-based start
cut the bytes per frame by 12-14 % against fixed rates 2^-4/2^-7, and made the final rates
(tried 2^-2 .. 2^-4 fast, 2^-4 .. 2^-7 slow) irrelevant to within 0.5 %.

Integers are binarized as: zero flag; sign; then |v| - 1 in exp-Golomb order 0 whose unary prefix
bins are context-coded (one context per prefix position from ``magnitude_ctx`` on, the last of
``PREFIX_CONTEXTS`` shared) and whose suffix bits are bypass-coded (p = 1/2). The caller picks the
zero-flag, sign and magnitude contexts, so it can condition each on what both sides already know.

Probabilities are 15-bit integers P(bit = 0) · 2^15; a model is a flat list of ints holding, for
context i, the fast estimate at 3i, the slow one at 3i + 1 and the use count (≤ 255) at 3i + 2
(``new_model`` makes one).

Decoding never raises on its own: any byte string decodes to *some* symbols; bounds are enforced by
``decode_int`` (prefix length) and by the caller, and the caller checks canonicity by re-encoding.
"""

from __future__ import annotations

PROB_BITS = 15
PROB_ONE = 1 << PROB_BITS
PROB_HALF = PROB_ONE >> 1
FAST_SHIFT = 4
SLOW_SHIFT = 7
TOP = 1 << 24
MASK32 = 0xFFFFFFFF
PREFIX_CONTEXTS = 10  # context-coded exp-Golomb prefix positions (later positions share the last)
MAX_PREFIX = 40  # exp-Golomb prefix bound: |v| < 2^41


class RangeCoderError(Exception):
    """Internal: the decoded symbols exceed a bound (the caller turns it into BitstreamError)."""


MAX_COUNT = 255
# Adaptation shifts by how often a context was used: a new context learns fast (shift 1, 2, ...),
# a well-used one settles to FAST_SHIFT / SLOW_SHIFT (a counting estimator's 1/n, then fixed rates).
_SHIFTS = tuple(
    (min(FAST_SHIFT, (n + 1).bit_length()), min(SLOW_SHIFT, (n + 1).bit_length())) for n in range(MAX_COUNT + 1)
)


def new_model(num_contexts: int) -> list[int]:
    """A fresh model: every context at p = 1/2 (fast and slow estimates), used 0 times."""
    return [PROB_HALF, PROB_HALF, 0] * num_contexts


class RangeEncoder:
    """Encodes binary decisions with adaptive contexts into a minimal byte string."""

    __slots__ = ("low", "range", "out")

    def __init__(self) -> None:
        self.low = 0
        self.range = MASK32
        self.out = bytearray()

    def _carry(self) -> None:
        out = self.out
        i = len(out) - 1
        while out[i] == 0xFF:
            out[i] = 0
            i -= 1
        assert i >= 0, "range coder carry past the first byte"  # invariant: low + range ≤ 2^32 overall
        out[i] += 1

    def encode_bit(self, model: list[int], ctx: int, bit: int) -> None:
        """Code ``bit`` with context ``ctx`` of ``model`` and adapt the context."""
        i = ctx * 3
        fast, slow, n = model[i], model[i + 1], model[i + 2]
        bound = (self.range >> PROB_BITS) * ((fast + slow) >> 1)
        fs, ss = _SHIFTS[n]
        if n < MAX_COUNT:
            model[i + 2] = n + 1
        if bit:
            self.low += bound
            self.range -= bound
            model[i] = fast - (fast >> fs)
            model[i + 1] = slow - (slow >> ss)
            if self.low > MASK32:
                self.low &= MASK32
                self._carry()
        else:
            self.range = bound
            model[i] = fast + ((PROB_ONE - fast) >> fs)
            model[i + 1] = slow + ((PROB_ONE - slow) >> ss)
        while self.range < TOP:
            self.out.append(self.low >> 24)
            self.low = (self.low << 8) & MASK32
            self.range <<= 8

    def encode_bypass(self, value: int, num_bits: int) -> None:
        """Code the ``num_bits`` low bits of ``value`` (MSB first) at p = 1/2."""
        for shift in range(num_bits - 1, -1, -1):
            half = self.range >> 1
            if (value >> shift) & 1:
                self.low += half
                self.range -= half
                if self.low > MASK32:
                    self.low &= MASK32
                    self._carry()
            else:
                self.range = half
            while self.range < TOP:
                self.out.append(self.low >> 24)
                self.low = (self.low << 8) & MASK32
                self.range <<= 8

    def encode_int(self, model: list[int], zero_ctx: int, sign_ctx: int, magnitude_ctx: int, value: int) -> None:
        """Code a signed integer: zero flag, sign, then |v| (prefix contexts from ``magnitude_ctx``)."""
        if value == 0:
            self.encode_bit(model, zero_ctx, 0)
            return
        self.encode_bit(model, zero_ctx, 1)
        self.encode_bit(model, sign_ctx, 1 if value < 0 else 0)
        m = abs(value)  # ≥ 1; exp-Golomb order 0 of m - 1 codes m's bit length then its low bits
        n = m.bit_length() - 1
        if n > MAX_PREFIX:
            raise ValueError(f"integer {value} is too large for the range coder (|v| ≥ 2^{MAX_PREFIX + 1})")
        prefix = magnitude_ctx
        last = prefix + PREFIX_CONTEXTS - 1
        for j in range(n):
            self.encode_bit(model, min(prefix + j, last), 1)
        if n < MAX_PREFIX:
            self.encode_bit(model, min(prefix + n, last), 0)
        if n:
            self.encode_bypass(m, n)

    def finish(self) -> bytes:
        """Terminate with the shortest suffix inside the final interval; trailing zero bytes dropped."""
        low, high = self.low, self.low + self.range
        value = low
        for k in range(32, 0, -1):
            mask = (1 << k) - 1
            candidate = (low + mask) & ~mask
            if candidate < high:
                value = candidate
                break
        if value > MASK32:
            value &= MASK32
            self._carry()
        self.out += value.to_bytes(4, "big")
        end = len(self.out)
        while end and self.out[end - 1] == 0:
            end -= 1
        return bytes(self.out[:end])


class RangeDecoder:
    """Decodes what RangeEncoder wrote, given the same sequence of contexts; reads zeros past the end."""

    __slots__ = ("data", "pos", "range", "code")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 4
        self.range = MASK32
        self.code = int.from_bytes(data[:4].ljust(4, b"\0"), "big")

    def _next(self) -> int:
        pos = self.pos
        self.pos = pos + 1
        return self.data[pos] if pos < len(self.data) else 0

    def decode_bit(self, model: list[int], ctx: int) -> int:
        i = ctx * 3
        fast, slow, n = model[i], model[i + 1], model[i + 2]
        bound = (self.range >> PROB_BITS) * ((fast + slow) >> 1)
        fs, ss = _SHIFTS[n]
        if n < MAX_COUNT:
            model[i + 2] = n + 1
        if self.code < bound:
            self.range = bound
            model[i] = fast + ((PROB_ONE - fast) >> fs)
            model[i + 1] = slow + ((PROB_ONE - slow) >> ss)
            bit = 0
        else:
            self.code -= bound
            self.range -= bound
            model[i] = fast - (fast >> fs)
            model[i + 1] = slow - (slow >> ss)
            bit = 1
        while self.range < TOP:
            self.code = ((self.code << 8) | self._next()) & MASK32
            self.range <<= 8
        return bit

    def decode_bypass(self, num_bits: int) -> int:
        value = 0
        for _ in range(num_bits):
            half = self.range >> 1
            if self.code < half:
                self.range = half
                value <<= 1
            else:
                self.code -= half
                self.range -= half
                value = (value << 1) | 1
            while self.range < TOP:
                self.code = ((self.code << 8) | self._next()) & MASK32
                self.range <<= 8
        return value

    def decode_int(self, model: list[int], zero_ctx: int, sign_ctx: int, magnitude_ctx: int, max_abs: int) -> int:
        """Decode what ``encode_int`` wrote; RangeCoderError if |v| would exceed ``max_abs``."""
        if not self.decode_bit(model, zero_ctx):
            return 0
        negative = self.decode_bit(model, sign_ctx)
        prefix = magnitude_ctx
        last = prefix + PREFIX_CONTEXTS - 1
        n = 0
        while n < MAX_PREFIX and self.decode_bit(model, min(prefix + n, last)):
            n += 1
        if (1 << n) > max_abs:
            raise RangeCoderError(f"decoded magnitude ≥ 2^{n} exceeds the bound {max_abs}")
        m = (1 << n) | self.decode_bypass(n) if n else 1
        if m > max_abs:
            raise RangeCoderError(f"decoded magnitude {m} exceeds the bound {max_abs}")
        return -m if negative else m

    @property
    def bytes_read(self) -> int:
        """Bytes consumed so far, counting the zero padding past the end."""
        return self.pos
