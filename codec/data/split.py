"""Who is in which clip, and the train / validation / test split by person (never by clip).

../shared/data/README.md: several clips share a person. dreamtalk's clips are 2 people × 8
emotions (M030, W009); styletalk holds several clips of the same speakers (Obama_clip1-3,
andrew_clip_1-2, style_furious_talk1_*, style_furious_talk2_*, style_happyenglish_*); PC-AVS
Audio_Source_741400104 and Pose_Source_741400163 are one person, as are Input_00002,
Pose_Source_517600055 and Pose_Source_517600078; retalking/3 and
sadtalker/WDA_AlexandriaOcasioCortez_000 are one person.

The clips added on 2026-12-05 (../shared/data/clips-added-2026-12.tsv) show one person each, except
lia/driving1 and hyperreenact/target_video_2 (the same person). Every clip of the sources in
TEST_SOURCES is the data README's **test group**: never trained on, never used to pick a checkpoint
or tune a design; only reported figures (bench rd, the model card's test table) read it.
"""

from __future__ import annotations

import re
from pathlib import Path

# Same-person groups named in the data README (clip stem -> person id).
_SAME_PERSON = {
    "pcavs/Audio_Source_741400104": "pcavs-741400",
    "pcavs/Pose_Source_741400163": "pcavs-741400",
    "pcavs/Input_00002": "pcavs-input00002",
    "pcavs/Pose_Source_517600055": "pcavs-input00002",
    "pcavs/Pose_Source_517600078": "pcavs-input00002",
    "retalking/3": "aoc",
    "sadtalker/WDA_AlexandriaOcasioCortez_000": "aoc",
    "lia/driving1": "eleanor-tomlinson",
    "hyperreenact/target_video_2": "eleanor-tomlinson",
}
# The test group of ../shared/data/README.md: every clip under these source folders (15 people).
TEST_SOURCES = frozenset({"spectre", "vasa1hack", "liax", "mimictalk", "real3dportrait", "styleheat"})
SPLITS = ("train", "val", "test")
# Validation people: varied (two sources, men and women, frontal and turning), chosen once and fixed
# so that every run and the benchmark agree. About 15% of the ~45 people.
VALIDATION_PEOPLE = frozenset(
    {"styletalk-kristinoem", "styletalk-obama", "liveportrait-d6", "pcavs-00086", "retalking-1", "sadtalker-WDA_KatieHill_000", "iplap-129"}
)


def person_of(clip: Path) -> str:
    """A stable person id for a clip path (…/clips/<source>/<name>[.mp4])."""
    clip = Path(clip)
    source, stem = clip.parent.name, clip.stem if clip.is_file() or clip.suffix else clip.name
    key = f"{source}/{stem}"
    if key in _SAME_PERSON:
        return _SAME_PERSON[key]
    if source == "dreamtalk":
        return f"dreamtalk-{stem.split('_')[0]}"
    if source == "styletalk":
        match = re.match(r"(style_furious_talk\d|style_happyenglish|[A-Za-z]+?)_?clip", stem)
        name = match.group(1) if match else stem
        return f"styletalk-{name.lower().rstrip('_')}"
    if source == "pcavs":
        return f"pcavs-{stem.split('_')[-1]}"
    return f"{source}-{stem}"


def split_of(person: str) -> str:
    """'test' for the test group's people, 'val' for the fixed validation people, 'train' otherwise."""
    if person.split("-", 1)[0] in TEST_SOURCES:
        return "test"
    return "val" if person in VALIDATION_PEOPLE else "train"


def clips_of_split(clips: list[Path], split: str) -> list[Path]:
    """The clips whose person is in ``split`` ('train', 'val' or 'test')."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return [c for c in clips if split_of(person_of(c)) == split]


def validation_clips(clips: list[Path]) -> list[Path]:
    """The clips whose person is in the validation split."""
    return clips_of_split(clips, "val")


def test_group_clips(clips: list[Path]) -> list[Path]:
    """The clips of the test group (people never trained on nor used to pick a checkpoint)."""
    return clips_of_split(clips, "test")
