"""The codecs the rate-quality benchmark compares; each one is a ``Codec`` (see ``base``)."""
