"""Training hyper-parameters: one frozen dataclass whose field comments are the CLI's help text."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved in every checkpoint)."""

    preset: str = "cpu"  # ModelConfig preset of the generator (codec.model)
    data: str = ""  # prepared dataset folder (manifest.json + clips/)
    seed: int = 0  # seeds torch, numpy and the validation pairs
    batch_size: int = 8
    max_steps: int = 200_000  # horizon of the cosine learning-rate schedule; training stops there
    lr: float = 2e-4  # generator Adam learning rate after warm-up
    lr_d: float = 2e-4  # discriminator Adam learning rate
    betas: tuple[float, float] = (0.5, 0.999)
    warmup_steps: int = 300  # linear learning-rate warm-up
    schedule_start_step: int = 0  # the learning-rate schedule (warm-up, then cosine to max_steps) starts at this step
    generator_frozen_until_step: int = 0  # only the discriminator trains before this step (a fresh D catching up)
    min_lr_fraction: float = 0.1  # the cosine schedule ends at lr * this
    grad_clip: float = 5.0  # generator gradient-norm clip (0 = off)
    landmark_refinement: float = 0.0  # render training frames from driving keypoints moved this fraction of the way to their landmarks' motion, as the sender does (codec/model/landmark_refinement.py); recorded in the model's config
    ema_decay: float = 0.0  # keep a moving average of G's weights, this decay per step (0 = off); validated, saved as best
    enhancement_drop: float = 0.5  # presets with an enhancement branch: share of training pairs rendered without the picture (motion only)
    enhancement_stale: float = 0.0  # presets with an enhancement branch: share of pairs given the picture of a frame 1-2 earlier (a call's picture interval)
    enhancement_qps: str = "40,48,55,63"  # presets with an enhancement branch: the coded pictures' qps drawn from (python -m codec.data enhance)
    enhancement_lr_scale: float = 10.0  # presets with an enhancement branch: its parameters learn at lr * this (new, small, from zero)
    enhancement_val_qp: int = 55  # presets with an enhancement branch: the qp of validation's enhanced pass
    eye_pair_fraction: float = 0.0  # share of training pairs whose driving frame is drawn for its eyes' opening differing from the reference's (blinks)
    freeze_motion: bool = False  # keep L and H (the keypoint networks) as they are: a fine-tune of F, M and G only, whose model reads and makes the same motion (ship.py --motion-model-from keeps the motion id, so senders and the distilled web receivers stay compatible)
    # loss weights
    w_l1: float = 10.0  # multi-scale L1 (pyramid full, 1/2, 1/4, 1/8)
    w_ssim: float = 5.0  # 1 - SSIM
    w_region_l1: float = 0.0  # L1 inside boxes around the driving frame's eyes and mouth (0 = off)
    w_feature_matching: float = 10.0  # discriminator feature matching
    w_perceptual: float = 10.0  # VGG19 multi-scale perceptual (only with --vgg19)
    w_gan: float = 0.1  # hinge GAN, generator side
    gan_start_step: int = 3000  # the generator's GAN term is off before this step (D trains from step 0)
    w_equivariance: float = 10.0
    w_keypoint_prior: float = 10.0
    keypoint_min_distance: float = 0.0  # D_t of the keypoint prior (squared distance); 0 = from the teacher layout
    keypoint_depth_target: float = 0.33  # z_t of the keypoint prior
    w_head_pose: float = 0.1  # per degree of per-angle L1 against the pose teacher
    w_deformation: float = 1.0  # |δ|₁
    w_landmark: float = 10.0  # landmark guidance at step 0
    landmark_halflife_steps: int = 6000  # the guidance weight halves every this many steps ...
    landmark_floor_fraction: float = 0.1  # ... but never drops below w_landmark * this
    w_landmark_motion: float = 10.0  # keypoint motion (reference -> driving) vs the landmarks' motion; same decay
    # data
    first_frame_fraction: float = 0.25
    flip_probability: float = 0.5
    color_jitter: float = 0.1  # brightness, contrast and saturation factors in 1 ± this
    # cadence
    checkpoint_minutes: float = 5.0  # RUN/last.safetensors every this many wall minutes
    validate_minutes: float = 15.0  # validation every this many wall minutes of training ...
    validate_steps: int = 0  # ... or every this many steps when > 0
    validation_pairs: int = 150
    log_steps: int = 20  # training-loss lines in RUN/log.jsonl every this many steps
    vgg19: str = ""  # optional local VGG19 weights file (torchvision format); empty = not used


# Fields a resumed run may change; everything else comes from the checkpoint.
# A new learning-rate schedule (lr, schedule_start_step, warmup_steps, min_lr_fraction) continues a finished run
# with its discriminator and Adam state (a warm restart).
RESUMABLE_OVERRIDES = ("max_steps", "checkpoint_minutes", "validate_minutes", "validate_steps", "log_steps",
                       "gan_start_step", "w_gan", "landmark_floor_fraction", "data",
                       "w_landmark_motion", "lr", "schedule_start_step", "warmup_steps", "min_lr_fraction",
                       "ema_decay", "landmark_refinement", "w_region_l1", "enhancement_drop", "enhancement_stale",
                       "eye_pair_fraction")


def _help_texts() -> dict[str, str]:
    """Field comments of TrainConfig, read from its source, as help strings."""
    import inspect

    helps: dict[str, str] = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        line = line.strip()
        if ":" in line and "#" in line and not line.startswith("#"):
            name = line.split(":", 1)[0].strip()
            helps[name] = line.split("#", 1)[1].strip()
    return helps


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One --flag per TrainConfig field, default None (so that 'given on the command line' is visible)."""
    helps = _help_texts()
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = hints[field.name]
        default = field.default
        help_text = f"{helps.get(field.name, '')} (default {default})"
        if kind == tuple[float, float]:
            parser.add_argument(flag, type=float, nargs=2, default=None, help=help_text)
        elif kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=None, help=help_text)


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> tuple[TrainConfig, list[str]]:
    """A TrainConfig from ``base`` (defaults when None) with the flags given; returns it and the given names."""
    base = base or TrainConfig()
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if getattr(args, f.name) is not None}
    if "betas" in given:
        given["betas"] = tuple(given["betas"])
    return dataclasses.replace(base, **given), sorted(given)


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown training config fields {sorted(unknown)} (written by a newer version?)")
    values = dict(values)
    values.setdefault("w_landmark_motion", 0.0)  # runs saved before this term existed trained without it
    values.setdefault("ema_decay", 0.0)  # runs saved before the weight average existed kept none
    values.setdefault("landmark_refinement", 0.0)  # runs saved before it rendered from H's own keypoints
    values.setdefault("w_region_l1", 0.0)  # runs saved before the eye/mouth term existed trained without it
    for name in ("enhancement_drop", "enhancement_qps", "enhancement_val_qp", "enhancement_stale", "freeze_motion",
                 "eye_pair_fraction"):  # runs saved before these existed
        values.setdefault(name, getattr(TrainConfig, name))
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    return TrainConfig(**values)


def parse_qps(text: str) -> tuple[int, ...]:
    """"40,48,55" -> (40, 48, 55); ValueError naming the flag on anything else."""
    try:
        qps = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--enhancement-qps must be comma-separated integers, got {text!r}") from None
    if not qps or not all(0 < q <= 63 for q in qps):
        raise ValueError(f"--enhancement-qps must name qps in 1..63, got {text!r}")
    return qps
