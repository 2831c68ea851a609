"""The one exception type that every wire-format parser in ``codec`` raises on bad input."""

from __future__ import annotations


class BitstreamError(ValueError):
    """A packet, message or chunk could not be parsed or is inconsistent.

    Raised by every ``unpack``/``parse``/``receive`` entry point of ``codec.bitstream``,
    ``codec.prediction`` and ``codec.reference_message`` for corrupt, truncated, oversize,
    wrong-version or inconsistent input, with a message that quotes the offending value. No other
    exception type escapes those entry points for any input bytes; the receiver's state is left
    unchanged by a rejected input.
    """
