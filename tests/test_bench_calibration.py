"""bench calibration (bench/calibration.py): fit frames from a clip's first half, scored frames from its second half,
each variant rendered and scored; the report and its table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.calibration import add_calibration_parser, format_table, run_calibration, split_frames
from sender.calibration import FitProfile


def test_the_fit_never_sees_a_scored_frame() -> None:
    fit, scored = split_frames(99, 6)
    assert fit == list(range(1, 50, 6)) and scored == list(range(50, 100, 6))
    assert max(fit) < min(scored) and min(fit) >= 1  # frame 0 is the reference
    with pytest.raises(ValueError, match="at least 24 driving frames"):
        split_frames(20, 6)


@pytest.mark.pretrained
def test_a_run_on_the_synthetic_clip_reports_each_variant(tmp_path: Path) -> None:
    profiles = {"none": None, "quick": FitProfile(frames=2, spacing=1, steps=2, learning_rate=0.002)}
    report = run_calibration(synthetic=True, frames=13, spacing=3, profiles=profiles, tracked_steps=1)
    assert set(report["mean"]) == {"none", "quick", "quick+tracked"} and report["config"]["profiles"]["quick"]["steps"] == 2
    assert report["mean"]["quick+tracked"]["tracking_seconds_per_frame"] > 0
    none, quick = report["mean"]["none"], report["mean"]["quick"]
    assert none["fit_seconds"] == 0 and none["applied"] == 0
    assert 10 < none["face_psnr"] < 60 and 10 < quick["face_psnr"] < 60
    if quick["applied"]:  # a fit that lowered the error on its frames moves the scored frames' render
        assert quick["face_psnr"] != none["face_psnr"]
    table = format_table(report)
    assert table.count("\n") == 4 and "| quick |" in table and "| quick+tracked |" in table
    json.dumps(report, default=str)  # the CLI writes it as JSON


def test_the_cli_refuses_the_training_people() -> None:
    parser = argparse.ArgumentParser()
    add_calibration_parser(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["calibration", "--people", "train"])
    assert parser.parse_args(["calibration", "--people", "test"]).people == "test"


def test_bench_rd_can_fit_as_a_small_cpu_does() -> None:
    """--light-calibration: ours' encoder fits with sender.calibration.LIGHT, and the report says which fit ran."""
    from bench.codecs.ours import OursFactory
    from sender.calibration import FULL, LIGHT

    synthesizer = SimpleNamespace(enhancement_size=0)
    light = OursFactory(object(), synthesizer, {}, calibration=LIGHT)
    assert light.describe()["keypoint_calibration"] == {"on": True, "profile": vars(LIGHT), "clips": {}}
    full = OursFactory(object(), synthesizer, {}, calibration=FULL)
    assert full.describe()["keypoint_calibration"]["profile"] == vars(FULL)
    off = OursFactory(object(), synthesizer, {}).describe()["keypoint_calibration"]
    assert off["on"] is False and off["profile"] is None
