"""Keypoint-based neural video codec: motion representation, bitstream, face pipeline, model."""
