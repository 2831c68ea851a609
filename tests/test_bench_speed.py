"""bench speed: the JSON has the documented fields per preset (tiny preset: fast)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.speed import add_speed_parser, run_speed_from_args
from codec.enhancement import lowres_codec


def test_speed_json_fields(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_speed_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "speed.json"
    args = parser.parse_args(["speed", "--presets", "tiny", "tiny-enh", "--runs", "3", "--warmup", "1", "--json", str(out), "--device", "cpu"])
    assert run_speed_from_args(args) == 0
    data = json.loads(out.read_text())
    for field in ("encode_ms", "render_ms", "params"):
        assert data[field]["tiny"] > 0
    assert data["presets"]["tiny"]["image_size"] == 64
    assert data["presets"]["tiny-enh"]["render_enhanced_ms"] > 0 and "render_enhanced_ms" not in data["presets"]["tiny"]
    assert "median" in data["method"] and data["machine"]["cpu"]
    if lowres_codec.codecs_available():  # the sender's work with the enhancement layer (motion + SVT-AV1)
        enhanced = data["presets"]["tiny-enh"]
        assert enhanced["encode_enhanced_ms"] > 0 and enhanced["enhancement_encode_ms"] > 0
        assert "encode_enhanced_ms" not in data["presets"]["tiny"]
