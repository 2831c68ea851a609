"""bench.motion_priors: the fit of the controller's motion priors and the per-frame payload it is fitted on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.motion_priors import PriorFit, fit_prior, payload_per_frame, payload_table
from codec.quantize import PRESETS_BY_NAME


def test_fit_prior_recovers_the_coefficients_of_an_exact_model() -> None:
    truth = PriorFit(2, (1.5, 0.4, 6.7, 0.39), 0.0)
    rows = [(k, f, truth.predict(k, f)) for k in (0, 4, 8, 12, 20) for f in (1, 2, 3, 4, 6, 8)]
    fit = fit_prior(2, rows)
    assert fit.coefficients == pytest.approx(truth.coefficients, abs=2e-3)
    assert fit.max_relative_error < 1e-3


def test_fit_prior_reports_its_worst_relative_error() -> None:
    rows = [(k, f, 2.0 + k + 6.0 / f) for k in (0, 4, 8, 12, 20) for f in (1, 2, 4)]
    rows[0] = (0, 1, rows[0][2] * 1.5)  # one point the model cannot follow
    fit = fit_prior(1, rows)
    assert 0.05 < fit.max_relative_error < 0.5


@pytest.mark.parametrize("rows", [[(0, 1, 1.0)] * 3, [(0, 1, 1.0), (4, 1, 2.0), (8, 2, 0.0), (12, 4, 3.0)]])
def test_fit_prior_refuses_too_few_or_non_positive_points(rows: list[tuple[int, int, float]]) -> None:
    with pytest.raises(ValueError):
        fit_prior(1, rows)


def test_payload_per_frame_skips_the_first_frames_and_the_flushed_last_packet() -> None:
    packets = [100, 100, 10, 10, 10, 3]  # two KEY packets, steady packets, a short flushed last one
    assert payload_per_frame(packets, frames_per_packet=2, skip_frames=4) == pytest.approx(10 / 2)
    assert payload_per_frame(packets, frames_per_packet=2, skip_frames=3) == pytest.approx(10 / 2)  # rounds up


def test_payload_per_frame_needs_a_packet_after_the_skip() -> None:
    with pytest.raises(ValueError, match="longer clips"):
        payload_per_frame([100, 5], frames_per_packet=1, skip_frames=2)


def test_the_prior_form_follows_the_packetizer_on_the_synthetic_trace() -> None:
    """``a + b·K + (c + d·K) / fpp`` fitted to the packetizer's output predicts every point within 25 %."""
    from codec.prediction import MotionDepacketizer, MotionPacketizer
    from codec.synthetic_trace import synthetic_trace, trace_timestamps_ms

    trace, stamps = synthetic_trace(250, 25.0, seed=5), trace_timestamps_ms(250, 25.0)
    rows = []
    for k in (4, 12, 20):
        for fpp in (1, 2, 4):
            packetizer, depacketizer = MotionPacketizer(1, 2, fpp), MotionDepacketizer()
            packetizer.set_num_keypoints(k)
            sizes = []
            for i, (motion, stamp) in enumerate(zip(trace, stamps)):
                packet = packetizer.push(motion, stamp)
                if packet is not None:
                    sizes.append(len(packet))
                    depacketizer.receive(packet)
                feedback = depacketizer.feedback()
                if i % 12 == 0 and feedback is not None:
                    packetizer.on_feedback(feedback)
            rows.append((k, fpp, payload_per_frame(sizes, fpp, skip_frames=20)))
    assert fit_prior(2, rows).max_relative_error < 0.25


@pytest.mark.pretrained
@pytest.mark.shared_data
def test_the_shipped_priors_follow_real_faces(shared_data: Path) -> None:
    """The controller's priors (fitted on 75 training people) predict 4 other training clips' mean payload within
    30 %: a change of the model, the quantizer or the bitstream that moves the payload fails this until
    ``python -m bench priors`` is re-run and ``_PRIORS`` updated."""
    from bench.clips import crop_clip, read_frames
    from bench.codecs.ours import OursFactory
    from codec.data.clips import list_clips
    from codec.data.split import clips_of_split, person_of
    from codec.face.crop import FaceCropper
    from sender.controller import Rung, prior_bytes_per_frame

    train = sorted(clips_of_split(list_clips(shared_data / "clips"), "train"))
    clips = []
    for path in train[1 :: max(1, len(train) // 4)][:4]:
        frames, fps = read_frames(path, 100, 25.0)
        cropper = FaceCropper(output_size=256, fps=fps)
        try:
            def crop(frame: np.ndarray) -> tuple[np.ndarray, bool]:
                result = cropper.crop(frame)
                return result.image, bool(result.face_found)

            clip = crop_clip(f"{path.parent.name}/{path.name}", person_of(path), frames, fps, crop)
        finally:
            cropper.close()
        if clip is not None:
            clips.append(clip)
    assert len(clips) >= 3, "too few clips with a face"
    table = payload_table(clips, OursFactory.load(None), ("default", "coarse"), (8, 20), (1, 3), skip_frames=38)
    for row in table:
        rung = Rung(row["frames_per_packet"], row["keypoints"], PRESETS_BY_NAME[row["preset"]].preset_id)
        assert prior_bytes_per_frame(rung) == pytest.approx(row["bytes_per_frame"], rel=0.3), row
