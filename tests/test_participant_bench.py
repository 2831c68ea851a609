"""bench.participants without processes: the commands it starts and what its summary counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.participants import BACKGROUND_RENDER_FPS, ParticipantsBenchConfig, _command, summarize


def _report(peer_id: str, speaker_fps: float, other_fps: float) -> dict[str, Any]:
    def remote(rid: str, as_speaker: float | None, as_other: float | None) -> dict[str, Any]:
        return {"peer_id": rid, "rendered_fps": 10.0, "output_fps": 25.0, "rendered_fps_as_speaker": as_speaker,
                "seconds_as_speaker": 10.0, "rendered_fps_as_other": as_other, "seconds_as_other": 10.0,
                "latency_ms": {"p95": 100.0, "median": 80.0}, "render_ms": {"median": 20.0}, "frames_concealed": 0,
                "render_errors": 0, "audio": {"sync": {"offset_ms_p95_abs": 10.0, "pairs": 5}}}
    return {"peer_id": peer_id, "schedule": {"active_speaker": "x"}, "remotes": {"x": remote("x", speaker_fps, None),
            "y": remote("y", None, other_fps)}, "departed": [], "sent": [{"peer_id": "x", "wire_kbps": 6.0, "payload_bytes": 1}]}


def test_measure_first_puts_the_others_in_the_background() -> None:
    config = ParticipantsBenchConfig(measure_first=True)
    first, other = _command("http://h:1", config, Path("s.json"), 0), _command("http://h:1", config, Path("s.json"), 1)
    assert first[0] != "nice" and "--speaker-fps" not in first
    assert other[:3] == ["nice", "-n", "19"] and other[other.index("--speaker-fps") + 1] == str(BACKGROUND_RENDER_FPS)
    plain = _command("http://h:1", ParticipantsBenchConfig(), Path("s.json"), 1)
    assert plain[0] != "nice" and "--speaker-fps" not in plain


def test_the_summary_covers_the_first_only_when_measured_alone() -> None:
    reports = [(0, _report("a", 24.0, 16.0)), (1, _report("b", 2.0, 2.0)), (2, _report("c", 2.0, 2.0))]
    alone = summarize(ParticipantsBenchConfig(measure_first=True), reports, {"killed_ms": None}, Path("."))["summary"]
    assert alone["speaker_rendered_fps_min"] == 24.0 and alone["others_rendered_fps_min"] == 16.0
    together = summarize(ParticipantsBenchConfig(), reports, {"killed_ms": None}, Path("."))["summary"]
    assert together["speaker_rendered_fps_min"] == 2.0 and together["others_rendered_fps_min"] == 2.0


def test_render_weights_reach_every_participant_and_the_sender_keeps_its_model() -> None:
    config = ParticipantsBenchConfig(weights="cpu.safetensors", render_weights="web.safetensors")
    for index in (0, 1):
        cmd = _command("http://h:1", config, Path("s.json"), index)
        assert cmd[cmd.index("--weights") + 1] == "cpu.safetensors"
        assert cmd[cmd.index("--render-weights") + 1] == "web.safetensors"
    assert "--render-weights" not in _command("http://h:1", ParticipantsBenchConfig(), Path("s.json"), 0)
