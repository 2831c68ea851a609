"""ModelConfig: the architecture of one preset (saved inside every checkpoint), and the presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Landmark guidance: keypoint k is pulled (during training, with a decaying weight) towards this
# mediapipe face-mesh landmark, so that keypoints spread over the parts that move (mouth, eyes,
# brows, jaw) instead of collapsing. For K < 20 the first K are used.
KEYPOINT_LANDMARK_INDICES: tuple[int, ...] = (
    61, 291, 0, 17, 13, 14,  # mouth: right/left corner, upper/lower lip outer, upper/lower lip inner
    159, 145, 386, 374,  # eyelids: right upper/lower, left upper/lower
    33, 263,  # outer eye corners
    105, 334,  # brows
    1, 168,  # nose tip, nose bridge
    152, 172, 397,  # chin, right and left jaw
    10,  # forehead
)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters. Field comments are the documentation."""

    name: str = "cpu"  # preset name
    image_size: int = 256  # input and output side in pixels
    num_keypoints: int = 20  # K
    pose_bins: int = 66  # yaw/pitch/roll classification bins (paper: 66 bins of 3°)
    pose_bin_deg: float = 3.0
    pose_input_size: int = 128  # H and L see the image at this size
    estimator_width: int = 32  # base width of H and L
    feature_channels: int = 64  # F's features at image_size/4 (the "volume" the warp moves)
    skip_channels: int = 16  # F's skip features at image_size/2
    motion_size: int = 32  # M predicts masks and occlusion at this resolution
    motion_width: int = 64  # M's hourglass base width
    decoder_blocks: int = 4  # G's residual blocks at image_size/4
    upsample_channels: int = 0  # G's width at image_size/2 (0: max(32, 2 · skip_channels), the shipped models')
    depthwise: bool = False  # depthwise-separable convs or dense 3x3. Measured here (2 threads): depthwise
    # renders 29 ms vs 40 ms at 256², but its backward pass is ~6x slower on CPU (7.4 s vs 1.2 s per
    # batch-8 training step), which a CPU training budget cannot afford; so dense by default.
    heatmap_variance: float = 0.01  # Gaussian keypoint heatmaps (normalised coordinates)
    volume_depth: int = 0  # 0: the 2D-projected pipeline (F gives 2D features, M 2D flows from the 3D keypoints).
    # > 0: the paper's 3D pipeline: F lifts the image to a (volume_channels, volume_depth, S/4, S/4) volume,
    # M predicts 3D flows, masks and occlusion over it, G projects the warped volume to 2D (paper Sec. 3.1-3.2).
    volume_channels: int = 32  # C of the 3D feature volume (paper: 32 × 16 depth at 64²)
    expression_spatial_channels: int = 0  # 0: H regresses δ from globally pooled features only (weights
    # shipped before this field). > 0: plus a residual head over H's deep map at pose_input_size/16 with its
    # spatial layout kept (1×1 conv to this many channels, flatten, linear): lips and eyelids are local.
    enhancement_size: int = 0  # 0: motion only. > 0: G also reads the enhancement layer, the driving face crop at
    # this side (coded by a real video codec, codec.enhancement), through a zero-initialised branch
    # (codec/model/enhancement_branch.py); without the picture it renders from motion alone.
    enhancement_channels: int = 32  # width of that branch
    enhancement_large_correction: bool = False  # a second picture correction for pictures larger than E (the ladder's
    # top rungs send 96²-256²), fitted on its own by codec.train.fit_correction; False: one correction for every side.
    eyelid_branch: bool = False  # G also reads each eye's opening from the reference's and the driving keypoints
    # (codec/model/eyelid_branch.py: M's 32² warp cannot close an eyelid); zero-initialised, nothing more is sent.
    eyelid_warp: float = 0.0  # > 0: the reference's pixels are sampled with its eyes opened or closed to the driver's
    # opening, read from the keypoints, by this gain (codec/model/eyelid_warp.py; no weights). 0: off. Not part of
    # the architecture: a model file's config may switch it on.
    landmark_refinement: float = 0.0  # the fraction a the generator was trained to render keypoints refined with
    # (codec/model/landmark_refinement.py): the sender moves each keypoint a of the way to its guidance landmark's
    # motion. 0: not trained for it, nothing is refined. Not part of the architecture.

    @staticmethod
    def preset(name: str) -> ModelConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[name]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(values: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {unknown}: the checkpoint is from a newer version")
        return ModelConfig(**values)


PRESETS: dict[str, ModelConfig] = {
    # Real time on 2 CPU cores at 256²: 2D motion field at 32², dense 3x3 convs (trainable on a CPU).
    "cpu": ModelConfig(expression_spatial_channels=16),
    # The cpu preset with the enhancement branch for a 64² picture (grown from cpu weights: same outputs without it).
    # 64² rather than 48²: on the validation people, upscaled SVT-AV1 pictures at 64² give more face PSNR per bit
    # at every rate from 4 to 13 kbps (26.0 dB at 5.4 kbps against 25.4 interpolated at 48²).
    "cpu-enh64": ModelConfig(name="cpu-enh64", expression_spatial_channels=16, enhancement_size=64),
    # cpu-enh64 plus the eyelid branch (grown from it: the same motion, blinks drawn by G).
    "cpu-enh64-eyes": ModelConfig(name="cpu-enh64-eyes", expression_spatial_channels=16, enhancement_size=64,
                                  eyelid_branch=True),
    # Browser-class receiver networks (issue 24): the cpu preset's L and H (the same motion: a sender with the cpu
    # model drives it), with F, M and G narrower (features 32, skip 8, M 16 wide, 2 decoder blocks, 16 at S/2),
    # distilled from the shipped model (python -m codec.train.distill). In onnxruntime-web WASM (2 threads, this
    # machine) its render measured 43-55 ms against 185-197 ms for the cpu preset's (same harness, random inputs).
    "web": ModelConfig(name="web", expression_spatial_channels=16, feature_channels=32, skip_channels=8, motion_width=16,
                       decoder_blocks=2, upsample_channels=16),
    # Narrower still (features 16, 8 at S/2), for browsers the web preset leaves short of the frame rate: 33 ms against
    # 48 ms for web's render in the WASM harness (random inputs), but within the noise of web in the page (38.8 against
    # 36.2 ms, load-time timing), where fixed costs (the 256² warps, I/O) weigh more.
    "web-small": ModelConfig(name="web-small", expression_spatial_channels=16, feature_channels=16, skip_channels=8,
                             motion_width=16, decoder_blocks=2, upsample_channels=8),
    # Tiny, for tests only.
    "tiny": ModelConfig(name="tiny", image_size=64, pose_input_size=64, estimator_width=8, feature_channels=16,
                        skip_channels=8, motion_size=16, motion_width=16, decoder_blocks=1,
                        expression_spatial_channels=4),
    "tiny-eyes": ModelConfig(name="tiny-eyes", image_size=64, pose_input_size=64, estimator_width=8, feature_channels=16,
                             skip_channels=8, motion_size=16, motion_width=16, decoder_blocks=1,
                             expression_spatial_channels=4, eyelid_branch=True),
    "tiny-enh": ModelConfig(name="tiny-enh", image_size=64, pose_input_size=64, estimator_width=8, feature_channels=16,
                            skip_channels=8, motion_size=16, motion_width=16, decoder_blocks=1,
                            expression_spatial_channels=4, enhancement_size=16, enhancement_channels=8),
    # Tiny 3D-volume pipeline, for tests only.
    "tiny-3d": ModelConfig(name="tiny-3d", image_size=64, pose_input_size=64, estimator_width=8, feature_channels=16,
                           skip_channels=8, motion_size=16, motion_width=8, decoder_blocks=1, volume_depth=4,
                           volume_channels=4),
    # The paper's 3D pipeline and sizes for GPU users: a 32 × 16 × 64 × 64 appearance volume, a 3D motion
    # hourglass at 16 × 64 × 64, a 256-channel 2D decoder with 6 residual blocks.
    "paper-256": ModelConfig(name="paper-256", estimator_width=64, feature_channels=256, skip_channels=64,
                             motion_size=64, motion_width=64, decoder_blocks=6, depthwise=False, pose_input_size=256,
                             volume_depth=16, volume_channels=32, expression_spatial_channels=16),
}
