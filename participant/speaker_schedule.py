"""Which remote faces a participant renders how often: the active speaker at full rate, the others within the CPU left.

Rendering three remote faces at 256² and 25 fps each does not fit two CPU cores (one render takes ~35 ms), so the
participant spends its render time where the call's attention is. Each remote's audio, as it is played in sync with its
face, feeds a level meter (RMS over 20 ms blocks, dBFS, smoothed with a 0.3 s time constant). The active speaker is the
loudest remote above ``SPEECH_DBFS``; another takes over only when it is ``SWITCH_DB`` louder for ``HOLD_S`` (no
flapping between two people talking at once). The first remote to arrive is the active one until anyone speaks.

Every playout frame of a remote passes ``gate(remote)(frame)``: the active speaker's always, each other's at
``others_fps`` (a fixed rate, or ``auto``: what the render budget leaves, measured from the recent render times:
``budget = RENDER_SHARE`` of one second of rendering, less the active face's frames, shared by the others and clamped to
``[MIN_FPS, fps]``). A frame not admitted is not rendered (the last picture stays); admitted frames are spread evenly.
``speaker_fps`` (default: the call's fps) caps the active speaker too, for a machine that should spend less on
rendering (a laptop on battery, or several participants sharing one machine in a benchmark); nobody then renders
faster than it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

SPEECH_DBFS = -45.0  # below this nobody is speaking
SWITCH_DB = 3.0  # a new speaker must be this much louder than the active one ...
HOLD_S = 0.5  # ... for this long
LEVEL_TIME_CONSTANT_S = 0.3
RENDER_SHARE = 0.85  # of each second, what rendering may take (the rest: motion, audio, WebRTC, the sender's encoder)
MIN_FPS = 5.0
SILENCE_DBFS = -100.0
TIMELINE_KEPT = 10_000  # changes of the active speaker kept for the report


def render_fps_by_role(
    rendered_ms: list[float], timeline: list[tuple[float, str | None]], remote: str, start_ms: float, end_ms: float,
) -> dict[str, float | None]:
    """Frames per second rendered of ``remote`` while it was the active speaker and while it was not, between
    ``start_ms`` and ``end_ms`` (its time in the call): ``rendered_ms`` its renders' wall times, ``timeline`` the
    (wall ms, active speaker) changes."""
    spans: list[tuple[float, float, bool]] = []
    for (start, active), nxt in zip(timeline, [*timeline[1:], (end_ms, None)]):
        a, b = max(start, start_ms), min(nxt[0], end_ms)
        if b > a:
            spans.append((a, b, active == remote))
    out: dict[str, float | None] = {}
    for role, flag in (("as_speaker", True), ("as_other", False)):
        seconds = sum(b - a for a, b, f in spans if f == flag) / 1000.0
        frames = sum(1 for t in rendered_ms for a, b, f in spans if f == flag and a <= t < b)
        out[f"rendered_fps_{role}"] = round(frames / seconds, 2) if seconds >= 1.0 else None
        out[f"seconds_{role}"] = round(seconds, 1)
    return out


@dataclass
class _Remote:
    level_dbfs: float = SILENCE_DBFS
    last_level_s: float = 0.0
    louder_since_s: float | None = None  # since when it is SWITCH_DB louder than the active one
    admitted: int = 0
    refused: int = 0
    credit: float = 0.0  # frames owed at the current rate (even spreading)
    rendered_s: deque[float] = field(default_factory=lambda: deque(maxlen=128))


class SpeakerSchedule:
    """See the module docstring. ``others_fps`` None = auto."""

    def __init__(
        self, fps: float = 25.0, others_fps: float | None = None, clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], float] = lambda: time.time() * 1000.0, speaker_fps: float | None = None,
    ) -> None:
        if others_fps is not None and not 0 < others_fps <= fps:
            raise ValueError(f"others_fps must be in (0, {fps}] (or None for auto), got {others_fps}")
        if speaker_fps is not None and not 0 < speaker_fps <= fps:
            raise ValueError(f"speaker_fps must be in (0, {fps}] (or None for the call's rate), got {speaker_fps}")
        self.fps = fps
        self.speaker_fps = fps if speaker_fps is None else speaker_fps
        self.fixed_others_fps = others_fps
        self._clock = clock
        self._wall_ms = wall_ms
        self._remotes: dict[str, _Remote] = {}
        self._active: str | None = None
        self.timeline: deque[tuple[float, str | None]] = deque(maxlen=TIMELINE_KEPT)  # (wall ms, the new active speaker)
        self.switches = 0
        self.render_ms: deque[float] = deque(maxlen=100)  # the recent render times of every remote together

    @property
    def active(self) -> str | None:
        return self._active

    @active.setter
    def active(self, remote: str | None) -> None:
        if remote != self._active:
            self._active = remote
            self.timeline.append((self._wall_ms(), remote))

    # -- membership -----------------------------------------------------------------------------
    def add(self, remote: str) -> None:
        self._remotes.setdefault(remote, _Remote())
        if self.active is None:
            self.active = remote

    def remove(self, remote: str) -> None:
        self._remotes.pop(remote, None)
        if self.active == remote:
            self.active = max(self._remotes, key=lambda r: self._remotes[r].level_dbfs, default=None)

    # -- audio ----------------------------------------------------------------------------------
    def on_audio(self, remote: str, samples: np.ndarray) -> None:
        """``samples``: (N,) int16 mono as played (in sync with the face)."""
        state = self._remotes.get(remote)
        if state is None or samples.size == 0:
            return
        now = self._clock()
        rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float32) / 32768.0))))
        block_dbfs = 20.0 * math.log10(max(rms, 1e-5))
        dt = now - state.last_level_s if state.last_level_s else LEVEL_TIME_CONSTANT_S
        alpha = 1.0 - math.exp(-max(dt, 0.0) / LEVEL_TIME_CONSTANT_S)
        state.level_dbfs += alpha * (block_dbfs - state.level_dbfs)
        state.last_level_s = now
        self._update_speaker(now)

    def _update_speaker(self, now: float) -> None:
        active = self._remotes.get(self.active) if self.active is not None else None
        active_level = active.level_dbfs if active is not None else SILENCE_DBFS
        for remote, state in self._remotes.items():
            if remote == self.active or state.level_dbfs < SPEECH_DBFS or state.level_dbfs < active_level + SWITCH_DB:
                state.louder_since_s = None
                continue
            if state.louder_since_s is None:
                state.louder_since_s = now
            elif now - state.louder_since_s >= HOLD_S:
                self.active = remote
                self.switches += 1
                state.louder_since_s = None
                return

    # -- rendering ------------------------------------------------------------------------------
    def others_fps(self) -> float:
        others = len(self._remotes) - 1
        if others <= 0:
            return self.speaker_fps
        if self.fixed_others_fps is not None:
            return min(self.fixed_others_fps, self.speaker_fps)
        if not self.render_ms:
            return self.speaker_fps
        render_s = float(np.median(self.render_ms)) / 1000.0
        left_s = RENDER_SHARE - self.speaker_fps * render_s  # what the active speaker's frames leave of each second
        return min(self.speaker_fps, max(min(MIN_FPS, self.speaker_fps), left_s / render_s / others))

    def gate(self, remote: str) -> Callable[[object], bool]:
        def admit(frame: object) -> bool:
            state = self._remotes.get(remote)
            if state is None:
                return True
            speaking = remote == self.active or len(self._remotes) == 1
            if speaking and self.speaker_fps >= self.fps:
                ok = True
            else:
                rate = self.speaker_fps if speaking else self.others_fps()
                state.credit += rate / self.fps  # < 1 after each admit: no bursts
                ok = state.credit >= 1.0 - 1e-9
                if ok:
                    state.credit -= 1.0
            if ok:
                state.admitted += 1
                state.rendered_s.append(self._clock())
            else:
                state.refused += 1
            return ok

        return admit

    def on_render_ms(self, render_ms: float) -> None:
        self.render_ms.append(render_ms)

    def stats(self) -> dict[str, object]:
        now = self._clock()
        per_remote = {}
        for remote, state in self._remotes.items():
            recent = [t for t in state.rendered_s if now - t <= 2.0]
            per_remote[remote] = {
                "active": remote == self.active, "level_dbfs": round(state.level_dbfs, 1),
                "scheduled_fps": round(len(recent) / 2.0, 1), "frames_admitted": state.admitted, "frames_refused": state.refused,
            }
        return {"active_speaker": self.active, "others_fps": round(self.others_fps(), 2), "switches": self.switches, "remotes": per_remote}
