"""python -m bench rd end to end on a short synthetic clip with the random-weight model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.codecs.base import BenchClip
from bench.codecs.floor import NoMotionFloor
from bench.codecs.ours import OursFactory
from bench.codecs.reference import send_reference
from bench.rd import (
    RdConfig,
    RdInputError,
    evaluate_codecs,
    main,
    run_rd,
    select_clips,
    validate_config,
    write_outputs,
)
from bench.report import results_markdown
from bench.synthetic_clip import synthetic_talking_head
from codec.metrics import psnr, ssim
from codec.model.loading import default_weights_path

FIELDS = ("codec", "setting", "payload_kbps", "wire_kbps", "psnr", "ssim", "face_psnr", "akd")
FRAMES = 4


@pytest.fixture(scope="module")
def default_model() -> OursFactory:
    return OursFactory.load(None)


@pytest.fixture(scope="module")
def result(default_model: OursFactory) -> dict[str, Any]:
    config = RdConfig(
        synthetic=True, frames=FRAMES, score_every=1, size=128, keypoints=(20, 0), presets=("coarse",), frames_per_packet=(1, 2),
        codecs=("ours", "h264", "vp8"), h264_crf=(30, 51), vp8_kbps=(60,),
    )
    return run_rd(config, show_progress=False, ours=default_model)


def test_every_point_has_every_field(result: dict[str, Any]) -> None:
    points = result["points"]
    codecs = [p["codec"] for p in points]
    assert codecs.count("ours") == 4 and codecs.count("h264") == 2 and codecs.count("vp8") == 1
    assert codecs[-1] == "no-motion floor"
    for point in points:
        for name in FIELDS:
            assert name in point, f"{point['codec']} {point['setting']} lacks {name}"
        assert math.isfinite(point["psnr"]) and 0 < point["ssim"] <= 1
        assert point["frames"] == point["scored_frames"] == FRAMES - 1
        assert point["encode_ms"] >= 0 and point["decode_ms"] >= 0
    shipped = default_weights_path().is_file()  # the shipped weights when present, else seeded random ones
    assert result["model"]["is_trained"] is shipped and result["model"]["weights"].startswith("random") is not shipped
    assert result["machine"]["cpu_count"] >= 1 and result["machine"]["date_utc"]


def test_wire_exceeds_payload(result: dict[str, Any]) -> None:
    for point in result["points"]:
        if point["codec"] == "no-motion floor":
            assert point["payload_kbps"] == point["wire_kbps"] == 0
        else:
            assert point["wire_kbps"] > point["payload_kbps"] > 0, point["setting"]
        assert point["start_wire_bytes"] > point["start_payload_bytes"] > 0
        assert point["wire_kbps_call"] > point["wire_kbps"]


def test_frames_per_packet_changes_bytes_not_pictures(result: dict[str, Any]) -> None:
    ours = {p["setting"]: p for p in result["points"] if p["codec"] == "ours"}
    one, two = ours["K=20 coarse 1f/packet"], ours["K=20 coarse 2f/packet"]
    assert one["psnr"] == two["psnr"] and one["ssim"] == two["ssim"]
    assert two["wire_kbps"] < one["wire_kbps"]
    # (random weights predict δ = 0, so K changes the bytes only a little)
    assert ours["K=0 coarse 1f/packet"]["payload_kbps"] <= one["payload_kbps"]


def test_headline_compares_ours_with_each_video_codec(result: dict[str, Any]) -> None:
    headline = result["headline"]
    assert headline["rate"] == "wire_kbps_call"
    assert set(headline["comparisons"]) == {"h264", "vp8"}
    entry = headline["comparisons"]["h264"]["psnr"]
    assert entry["method"] in ("bd-rate", "nearest-points") and entry["rate_ratio"] > 0


def test_in_a_call_with_sound_only_ours_rides_the_audio(result: dict[str, Any]) -> None:
    """Ours' messages ride the audio's packets (payload + ~2 B each); a video codec's rate stays what it was."""
    for point in result["points"]:
        with_audio, alone = point["wire_kbps_call_audio"], point["wire_kbps_call"]
        if point["codec"] in ("ours", "ours+enh"):
            start = point["start_wire_bytes"] * 8 / 60 / 1000
            prefix = (with_audio - start - point["payload_kbps"]) * 1000 / 8 / point["packets_per_s"]
            if point["codec"] == "ours":  # count byte + 1-byte length for every motion message (< 128 B)
                assert prefix == pytest.approx(2.0), point["setting"]
            else:  # frame bundles with a picture: also a frame bundle's own framing, and 2-byte lengths from 128 B
                assert 2.0 <= prefix < 8.0, point["setting"]
            assert with_audio < alone
        else:
            assert with_audio == alone, point["setting"]
    assert result["headline_with_audio"]["rate"] == "wire_kbps_call_audio"
    assert set(result["headline_with_audio"]["comparisons"]) == {"h264", "vp8"}
    assert "### The same in a call with sound" in results_markdown(result)


def test_no_motion_floor_is_exactly_the_decoded_reference() -> None:
    frames = synthetic_talking_head(5, 96)
    clip = BenchClip("floor", "floor", 25.0, frames)
    info, reconstruction = NoMotionFloor().run(clip)
    sent = send_reference(frames[0])
    assert np.array_equal(reconstruction, np.broadcast_to(sent.image, reconstruction.shape))
    assert info.payload_bytes == info.wire_bytes == info.packets == 0
    assert (info.start_payload_bytes, info.start_wire_bytes) == (sent.payload_bytes, sent.wire_bytes)


def test_floor_point_equals_direct_computation() -> None:
    frames = synthetic_talking_head(5, 128)
    clip = BenchClip("floor", "floor", 25.0, frames)
    (point,) = evaluate_codecs([NoMotionFloor()], [clip], call_seconds=60.0)
    reference = send_reference(frames[0]).image
    assert point["psnr"] == pytest.approx(np.mean([psnr(reference, f) for f in frames[1:]]), abs=1e-9)
    assert point["ssim"] == pytest.approx(np.mean([ssim(reference, f) for f in frames[1:]]), abs=1e-9)
    assert point["wire_kbps_call"] == pytest.approx(send_reference(frames[0]).wire_bytes * 8 / 60 / 1000)
    assert point["over_floor"]["psnr"] == 0.0


def test_outputs_and_cli(result: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_outputs(result, tmp_path / "rd.json", tmp_path / "rd.png", tmp_path / "rd.md")
    loaded = json.loads((tmp_path / "rd.json").read_text())
    assert len(loaded["points"]) == len(result["points"])
    assert (tmp_path / "rd.png").stat().st_size > 10_000
    assert "| ours |" in (tmp_path / "rd.md").read_text()
    # bad input: one clear line on stderr, exit status 2
    assert main(["--frames", "1"]) == 2
    assert main(["--presets", "ultra"]) == 2
    assert main(["--frames-per-packet", "9"]) == 2
    assert main(["--clips", str(tmp_path / "nowhere")]) == 2
    assert f"python -m bench rd: clips folder '{tmp_path / 'nowhere'}' does not exist" in capsys.readouterr().err
    assert main(["--synthetic", "--frames", "3", "--weights", str(tmp_path / "none.safetensors")]) == 2


def test_codecs_return_the_pictures_asked_for(default_model: OursFactory) -> None:
    clip = BenchClip("shown", "shown", 25.0, synthetic_talking_head(6, 64))
    for codec in default_model.sweep((20,), ("default",), (1,)) + [NoMotionFloor()]:
        _, every = codec.run(clip)
        info, some = codec.run(clip, np.array([1, 4]))
        assert every.shape[0] == 5 and np.array_equal(some, every[[1, 4]])
        assert info.encode_ms.shape == (5,)
        with pytest.raises(ValueError, match="increasing indices in \\[0, 5\\)"):
            codec.run(clip, np.array([4, 1]))


def test_clip_selection_takes_the_test_group_by_default_or_a_users_own_clips(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    for name in ("styletalk/Obama_clip1.mp4", "styletalk/Obama_clip2.mp4", "styletalk/andrew_clip_1.mp4",
                 "liax/driving1.mp4", "spectre/M003_x.mp4"):
        (shared / name).parent.mkdir(parents=True, exist_ok=True)
        (shared / name).write_bytes(b"")  # selection reads names only
    pairs, source = select_clips(RdConfig(clips=str(shared)))
    assert [p.name for p, _ in pairs] == ["driving1.mp4", "M003_x.mp4"]
    assert source["selection"].startswith("the test group")
    pairs, source = select_clips(RdConfig(clips=str(shared), people="val"))
    assert [(p.name, person) for p, person in pairs] == [("Obama_clip1.mp4", "styletalk-obama")]
    assert source["selection"].startswith("validation people")
    pairs, _ = select_clips(RdConfig(clips=str(shared), people="all", clips_per_person=2))
    assert len(pairs) == 5
    with pytest.raises(RdInputError, match="--people must be one of"):
        validate_config(RdConfig(people="everyone"))
    with pytest.raises(RdInputError, match="either --no-calibration or --light-calibration"):
        validate_config(RdConfig(no_calibration=True, light_calibration=True))
    with pytest.raises(RdInputError, match="no 'val' people's clips"):  # test people only: not a user's own folder
        select_clips(RdConfig(clips=str(shared / "liax"), people="val"))
    mine = tmp_path / "mine" / "calls"
    mine.mkdir(parents=True)
    (mine / "me.mp4").write_bytes(b"")
    pairs, source = select_clips(RdConfig(clips=str(tmp_path / "mine")))
    assert [p.name for p, _ in pairs] == ["me.mp4"] and source["selection"].startswith("all people")
    with pytest.raises(RdInputError, match="does not exist"):
        select_clips(RdConfig(clips=str(tmp_path / "nowhere")))


def test_cross_identity_compares_renders_with_the_portrait_and_the_driver(default_model: OursFactory) -> None:
    """Each clip drives the next clip's portrait; the render's identity distance to both is measured (here the
    astronaut photo, shifted, as two 'people', so the plumbing and the bookkeeping are what is checked)."""
    from bench.cross_identity import cross_identity
    from bench.quality import make_identity_embedder

    face = skimage_face(256)
    clips = [BenchClip(f"c{i}", f"p{i}", 25.0, np.stack([np.roll(face, 2 * j + 7 * i, axis=1) for j in range(5)]))
             for i in range(2)]
    crossed = cross_identity(default_model, clips, make_identity_embedder(), every=2)
    assert [(p["driver"], p["portrait"], p["frames"]) for p in crossed["pairs"]] == [("c0", "c1", 2), ("c1", "c0", 2)]
    assert 0 <= crossed["mean"]["to_portrait"] < 0.6  # the same photo: the same person
    assert "relative motion" in crossed["method"]
    assert cross_identity(default_model, clips[:1], make_identity_embedder())["pairs"] == []


def skimage_face(size: int) -> np.ndarray:
    import cv2
    import skimage.data

    return cv2.resize(skimage.data.astronaut()[20:220, 140:340], (size, size), interpolation=cv2.INTER_AREA)
