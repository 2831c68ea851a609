"""An embedded synthetic talking-head clip: the benchmark's input when no real clips are at hand.

A drawn face (shaded skin, hair, eyes that blink, brows, nose, a mouth that opens and closes)
that nods, turns and drifts a little over a textured background, rendered at any size. It lets
``python -m bench rd`` and the tests run on a fresh clone without ../shared/data; its numbers say
nothing about real faces.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

SYNTHETIC_FPS = 25.0


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack([90 + 40 * xx, 100 + 30 * yy, 120 + 20 * (1 - xx)], axis=-1)  # (S, S, 3)
    noise = cv2.GaussianBlur(rng.normal(0, 12, (size, size, 1)).astype(np.float32), (0, 0), size / 64)
    return np.clip(base + noise[..., None].reshape(size, size, 1), 0, 255).astype(np.float32)


def synthetic_talking_head(num_frames: int = 50, size: int = 256, seed: int = 0) -> np.ndarray:
    """(num_frames, size, size, 3) uint8 RGB frames of a drawn talking head (deterministic per seed)."""
    if num_frames < 1 or size < 32:
        raise ValueError(f"need num_frames >= 1 and size >= 32, got {num_frames} frames of {size} px")
    rng = np.random.default_rng(seed)
    background = _background(size, rng)
    scale = size / 256.0
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for i in range(num_frames):
        t = i / SYNTHETIC_FPS
        cx = size / 2 + 6 * scale * math.sin(2 * math.pi * 0.3 * t)
        cy = size / 2 + 4 * scale * math.sin(2 * math.pi * 0.45 * t + 1.0)
        roll = 5 * math.sin(2 * math.pi * 0.25 * t)
        turn = 0.12 * math.sin(2 * math.pi * 0.2 * t)  # yaw, as a horizontal shift of the features
        mouth_open = max(0.0, math.sin(2 * math.pi * 2.1 * t)) * 14 * scale
        blink = 0.15 if (i % 40) in (0, 1) else 1.0

        img = background.copy()
        layer = np.zeros((size, size, 3), np.float32)
        s = scale

        def pt(x: float, y: float) -> tuple[int, int]:
            """Face coordinates (pixels at 256², origin at the face centre) -> image, with roll."""
            a = math.radians(roll)
            x = x + turn * 60 * (1 - abs(y) / 120)
            xr, yr = x * math.cos(a) - y * math.sin(a), x * math.sin(a) + y * math.cos(a)
            return int(round(cx + xr * s)), int(round(cy + yr * s))

        cv2.ellipse(layer, pt(0, -30), (int(80 * s), int(78 * s)), roll, 180, 360, (60, 40, 30), -1, cv2.LINE_AA)  # hair
        cv2.ellipse(layer, pt(0, 0), (int(66 * s), int(86 * s)), roll, 0, 360, (222, 176, 146), -1, cv2.LINE_AA)  # skin
        cv2.ellipse(layer, pt(0, -70), (int(66 * s), int(28 * s)), roll, 180, 360, (60, 40, 30), -1, cv2.LINE_AA)  # fringe
        for side in (-1, 1):
            cv2.ellipse(layer, pt(side * 26, -16), (int(13 * s), max(1, int(7 * s * blink))), roll, 0, 360,
                        (245, 245, 245), -1, cv2.LINE_AA)
            if blink > 0.5:
                cv2.circle(layer, pt(side * 26 + turn * 30, -16), int(5 * s), (50, 35, 25), -1, cv2.LINE_AA)
            cv2.line(layer, pt(side * 14, -32), pt(side * 40, -34), (70, 50, 40), max(1, int(4 * s)), cv2.LINE_AA)
        cv2.line(layer, pt(0, -10), pt(-4, 18), (190, 140, 115), max(1, int(3 * s)), cv2.LINE_AA)  # nose
        cv2.ellipse(layer, pt(0, 22), (int(10 * s), int(5 * s)), roll, 0, 180, (180, 130, 110), -1, cv2.LINE_AA)
        cv2.ellipse(layer, pt(0, 46), (int(22 * s), int(3 * s + mouth_open / 2)), roll, 0, 360, (150, 60, 60), -1,
                    cv2.LINE_AA)  # lips
        if mouth_open > 2:
            cv2.ellipse(layer, pt(0, 46), (int(16 * s), int(mouth_open / 2)), roll, 0, 360, (60, 20, 25), -1, cv2.LINE_AA)
        mask = layer.any(axis=-1, keepdims=True)
        shade = np.linspace(1.05, 0.85, size, dtype=np.float32)[None, :, None]  # light from the left
        img = np.where(mask, layer * shade, img)
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames
