"""One model for every remote face of a participant: renders take turns on it, and each render's time is reported.

Each of a participant's receivers (one per other participant) renders on its own thread; two renders at once on two
cores would each run at half speed and both be late, so ``SharedSynthesizer`` lets one run at a time (the model's own
intra-op threads use the cores), in the order they asked (``FairLock``: a plain lock may go again to the thread that just
released it, and the active speaker's receiver always has a frame waiting), and tells the speaker schedule how long each took (its CPU budget).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from codec.motion import MotionParams


class FairLock:
    """A lock handed over in the order it was asked for (first come, first served)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiting: deque[threading.Event] = deque()
        self._held = False

    def __enter__(self) -> None:
        with self._mutex:
            if not self._held:
                self._held = True
                return
            turn = threading.Event()
            self._waiting.append(turn)
        turn.wait()  # the releaser handed it to us: _held stays True

    def __exit__(self, *exc: object) -> None:
        with self._mutex:
            if self._waiting:
                self._waiting.popleft().set()
            else:
                self._held = False


class SharedSynthesizer:
    """A ``receiver.render_worker.Synthesizer`` over ``inner``, one call at a time; other attributes pass through."""

    def __init__(self, inner: Any, on_render_ms: Callable[[float], None] | None = None) -> None:
        self.inner = inner
        self._lock = FairLock()
        self._on_render_ms = on_render_ms

    def __getattr__(self, name: str) -> Any:  # model_id, image_size, enhancement_size, num_keypoints, ...
        return getattr(self.inner, name)

    def prepare(self, reference_rgb: np.ndarray) -> Any:
        with self._lock:
            return self.inner.prepare(reference_rgb)

    def render(self, state: Any, motion: MotionParams, view: Any = None, **kwargs: Any) -> np.ndarray:
        with self._lock:
            start = time.perf_counter()
            image = self.inner.render(state, motion, view=view, **kwargs)
            elapsed_ms = (time.perf_counter() - start) * 1000.0
        if self._on_render_ms is not None:
            self._on_render_ms(elapsed_ms)
        return image
