"""The render thread: FrameSynthesizer runs here, off the event loop, always on the newest motion.

``submit`` replaces any render job still waiting (latest wins: a slow render skips frames instead of
building a backlog; the skipped output frames are repeated by the sinks). ``call`` runs other
model work (``prepare`` of a new reference) on the same thread, before any waiting render, and
returns an awaitable. Finished frames are handed to the event loop with ``call_soon_threadsafe``.
A job may carry the frame's enhancement picture (``receiver.enhancement``): the synthesizer then
renders with it, otherwise from motion alone; ``frames_enhanced`` counts the former. A job marked
``show_picture`` (``codec.enhancement.passthrough``) is the picture itself: no render, counted in
``frames_shown_as_picture`` (and as rendered with its picture), its time kept out of ``render_ms``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from codec.motion import MotionParams
from receiver.playout import PlayoutFrame

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Synthesizer(Protocol):
    """What the receiver needs from ``codec.model.FrameSynthesizer``."""

    model_id: str
    model_version: str
    image_size: int

    def prepare(self, reference_rgb: np.ndarray) -> Any: ...

    def render(self, state: Any, motion: MotionParams, view: Any = None) -> np.ndarray: ...

    # A synthesizer with the enhancement branch also has ``enhancement_size`` (E > 0) and takes
    # ``render(..., enhancement=(E, E, 3) uint8)``; without it, render is only called as above.


@dataclass(frozen=True, eq=False)
class Scene:
    """What to render with: the prepared portrait, the view, and an optional motion mapping (avatar)."""

    state: Any  # ReferenceState of the portrait being driven
    view: Any = None  # ViewControl or None (the sender's own view)
    motion_map: Callable[[MotionParams], MotionParams] | None = None  # e.g. relative retargeting


@dataclass(frozen=True, eq=False)
class RenderedFrame:
    """A synthesized output frame and its timing (wall-clock ms)."""

    frame: PlayoutFrame
    image: np.ndarray  # (S, S, 3) uint8
    submitted_ms: float
    rendered_ms: float  # when the image was ready
    render_ms: float  # time inside the synthesizer


def wall_ms() -> float:
    return time.time() * 1000.0


class RenderWorker:
    """One thread owning the synthesizer (see the module docstring)."""

    def __init__(self, synthesizer: Synthesizer, loop: asyncio.AbstractEventLoop, on_frame: Callable[[RenderedFrame], None]) -> None:
        self.synthesizer = synthesizer
        self._loop = loop
        self._on_frame = on_frame
        self._cond = threading.Condition()
        self._job: tuple[PlayoutFrame, Scene, float, np.ndarray | None, bool] | None = None
        self._tasks: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="render", daemon=True)
        self.frames_rendered = 0
        self.frames_skipped = 0  # replaced before the thread got to them
        self.render_errors = 0
        self.frames_enhanced = 0  # rendered with their enhancement picture (the others from motion alone)
        self.frames_shown_as_picture = 0  # ... of which shown as the decoded picture itself, without a render
        self.render_ms: deque[float] = deque(maxlen=500)

    def start(self) -> None:
        self._thread.start()

    def submit(self, frame: PlayoutFrame, scene: Scene, enhancement: np.ndarray | None = None,
               show_picture: bool = False) -> None:
        """Render ``frame`` next (replacing a job still waiting); ``enhancement``: its (E, E, 3) uint8 picture;
        ``show_picture``: the frame is that picture, (S, S, 3), as it is."""
        if show_picture and enhancement is None:
            raise ValueError("show_picture needs the frame's picture")
        with self._cond:
            if self._job is not None:
                self.frames_skipped += 1
            self._job = (frame, scene, wall_ms(), enhancement, show_picture)
            self._cond.notify()

    def call(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``fn(*args)`` on the render thread; await the result."""
        future: Future[T] = Future()
        with self._cond:
            if self._stopping:
                future.set_exception(RuntimeError("the render worker is closed"))
            else:
                self._tasks.append((lambda: fn(*args), future))
                self._cond.notify()
        return asyncio.wrap_future(future, loop=self._loop)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._tasks and self._job is None:
                    self._cond.wait()
                if self._stopping:
                    for _, future in self._tasks:
                        future.set_exception(RuntimeError("the render worker is closed"))
                    self._tasks.clear()
                    return
                task = self._tasks.popleft() if self._tasks else None
                job = None
                if task is None:
                    job, self._job = self._job, None
            if task is not None:
                fn, future = task
                try:
                    future.set_result(fn())
                except Exception as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                    future.set_exception(exc)
                continue
            assert job is not None
            frame, scene, submitted, enhancement, show_picture = job
            start = time.perf_counter()
            image = enhancement if show_picture else self._render(frame, scene, enhancement)  # shown as decoded: no render
            if image is None:
                continue  # the render failed (counted and logged)
            elapsed = (time.perf_counter() - start) * 1000.0
            if show_picture:
                self.frames_shown_as_picture += 1
            else:
                self.render_ms.append(elapsed)
            self.frames_rendered += 1
            self.frames_enhanced += enhancement is not None
            rendered = RenderedFrame(frame, image, submitted, wall_ms(), elapsed)
            try:
                self._loop.call_soon_threadsafe(self._on_frame, rendered)
            except RuntimeError:  # the loop closed under us
                return

    def _render(self, frame: PlayoutFrame, scene: Scene, enhancement: np.ndarray | None) -> np.ndarray | None:
        """``frame`` rendered in ``scene`` (with its picture when it has one), or None when the render failed."""
        try:
            motion = frame.motion if scene.motion_map is None else scene.motion_map(frame.motion)
            if enhancement is None:
                return self.synthesizer.render(scene.state, motion, view=scene.view)
            return self.synthesizer.render(scene.state, motion, view=scene.view, enhancement=enhancement)  # type: ignore[call-arg]
        except Exception:  # noqa: BLE001 - one bad frame must not end the call
            self.render_errors += 1
            logger.exception("render of output frame %d failed", frame.slot)
            return None

    async def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._job = None
            self._cond.notify()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, 10.0)
