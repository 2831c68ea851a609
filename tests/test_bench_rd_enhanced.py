"""bench rd's enhancement rungs ("ours+enh"): bytes, wire, pictures, and their place in the sweep, with tiny models."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
import torch

from bench import report
from bench.codecs.base import BenchClip
from bench.codecs.datachannel import data_channel_wire_bytes
from bench.codecs.motion_transport import motion_wire_bytes
from bench.codecs.ours import OursCodec, OursFactory
from bench.codecs.ours_enhanced import EnhancementLayer, OursEnhancedCodec, enhanced_sweep, frame_bundle_bytes, varint_len
from bench.rd import RdConfig, RdInputError, run_rd, validate_config
from bench.synthetic_clip import synthetic_talking_head
from codec.enhancement.bundle import pack_bundle
from codec.enhancement.lowres_codec import LowResEncoder, is_key_frame
from codec.enhancement.picture_rate import PictureRate, rung_keypoints
from codec.model.config import ModelConfig
from codec.model.face_model import FaceVid2VidModel
from codec.model.wrappers import FrameSynthesizer, MotionEncoder

E = ModelConfig.preset("tiny-enh").enhancement_size  # 16
K = ModelConfig.preset("tiny-enh").num_keypoints  # 20
KE = rung_keypoints(K)  # what an enhanced rung sends beside its pictures: 5
FPS = 25.0


def _factory(preset: str, perturb: bool = False) -> OursFactory:
    torch.manual_seed(0)
    model = FaceVid2VidModel(ModelConfig.preset(preset)).eval()
    if perturb:  # a trained branch: its heads are no longer zero
        with torch.no_grad():
            for p in model.generator.enhancement.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return OursFactory(MotionEncoder(model), FrameSynthesizer(model), {"model_id": f"test-{preset}", "model_version": "1"})


def _motion_packet(size: int) -> bytes:
    """Stand-in bytes of a motion packet of ``size`` bytes (its magic first, as pack_bundle checks)."""
    return b"\xa1" + b"\0" * (size - 1)


@pytest.fixture(scope="module")
def clip() -> BenchClip:
    return BenchClip("enh", "synthetic", FPS, synthetic_talking_head(8, 64))


@pytest.fixture(scope="module")
def zero_branch() -> OursFactory:
    return _factory("tiny-enh")


@pytest.fixture(scope="module")
def trained_branch() -> OursFactory:
    return _factory("tiny-enh", perturb=True)


def test_varint_and_bundle_sizes() -> None:
    assert [varint_len(v) for v in (0, 1, 127, 128, 16383, 16384)] == [1, 1, 1, 2, 2, 3]
    assert frame_bundle_bytes(12, 1) == len(pack_bundle(_motion_packet(12), b"e", False)) == 12 + 1 + 4
    assert frame_bundle_bytes(30, 200) == len(pack_bundle(_motion_packet(30), b"e" * 200, True)) == 30 + 200 + 5
    assert frame_bundle_bytes(0, 300) == 1 + 1 + 1 + 2 + 300  # the stream start's key picture: no motion part
    with pytest.raises(ValueError, match="got -1"):
        varint_len(-1)


def test_enhanced_point_sends_motion_and_pictures_in_one_bundle_per_frame(zero_branch: OursFactory, clip: BenchClip) -> None:
    codec = OursEnhancedCodec(zero_branch, "default", PictureRate(40), EnhancementLayer(E))
    motion_only = OursCodec(zero_branch, KE, "default", 1)
    info, reconstruction = codec.run(clip)
    motion_info, _ = motion_only.run(clip)
    with LowResEncoder(E, 40, FPS) as encoder:  # the same stream, coded afresh
        pictures = [encoder.encode(frame) for frame in clip.frames]
    motion = motion_only.stream(clip).packets
    assert len(motion) == clip.num_driving
    assert info.payload_bytes == motion_info.payload_bytes + sum(len(p) for p in pictures[1:])
    assert info.start_payload_bytes == motion_info.start_payload_bytes + len(pictures[0])
    bundles = [pack_bundle(_motion_packet(m), p, is_key_frame(p)) for m, p in zip(motion, pictures[1:])]  # frames 1..N-1
    assert info.wire_bytes == sum(motion_wire_bytes(len(b)) for b in bundles)  # RTP, as the call sends them
    key_bytes = len(pictures[0])
    assert 0 < key_bytes < 128 * 128
    start_message = 1 + 1 + 1 + (1 if key_bytes < 128 else 2) + key_bytes  # 0xB1, varint L = 0, flags, varint M, picture
    assert info.start_wire_bytes == motion_info.start_wire_bytes + data_channel_wire_bytes(start_message)
    assert info.packets == clip.num_driving
    assert info.encode_ms.shape == (clip.num_driving,) and np.all(info.encode_ms > zero_branch.encoded(clip).encode_ms)
    assert info.decode_ms.shape == (clip.num_driving,) and reconstruction.shape == (clip.num_driving, 64, 64, 3)
    assert codec.name == f"ours+enh K={KE} default 1f/packet enh{E} qp40"
    params = codec.params()
    assert params["frames_per_packet"] == 1 and params["enhancement_qp"] == 40 and params["enhancement_size"] == E
    assert "frame bundle v1" in str(params["transport"])


def test_zero_heads_render_as_motion_only_a_trained_branch_does_not(
    zero_branch: OursFactory, trained_branch: OursFactory, clip: BenchClip
) -> None:
    shown = np.array([0, 3, 6])
    for factory, same in ((zero_branch, True), (trained_branch, False)):
        (codec,) = enhanced_sweep(factory, (PictureRate(40),))
        _, enhanced = codec.run(clip, shown)
        _, plain = OursCodec(factory, KE, "default", 1).run(clip, shown)
        assert enhanced.shape == plain.shape == (3, 64, 64, 3)
        assert np.array_equal(enhanced, plain) is same


def test_a_picture_every_nth_frame_and_the_newest_one_between(zero_branch: OursFactory, trained_branch: OursFactory,
                                                               clip: BenchClip) -> None:
    every, third = enhanced_sweep(zero_branch, (PictureRate(40), PictureRate(40, 3)))
    assert third.name.endswith(f"enh{E} qp40/3") and third.params()["enhancement_interval"] == 3
    coded = third.layer.coded(clip, PictureRate(40, 3))
    sizes = np.array(coded.sizes, dtype=object)  # python ints, as the codec sees them
    assert all(s > 0 for s in sizes[::3]) and not any(sizes[np.arange(clip.frames.shape[0]) % 3 > 0])
    for i in range(1, clip.frames.shape[0]):  # a frame without a picture renders with the newest one
        if i % 3:
            assert np.array_equal(coded.pictures[i], coded.pictures[i - i % 3])
    with LowResEncoder(E, 40, FPS / 3) as encoder:  # the same stream, coded afresh at a third of the rate
        pictures = [encoder.encode(frame) for frame in clip.frames[::3]]
    assert [len(p) for p in pictures] == list(sizes[::3])
    info, _ = third.run(clip)
    motion = OursCodec(zero_branch, KE, "default", 1).stream(clip).packets
    messages = [frame_bundle_bytes(m, s) if s else m for m, s in zip(motion, sizes[1:])]  # frames 1..N-1
    assert info.wire_bytes == sum(motion_wire_bytes(size) for size in messages)
    assert info.payload_bytes == sum(motion) + int(sizes[1:].sum())
    assert info.payload_bytes < every.run(clip)[0].payload_bytes
    # a trained branch renders the in-between frames with the stale picture, not from motion alone
    (stale,) = enhanced_sweep(trained_branch, (PictureRate(40, 3),))
    _, with_stale = stale.run(clip, np.array([0]))  # driving frame 1: frame 0's picture
    _, plain = OursCodec(trained_branch, K, "default", 1).run(clip, np.array([0]))
    assert not np.array_equal(with_stale, plain)


def test_lower_qp_costs_more_bytes(zero_branch: OursFactory, clip: BenchClip) -> None:
    fine, coarse = (codec.run(clip, np.array([0]))[0] for codec in enhanced_sweep(zero_branch, (PictureRate(20), PictureRate(63))))
    assert fine.payload_bytes > coarse.payload_bytes and fine.start_payload_bytes > coarse.start_payload_bytes
    assert fine.wire_bytes >= coarse.wire_bytes


def test_a_motion_only_model_has_no_rungs_and_qps_are_checked() -> None:
    with pytest.raises(ValueError, match="no enhancement branch"):
        enhanced_sweep(_factory("tiny"), (PictureRate(40),))
    for bad, said in ((("0",), "qp must be in 1..63"), (("40", "64"), "qp must be in 1..63"),
                      (("48/5",), "every 1st to 4th frame"), (("fast",), r"\[SIZE:\]QP\[/N\]")):
        with pytest.raises(RdInputError, match=f"--enhancement-rungs: .*{said}"):
            validate_config(RdConfig(enhancement_rungs=bad))


def _rd_config() -> RdConfig:
    return RdConfig(synthetic=True, frames=4, score_every=1, identity_every=100, size=64, codecs=("ours",),
                    keypoints=(20,), presets=("coarse",), frames_per_packet=(1,), enhancement_rungs=("40", "63/2"))


def test_rd_sweep_adds_the_rungs_for_a_model_with_the_branch(zero_branch: OursFactory) -> None:
    result: dict[str, Any] = run_rd(_rd_config(), show_progress=False, ours=zero_branch)
    points = result["points"]
    ours = [p for p in points if p["codec"] == "ours"]
    enhanced = [p for p in points if p["codec"] == "ours+enh"]
    assert [p["setting"] for p in enhanced] == [f"K={KE} default 1f/packet enh{E} {rung}" for rung in ("qp40", "qp63/2")]
    assert [p["params"]["enhancement_interval"] for p in enhanced] == [1, 2]
    assert points[-1]["codec"] == "no-motion floor"
    for point in enhanced:
        assert set(point) == set(ours[0])  # every field make_point and the floor gap give
        assert point["params"]["frames_per_packet"] == 1
        assert point["wire_kbps"] > point["payload_kbps"] > 0 and np.isfinite(point["psnr"])
    assert result["model"]["enhancement_size"] == E
    assert result["headline"]["rate"] == report.HEADLINE_RATE and result["headline_all_points"]["rate"] == report.HEADLINE_RATE
    assert "ours+enh" in report.markdown_table(points) and report.results_markdown(result)


def test_rd_sweep_without_the_branch_has_no_rungs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="bench.rd"):
        result = run_rd(_rd_config(), show_progress=False, ours=_factory("tiny"))
    assert [p["codec"] for p in result["points"]] == ["ours", "no-motion floor"]
    assert "the model has no enhancement branch: no enhancement rungs" in caplog.text


def test_rungs_with_pictures_larger_than_the_crops_are_left_out() -> None:
    rates = (PictureRate(48, 1, 96), PictureRate(40), PictureRate(55, 3))
    kept = enhanced_sweep(_factory("tiny-enh"), rates, crop_size=64)
    assert [codec.rate for codec in kept] == [PictureRate(40), PictureRate(55, 3)]
    assert [codec.rate for codec in enhanced_sweep(_factory("tiny-enh"), rates, crop_size=128)] == list(rates)


def test_a_picture_at_the_outputs_side_every_frame_is_shown_as_decoded(clip: BenchClip) -> None:
    """A model whose E is its output's side (64²): every frame of a qp-40 rung is its decoded picture
    (codec.enhancement.passthrough), not a render; with a picture every 2nd frame they are rendered."""
    import dataclasses

    torch.manual_seed(0)
    model = FaceVid2VidModel(dataclasses.replace(ModelConfig.preset("tiny-enh"), enhancement_size=64)).eval()
    factory = OursFactory(MotionEncoder(model), FrameSynthesizer(model), {"model_id": "test-e64", "model_version": "1"})
    layer = EnhancementLayer(64)
    _, shown = OursEnhancedCodec(factory, "default", PictureRate(40), layer).run(clip)
    pictures = layer.coded(clip, PictureRate(40)).pictures
    assert np.array_equal(shown, pictures[1:])
    _, rendered = OursEnhancedCodec(factory, "default", PictureRate(40, 2), layer).run(clip)
    assert not np.array_equal(rendered[::2], layer.coded(clip, PictureRate(40, 2)).pictures[1::2])
