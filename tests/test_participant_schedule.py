"""participant.speaker_schedule: who speaks gets the frames; the others get the rate asked for, or what the CPU leaves."""

from __future__ import annotations

import numpy as np
import pytest

from participant.speaker_schedule import HOLD_S, MIN_FPS, RENDER_SHARE, SpeakerSchedule, render_fps_by_role


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _tone(dbfs: float, n: int = 960) -> np.ndarray:
    amplitude = 32768.0 * 10 ** (dbfs / 20.0) * np.sqrt(2.0)
    return (amplitude * np.sin(np.arange(n) * 0.3)).astype(np.int16)


def _feed(schedule: SpeakerSchedule, clock: Clock, levels: dict[str, float], seconds: float) -> None:
    for _ in range(int(seconds / 0.02)):
        clock.now += 0.02
        for remote, dbfs in levels.items():
            schedule.on_audio(remote, _tone(dbfs) if dbfs > -100 else np.zeros(960, np.int16))


def _admitted(schedule: SpeakerSchedule, remote: str, frames: int) -> int:
    gate = schedule.gate(remote)
    return sum(gate(object()) for _ in range(frames))


def test_the_first_remote_is_active_until_someone_speaks_louder_for_long_enough() -> None:
    clock = Clock()
    schedule = SpeakerSchedule(25.0, others_fps=10.0, clock=clock)
    for remote in ("a", "b", "c"):
        schedule.add(remote)
    assert schedule.active == "a"
    _feed(schedule, clock, {"a": -60, "b": -20, "c": -100}, HOLD_S / 2)  # b speaks, but not yet for HOLD_S
    assert schedule.active == "a"
    _feed(schedule, clock, {"a": -60, "b": -20, "c": -100}, 2.0)
    assert schedule.active == "b" and schedule.switches == 1
    _feed(schedule, clock, {"a": -60, "b": -20, "c": -21}, 3.0)  # c as loud as b (less than SWITCH_DB louder): b keeps it
    assert schedule.active == "b"
    _feed(schedule, clock, {"a": -60, "b": -100, "c": -21}, 3.0)  # b stops, c goes on
    assert schedule.active == "c"
    schedule.remove("c")
    assert schedule.active in ("a", "b")


def test_the_speaker_is_rendered_at_full_rate_and_the_others_at_the_rate_asked_spread_evenly() -> None:
    schedule = SpeakerSchedule(25.0, others_fps=10.0)
    schedule.add("a")
    schedule.add("b")
    assert _admitted(schedule, "a", 100) == 100
    gate = schedule.gate("b")
    pattern = [gate(object()) for _ in range(25)]
    assert sum(pattern) == 10
    assert max(len(run) for run in "".join("x" if p else "." for p in pattern).split("x")) <= 2  # no long holes
    solo = SpeakerSchedule(25.0, others_fps=10.0)
    solo.add("only")
    assert _admitted(solo, "only", 50) == 50  # one remote: always at full rate


def test_auto_rate_is_what_the_render_budget_leaves() -> None:
    schedule = SpeakerSchedule(25.0)
    for remote in ("a", "b", "c"):
        schedule.add(remote)
    assert schedule.others_fps() == 25.0  # nothing measured yet
    for _ in range(50):
        schedule.on_render_ms(20.0)  # the speaker takes 25 × 20 ms = 0.5 s of each second
    expected = (RENDER_SHARE - 0.5) / 0.020 / 2
    assert schedule.others_fps() == pytest.approx(expected)
    for _ in range(100):
        schedule.on_render_ms(40.0)  # too slow for anyone else: the floor
    assert schedule.others_fps() == MIN_FPS
    stats = schedule.stats()
    assert stats["active_speaker"] == "a" and set(stats["remotes"]) == {"a", "b", "c"}  # type: ignore[arg-type]


def test_a_fixed_rate_must_be_possible() -> None:
    with pytest.raises(ValueError, match="others_fps"):
        SpeakerSchedule(25.0, others_fps=30.0)


def test_a_speaker_cap_holds_everyone_to_it() -> None:
    """--speaker-fps: the active face at that rate (spread evenly), the others never faster, auto budgets from it."""
    schedule = SpeakerSchedule(25.0, others_fps=20.0, speaker_fps=5.0)
    schedule.add("a")
    schedule.add("b")
    assert _admitted(schedule, "a", 100) == 20 and _admitted(schedule, "b", 100) == 20  # 5 fps each, 4 s of frames
    auto = SpeakerSchedule(25.0, speaker_fps=10.0)
    for remote in ("a", "b"):
        auto.add(remote)
    for _ in range(50):
        auto.on_render_ms(20.0)  # the speaker takes 10 × 20 ms = 0.2 s of each second
    assert auto.others_fps() == 10.0  # the budget would allow (0.85 - 0.2) / 0.02 = 32.5: capped at the speaker's
    solo = SpeakerSchedule(25.0, speaker_fps=2.0)
    solo.add("only")
    assert _admitted(solo, "only", 25) == 2  # one remote: at the cap too
    with pytest.raises(ValueError, match="speaker_fps"):
        SpeakerSchedule(25.0, speaker_fps=0.0)


def test_render_rates_are_split_by_who_was_speaking() -> None:
    timeline = [(0.0, "a"), (2000.0, "b"), (4000.0, "a")]
    rendered = [t * 40.0 for t in range(50)] + [2000.0 + t * 100.0 for t in range(20)] + [4000.0 + t * 40.0 for t in range(25)]
    rates = render_fps_by_role(rendered, timeline, "a", 0.0, 5000.0)
    assert rates["rendered_fps_as_speaker"] == pytest.approx(75 / 3.0) and rates["seconds_as_speaker"] == 3.0
    assert rates["rendered_fps_as_other"] == pytest.approx(10.0) and rates["seconds_as_other"] == 2.0
    assert render_fps_by_role([], [(0.0, "a")], "b", 0.0, 500.0)["rendered_fps_as_other"] is None  # under a second: no rate
    late = render_fps_by_role(rendered, timeline, "a", 4000.0, 5000.0)  # a remote that came at 4 s: only its own time
    assert late["seconds_as_speaker"] == 1.0 and late["seconds_as_other"] == 0.0


def test_the_shared_model_takes_renders_in_the_order_they_came() -> None:
    import threading
    import time

    from participant.shared_synthesizer import SharedSynthesizer

    order: list[str] = []

    class Slow:
        def render(self, state: str, motion: object, view: object = None) -> str:
            order.append(state)
            time.sleep(0.01)
            return state

    shared = SharedSynthesizer(Slow())
    stop = time.monotonic() + 0.6

    def busy(name: str) -> None:  # a receiver that always has a frame waiting (the active speaker's)
        while time.monotonic() < stop:
            shared.render(name, None)

    def sometimes(name: str) -> None:  # one that renders now and then
        while time.monotonic() < stop:
            shared.render(name, None)
            time.sleep(0.05)

    threads = [threading.Thread(target=busy, args=("speaker",)), threading.Thread(target=sometimes, args=("other",))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert order.count("other") >= 6, order.count("other")  # ~every 60 ms, not starved by the busy one
    runs = "".join("s" if name == "speaker" else "o" for name in order).split("o")
    assert max(len(run) for run in runs[1:-1]) <= 7, runs  # an asking render waits for one render at most (+ its 50 ms nap)
