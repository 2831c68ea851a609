"""python -m codec.data enhance on a tiny fake prepared dataset: files, shapes, resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from codec.data.__main__ import main as data_main
from codec.data.enhancement import code_clip, downscale_clip, enhancement_paths, summarize
from codec.enhancement.lowres_codec import codecs_available
from tests._train_fakes import write_fake_prepared

SIZE = 16
QPS = (40, 63)


pytestmark = pytest.mark.skipif(not codecs_available(), reason="this PyAV build has no libsvtav1/libdav1d")


@pytest.fixture()
def prepared(tmp_path: Path) -> Path:
    """5 clips of 12 frames at 32² (train: a_0, a_1, b_0; val: c_0, d_0)."""
    return write_fake_prepared(tmp_path / "s32", size=32)


def _argv(root: Path) -> list[str]:
    return ["enhance", "--data", str(root), "--size", str(SIZE)] + [a for qp in QPS for a in ("--qp", str(qp))]


def test_enhance_writes_every_clip_and_resumes(prepared: Path, caplog: pytest.LogCaptureFixture,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert data_main(_argv(prepared)) == 0
    summary = json.loads(capsys.readouterr().out)
    manifest = json.loads((prepared / "manifest.json").read_text())
    for entry in manifest["clips"]:
        clip_dir = prepared / "clips" / entry["id"]
        for qp in QPS:
            npy_path, json_path = enhancement_paths(clip_dir, SIZE, qp)
            pictures = np.load(npy_path)
            side = json.loads(json_path.read_text())
            assert pictures.shape == (12, SIZE, SIZE, 3) and pictures.dtype == np.uint8
            assert len(side["frame_bytes"]) == len(side["psnr_db"]) == 12
            assert side["size"] == SIZE and side["qp"] == qp and side["encoder"]["crf"] == str(qp)
            assert side["frame_bytes"][0] > max(side["frame_bytes"][1:])  # the key frame
        assert not list(clip_dir.glob("*.tmp*"))
    assert {(s["split"], s["qp"]) for s in summary} == {(sp, qp) for sp in ("train", "val") for qp in QPS}
    val = {s["qp"]: s for s in summary if s["split"] == "val"}
    assert val[40]["clips"] == 2 and val[40]["frames"] == 24
    assert val[40]["inter_bytes_per_frame"] > val[63]["inter_bytes_per_frame"] and val[40]["psnr_db"] > val[63]["psnr_db"]

    first = prepared / "clips" / "a_0" / f"enh{SIZE}_qp40.npy"
    stamp = first.stat().st_mtime_ns
    enhancement_paths(prepared / "clips" / "c_0", SIZE, 63)[1].unlink()  # as if interrupted before the .json
    with caplog.at_level(logging.INFO):
        assert data_main(_argv(prepared)) == 0
    assert first.stat().st_mtime_ns == stamp  # skipped
    assert "1 streams coded" in caplog.text
    assert enhancement_paths(prepared / "clips" / "c_0", SIZE, 63)[1].is_file()

    # Files coded with other encoder settings (the preset-10 real-time mode of 2026-12-06) are coded again.
    old_json = enhancement_paths(prepared / "clips" / "b_0", SIZE, 40)[1]
    side = json.loads(old_json.read_text())
    old_json.write_text(json.dumps({**side, "encoder": {"preset": "10", "crf": "40", "svtav1-params": "rtc=1"}}))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert data_main(_argv(prepared)) == 0
    assert "1 streams coded" in caplog.text and "coding it again" in caplog.text
    assert json.loads(old_json.read_text())["encoder"] == side["encoder"]
    assert first.stat().st_mtime_ns == stamp


def test_coded_clip_matches_the_receiver(prepared: Path) -> None:
    frames = np.load(prepared / "clips" / "c_0" / "frames.npy")
    small = downscale_clip(frames, SIZE)
    assert small.shape == (12, SIZE, SIZE, 3)
    coded = code_clip(small, 55)
    assert coded.pictures.shape == small.shape and len(coded.frame_bytes) == 12
    assert np.mean(coded.psnr_db) > 20.0  # flat synthetic shapes at 16²: 27.7 dB measured
    assert summarize(prepared, SIZE, [55], "val") == []  # nothing written yet


def test_bad_arguments(prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        data_main(["enhance", "--data", str(prepared), "--qp", "64"])
    with pytest.raises(ValueError, match="--size 48 must be even and in 8..32"):
        data_main(["enhance", "--data", str(prepared), "--size", "48"])
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        data_main(["enhance", "--data", str(tmp_path / "nowhere")])
    assert data_main(["bogus"]) == 2
