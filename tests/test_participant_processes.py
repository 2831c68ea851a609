"""A three-person call of real ``python -m participant`` processes (bench.participants) with audio, and a kill -9 of one
mid-call: the others carry on, see it leave within 5 s, and see it again once it is started anew.

Slow (~1 min): three processes load a model each (the 'tiny' preset, random weights, so that rendering is cheap on
two shared cores; the figures with the shipped model are ``bench call --participants 3``'s, in the README).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.participants import ParticipantsBenchConfig, run_participants_bench

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from codec.model import FaceVid2VidModel, ModelConfig, checkpoint

    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    checkpoint.save(FaceVid2VidModel(ModelConfig.preset("tiny")), path)
    return path


def test_a_killed_participant_is_seen_to_leave_and_to_come_back(tiny_weights: Path) -> None:
    config = ParticipantsBenchConfig(participants=3, seconds=30.0, kill_after_s=12.0, weights=str(tiny_weights), device="cpu")
    result = run_participants_bench(config)
    summary = result["summary"]
    kill = summary["kill"]
    assert kill is not None
    assert all(s is not None and s <= 5.0 for s in kill["leave_seen_s"]), kill
    assert all(s is not None and s <= 5.0 for s in kill["rejoin_seen_s_after_its_join"]), kill
    survivors = [p for p in result["participants"] if p["index"] < 2]
    assert len(survivors) == 2
    for participant in survivors:
        assert participant["end"] == "stopped"
        rendered = [r for r in participant["remotes"] if r["rendered_fps"]]
        # the other survivor for the whole call, the victim until its kill, and its new process after the restart
        assert len(rendered) >= 3, participant["remotes"]
        assert all(r["render_errors"] == 0 for r in participant["remotes"])
        assert all(link["motion_transport"] == "rtp+audio" for link in participant["links"]), participant["links"]
    assert summary["motion_wire_kbps_max"] is not None and summary["motion_wire_kbps_max"] < 30.0
    assert summary["av_offset_ms_p95_abs_max"] is not None  # the sync marks were seen in both media
