"""codec.data: clip reading, the by-person split, and preparation (format, resume)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import skimage.data
from PIL import Image

from codec.data.clips import iter_clip_frames, iter_clip_frames_at, list_clips
from codec.data.prepare import prepare
from codec.data.split import TEST_SOURCES, VALIDATION_PEOPLE, clips_of_split, person_of, split_of


def test_person_groups_from_the_data_readme() -> None:
    p = Path("clips")
    assert person_of(p / "retalking" / "3.mp4") == person_of(p / "sadtalker" / "WDA_AlexandriaOcasioCortez_000.mp4")
    assert person_of(p / "pcavs" / "Input_00002.mp4") == person_of(p / "pcavs" / "Pose_Source_517600078")
    assert person_of(p / "dreamtalk" / "M030_front_angry_level3_001.mp4") == person_of(p / "dreamtalk" / "M030_front_sad_level3_001.mp4")
    assert person_of(p / "styletalk" / "Obama_clip1.mp4") == person_of(p / "styletalk" / "Obama_clip3.mp4")
    assert person_of(p / "styletalk" / "andrew_clip_1.mp4") == person_of(p / "styletalk" / "andrew_clip_2.mp4")
    assert split_of("styletalk-obama") == "val" and split_of("dreamtalk-M030") == "train"
    assert person_of(p / "lia" / "driving1.mp4") == person_of(p / "hyperreenact" / "target_video_2.mp4")
    assert person_of(p / "lia" / "driving2.mp4") != person_of(p / "lia" / "driving3.mov")


def test_the_test_group_is_every_clip_of_its_sources() -> None:
    p = Path("clips")
    group = [p / "spectre" / "M003_level_1_disgusted_015.mp4", p / "vasa1hack" / "-2KGPYEFnsU_11.mp4",
             p / "liax" / "driving7.mp4", p / "mimictalk" / "German_20s.mp4", p / "real3dportrait" / "May_5s.mp4",
             p / "styleheat" / "video.mp4"]
    others = [p / "lia" / "driving1.mp4", p / "styletalk" / "Obama_clip1.mp4", p / "dreamtalk" / "W009_x.mp4"]
    assert {split_of(person_of(c)) for c in group} == {"test"}
    assert [split_of(person_of(c)) for c in others] == ["train", "val", "train"]
    assert clips_of_split(group + others, "test") == group
    with pytest.raises(ValueError, match="split must be one of"):
        clips_of_split(group, "holdout")


@pytest.mark.shared_data
def test_shared_split_has_no_person_on_both_sides(shared_data: Path) -> None:
    clips = list_clips(shared_data / "clips")
    people = {person_of(c) for c in clips}
    assert 90 <= len(people) <= 110  # ~45 before 2026-12-05, 52 more since (data README)
    assert VALIDATION_PEOPLE <= people  # every validation person exists
    tests = {p for p in people if split_of(p) == "test"}
    assert len(tests) == 15  # the data README's test group
    assert {p.split("-", 1)[0] for p in tests} == TEST_SOURCES
    splits: dict[str, set[str]] = {}
    for clip in clips:
        splits.setdefault(person_of(clip), set()).add(split_of(person_of(clip)))
    assert all(len(s) == 1 for s in splits.values())


def test_resampling_by_timestamp_is_what_a_camera_at_that_rate_delivers(tmp_path: Path) -> None:
    """A 30 fps clip read at 25 fps drops one frame in six, by time; at 60 fps each frame shows twice."""
    path = tmp_path / "c30.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv444p"
        stream.options = {"qp": "0"}
        for i in range(60):  # frame i shows the grey level 4 i
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 4 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    at25 = [int(round(f.mean() / 4)) for f in iter_clip_frames_at(path, 25.0)]
    assert len(at25) == 50  # 2 s (the last frame's time is 59/30 s: ticks 0 .. 49)
    assert at25 == [int(np.floor(t * 30 / 25 + 1e-9)) for t in range(50)]  # newest frame at or before each tick
    at60 = [int(round(f.mean() / 4)) for f in iter_clip_frames_at(path, 60.0)]
    assert at60[:6] == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="fps must be positive"):
        next(iter_clip_frames_at(path, 0))


def _write_clip(folder: Path, frames: int) -> Path:
    face = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((192, 192)))
    path = folder / "src" / "person.mp4"
    path.parent.mkdir(parents=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width = stream.height = 192
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.roll(face, i, axis=1), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    jpegs = folder / "src" / "frames_person2"
    jpegs.mkdir()
    for i in range(3):
        Image.fromarray(face).save(jpegs / f"{i:04d}.jpg")
    return path


def test_prepare_writes_the_documented_format_and_resumes(tmp_path: Path) -> None:
    _write_clip(tmp_path, frames=6)
    root = tmp_path / "src"
    assert len(list_clips(root)) == 2 and len(list(iter_clip_frames(root / "frames_person2"))) == 3
    roots = prepare(root, tmp_path / "out", [128, 64])
    manifest = json.loads((roots[64] / "manifest.json").read_text())
    assert manifest["size"] == 64 and len(manifest["clips"]) == 2
    clip = next(c for c in manifest["clips"] if c["num_frames"] == 6)
    frames = np.load(roots[64] / "clips" / clip["id"] / "frames.npy", mmap_mode="r")
    meta = np.load(roots[64] / "clips" / clip["id"] / "meta.npz")
    assert frames.shape == (6, 64, 64, 3) and frames.dtype == np.uint8
    assert meta["landmarks"].shape == (6, 478, 3) and meta["pose"].shape == (6, 3) and meta["face_found"].all()
    big = np.load(roots[128] / "clips" / clip["id"] / "meta.npz")["landmarks"]
    assert np.allclose(big / 2, meta["landmarks"], atol=1e-3)
    mtime = (roots[64] / "clips" / clip["id"] / "frames.npy").stat().st_mtime_ns
    prepare(root, tmp_path / "out", [128, 64])  # resume: nothing is redone
    assert (roots[64] / "clips" / clip["id"] / "frames.npy").stat().st_mtime_ns == mtime


def test_prepare_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare(tmp_path / "nope", tmp_path / "out", [64])
