"""Train the face-vid2vid generator on a prepared dataset (CPU or CUDA), resumable.

    python -m codec.train --preset cpu --data /work/prepared/s256 --run /work/runs/cpu1
    python -m codec.train --run /work/runs/cpu1 --resume         # continue after a kill
    python -m codec.train --run /work/runs/cpu1 --resume --max-steps 400000   # extend
    python -m codec.train --run /work/runs/ft1 --resume --max-steps 13400 --lr 2e-5 --schedule-start-step 10100 --warmup-steps 100   # warm restart: a new schedule, same D and Adam state
    python -m codec.train --run /work/runs/cpu2 --init /work/runs/cpu1/last.safetensors   # grow a model
    python -m codec.train --run /work/runs/ft1 --from-model codec/weights/cpu.safetensors --data /work/prepared/s256 --max-steps 12000 --lr 5e-5   # fine-tune

RUN/ holds: last.safetensors (full training state, every --checkpoint-minutes, atomic),
best.safetensors (generator only, best validation score among checkpoints that pass the motion
gates), log.jsonl (training-loss and validation lines), grid_<step>.png (reference | driving |
output | occlusion, keypoints drawn), metrics.png, floors.json (cached floors), config.json.
With --ema-decay the training state also keeps a moving average of the generator's weights; validation,
grids and best.safetensors then use the average (the raw weights keep training).
CPU-hours are process CPU time (time.process_time: user + system over all threads).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import math
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from codec.face.regions import LEFT_EYE, MOUTH, RIGHT_EYE
from codec.model import FaceVid2VidModel, ModelConfig, checkpoint
from codec.model.loading import pick_device, pick_precision
from codec.train import losses
from codec.train import model_io
from codec.train.config import (
    RESUMABLE_OVERRIDES,
    TrainConfig,
    add_config_arguments,
    config_from_args,
    config_from_dict,
    config_to_dict,
    parse_qps,
)
from codec.train.dataset import PairBatch, PairSampler, PreparedData, SamplerConfig, validation_pairs
from codec.train.perceptual import VGG19Features, load_vgg19, perceptual_loss
from codec.train.plots import plot_metrics
from codec.train.state import Counters, grow_from, load_state, read_metadata, save_state, start_from_model

logger = logging.getLogger("codec.train")


def learning_rate_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine from 1 to min_lr_fraction at max_steps, counted from schedule_start_step."""
    step = max(0, step - config.schedule_start_step)
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    horizon = config.max_steps - config.schedule_start_step - config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, horizon))
    return config.min_lr_fraction + (1 - config.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


def landmark_decay(step: int, config: TrainConfig) -> float:
    """The landmark terms' weight factor: halves every landmark_halflife_steps, floored at landmark_floor_fraction."""
    return max(config.landmark_floor_fraction, 0.5 ** (step / max(1, config.landmark_halflife_steps)))


def keypoint_min_distance(config: TrainConfig, data: PreparedData, landmark_indices: torch.Tensor) -> float:
    """D_t of the keypoint prior: as configured, or 0.8² × the smallest squared distance between the
    guidance landmarks in the mean teacher layout (so that the prior does not fight the guidance)."""
    if config.keypoint_min_distance > 0:
        return config.keypoint_min_distance
    layouts = [clip.landmarks[clip.usable[:: max(1, clip.usable.size // 20)]] for clip in data.clips]
    mean = np.concatenate(layouts).mean(0)[landmark_indices.numpy(), :2] / data.size * 2 - 1  # (K, 2)
    dist_sq = ((mean[:, None] - mean[None]) ** 2).sum(-1) + np.eye(len(mean)) * 1e9
    return float(min(0.1, 0.64 * dist_sq.min()))


def resolve_precision(name: str, device: torch.device) -> str:
    """The inference rule (codec.model.loading.pick_precision: bf16 autocast on a CPU with native bf16, 1.6x
    faster G steps measured on a Zen 4 core), except that 'auto' on CUDA trains in fp32 for the GAN's stability."""
    if name == "auto" and device.type == "cuda":
        return "fp32"
    return pick_precision(name, device)


class Trainer:
    """Holds the networks, optimizers and data; one ``step`` is one D update and one G update."""

    def __init__(self, config: TrainConfig, run: Path, device: torch.device, precision: str = "fp32") -> None:
        self.config = config
        self.precision = precision
        self.run = run
        self.device = device
        self.rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        enhancement_size = ModelConfig.preset(config.preset).enhancement_size
        qps = parse_qps(config.enhancement_qps) if enhancement_size else ()
        self.train_data = PreparedData(config.data, "train", enhancement_size=enhancement_size, enhancement_qps=qps)
        self.val_data = PreparedData(config.data, "val", enhancement_size=enhancement_size,
                                     enhancement_qps=(config.enhancement_val_qp,) if enhancement_size else ())
        if self.train_data.size != self.val_data.size:
            raise ValueError("train and val frames differ in size")
        self.sampler = PairSampler(self.train_data, SamplerConfig(
            batch_size=config.batch_size, first_frame_fraction=config.first_frame_fraction,
            flip_probability=config.flip_probability, brightness=config.color_jitter,
            contrast=config.color_jitter, saturation=config.color_jitter, enhancement_drop=config.enhancement_drop,
            enhancement_stale=config.enhancement_stale, eye_pair_fraction=config.eye_pair_fraction))
        self.model = model_io.build_generator(config.preset, self.train_data.size, config.landmark_refinement).to(device)
        if config.freeze_motion:  # L and H keep their weights (GroupNorm: no running statistics to keep either)
            self.model.canonical_keypoints.requires_grad_(False)
            self.model.pose_expression.requires_grad_(False)
        self.disc = model_io.build_discriminator(self.model).to(device)
        self.opt_g = torch.optim.Adam(self.generator_param_groups(), lr=config.lr, betas=config.betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=config.lr_d, betas=config.betas)
        self.landmark_indices = model_io.landmark_indices(self.model)
        self.expression_regions = [torch.as_tensor(r) for r in (LEFT_EYE, RIGHT_EYE, MOUTH)]  # region_l1's boxes
        self.kp_min_distance = keypoint_min_distance(config, self.train_data, self.landmark_indices)
        self.vgg: VGG19Features | None = load_vgg19(config.vgg19).to(device) if config.vgg19 else None
        self.counters = Counters(0, 0.0, 0.0)
        self.ema: FaceVid2VidModel | None = None
        if config.ema_decay > 0:
            self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        logger.info("generator %.2f M parameters, discriminator %.2f M; keypoint prior D_t %.4f; reconstruction: %s",
                    sum(p.numel() for p in self.model.parameters()) / 1e6,
                    sum(p.numel() for p in self.disc.parameters()) / 1e6, self.kp_min_distance,
                    "VGG19 perceptual + L1 pyramid + SSIM + D feature matching" if self.vgg is not None
                    else "no VGG19 weights: L1 pyramid + SSIM + D feature matching")

    def generator_param_groups(self) -> list[dict[str, Any]]:
        """G's parameters; the enhancement and eyelid branches' (new, from zero) in a group of their own at
        lr × enhancement_lr_scale; only those that train (``freeze_motion``: not L's and H's)."""
        generator = self.model.generator
        branch = [m for m in (generator.enhancement, generator.correction, generator.eyelids) if m is not None]
        branch_ids = {id(p) for m in branch for p in m.parameters()}
        rest = [p for p in self.model.parameters() if id(p) not in branch_ids and p.requires_grad]
        groups: list[dict[str, Any]] = [{"params": rest, "lr_scale": 1.0}]
        if branch_ids:
            groups.append({"params": [p for m in branch for p in m.parameters()],
                           "lr_scale": self.config.enhancement_lr_scale})
        return groups

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """Forward passes in bf16 where the precision says so (losses and optimizer stay fp32)."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def evaluated_model(self) -> FaceVid2VidModel:
        """What validation scores and best.safetensors / shipping take: the weight average when kept."""
        return self.ema if self.ema is not None else self.model

    def reset_ema(self) -> None:
        """Start the weight average at the current weights (after loading them from elsewhere)."""
        if self.ema is not None:
            self.ema.load_state_dict(self.model.state_dict())

    @torch.no_grad()
    def update_ema(self) -> None:
        """average ← decay · average + (1 − decay) · weights; buffers (normalisation statistics) are copied."""
        if self.ema is None:
            return
        decay = self.config.ema_decay
        for average, current in zip(self.ema.parameters(), self.model.parameters(), strict=True):
            average.lerp_(current.detach(), 1.0 - decay)
        for average, current in zip(self.ema.buffers(), self.model.buffers(), strict=True):
            average.copy_(current)

    @property
    def model_config(self) -> dict[str, Any]:
        return model_io.generator_config_dict(self.model)

    def set_learning_rates(self, step: int) -> float:
        factor = learning_rate_factor(step, self.config)
        for group in self.opt_g.param_groups:
            group["lr"] = self.config.lr * factor * group.get("lr_scale", 1.0)
        for group in self.opt_d.param_groups:
            group["lr"] = self.config.lr_d * factor
        return factor

    def step(self, batch: PairBatch, step: int) -> dict[str, float]:
        """One discriminator and one generator update (only the discriminator's before
        generator_frozen_until_step); returns every loss term (unweighted) and totals."""
        cfg = self.config
        frozen = step < cfg.generator_frozen_until_step
        self.model.train(not frozen)  # frozen: not even normalisation statistics change
        self.disc.train()
        lr_factor = self.set_learning_rates(step)
        with self.autocast(), torch.no_grad() if frozen else contextlib.nullcontext():
            out = model_io.forward(self.model, batch)
        with self.autocast():
            # discriminator: hinge on real driving frames vs detached outputs
            real_logits, _ = model_io.discriminate(self.disc, batch.drv)
            fake_logits, _ = model_io.discriminate(self.disc, out.image.detach())
        loss_d = losses.hinge_d_loss(real_logits, fake_logits)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        if frozen:
            return {"loss_d": float(loss_d.detach()), "lr_factor": lr_factor, "generator_frozen": 1.0}

        # generator
        terms: dict[str, torch.Tensor] = {}
        weights: dict[str, float] = {}
        terms["l1"], weights["l1"] = losses.pyramid_l1(out.image, batch.drv), cfg.w_l1
        terms["ssim"], weights["ssim"] = losses.ssim_loss(out.image, batch.drv), cfg.w_ssim
        if cfg.w_region_l1 > 0:
            mask = losses.region_boxes(batch.drv_landmarks, self.expression_regions, out.image.shape[-1])  # (B, 1, H, W)
            terms["region_l1"], weights["region_l1"] = losses.region_l1(out.image, batch.drv, mask), cfg.w_region_l1
        if self.vgg is not None:
            terms["perceptual"], weights["perceptual"] = perceptual_loss(self.vgg, out.image, batch.drv), cfg.w_perceptual
        self.disc.requires_grad_(False)
        with self.autocast():
            fake_logits, fake_features = model_io.discriminate(self.disc, out.image)
            with torch.no_grad():
                _, real_features = model_io.discriminate(self.disc, batch.drv)
        self.disc.requires_grad_(True)
        terms["feature_matching"] = losses.feature_matching_loss(real_features, fake_features)
        weights["feature_matching"] = cfg.w_feature_matching
        terms["gan"] = losses.hinge_g_loss(fake_logits)
        weights["gan"] = cfg.w_gan if step >= cfg.gan_start_step else 0.0
        # equivariance: keypoints of an affinely warped driving frame move with the warp
        theta = losses.random_affine(batch.drv.shape[0], device=self.device)
        with self.autocast():
            kp_warped = model_io.image_keypoints(self.model, losses.warp_images(batch.drv, theta))
        terms["equivariance"] = losses.equivariance_loss(out.kp_drv, kp_warped, theta)
        weights["equivariance"] = cfg.w_equivariance
        terms["keypoint_prior"] = 0.5 * (
            losses.keypoint_prior_loss(out.kp_drv, self.kp_min_distance, cfg.keypoint_depth_target)
            + losses.keypoint_prior_loss(out.kp_ref, self.kp_min_distance, cfg.keypoint_depth_target))
        weights["keypoint_prior"] = cfg.w_keypoint_prior
        terms["head_pose"] = 0.5 * (losses.head_pose_loss(out.pose_drv_deg, batch.drv_pose)
                                    + losses.head_pose_loss(out.pose_ref_deg, batch.ref_pose))
        weights["head_pose"] = cfg.w_head_pose
        terms["deformation"] = 0.5 * (losses.deformation_prior_loss(out.expression_drv)
                                      + losses.deformation_prior_loss(out.expression_ref))
        weights["deformation"] = cfg.w_deformation
        indices = self.landmark_indices.to(self.device)
        terms["landmark"] = 0.5 * (losses.landmark_guidance_loss(out.kp_drv, batch.drv_landmarks, indices)
                                   + losses.landmark_guidance_loss(out.kp_ref, batch.ref_landmarks, indices))
        weights["landmark"] = cfg.w_landmark * landmark_decay(step, cfg)
        terms["landmark_motion"] = losses.landmark_motion_loss(out.kp_drv, out.kp_ref, batch.drv_landmarks,
                                                               batch.ref_landmarks, indices)
        weights["landmark_motion"] = cfg.w_landmark_motion * landmark_decay(step, cfg)
        total = sum((weights[k] * terms[k] for k in terms), torch.zeros((), device=self.device))
        result = {k: float(v.detach()) for k, v in terms.items()}
        result.update(loss_g=float(total.detach()), loss_d=float(loss_d.detach()), lr_factor=lr_factor,
                      w_landmark=weights["landmark"])
        if not math.isfinite(result["loss_g"]):
            logger.warning("step %d: non-finite generator loss %s; update skipped", step, result)
            self.opt_g.zero_grad(set_to_none=True)
            result["skipped"] = 1.0
            return result
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        if cfg.grad_clip > 0:
            result["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
        self.opt_g.step()
        self.update_ema()
        return result

    def save(self, path: Path) -> None:
        save_state(path, generator=self.model, discriminator=self.disc, opt_g=self.opt_g, opt_d=self.opt_d,
                   counters=self.counters, rng=self.rng, model_config=self.model_config,
                   train_config=config_to_dict(self.config), ema=self.ema)

    def load(self, path: Path) -> None:
        self.counters = load_state(path, generator=self.model, discriminator=self.disc, opt_g=self.opt_g,
                                   opt_d=self.opt_d, rng=self.rng, ema=self.ema)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m codec.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run folder (created; keep it outside the repository)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN/last.safetensors")
    parser.add_argument("--init", type=Path, default=None,
                        help="start a new run from this training state (e.g. another run's last.safetensors) for a "
                             "preset that added parameters to it: its weights, optimizer moments, counters and "
                             "training config are taken over, the new parameters start from their initialisation; "
                             "flags override any config field")
    parser.add_argument("--from-model", type=Path, default=None,
                        help="start a new run from a model file (e.g. codec/weights/cpu.safetensors, a run's "
                             "best.safetensors): its weights and the step and CPU-hours it records; the "
                             "discriminator and both optimizers start fresh, so by default the generator stays frozen "
                             "for 200 steps while D catches up (--generator-frozen-until-step) and the learning-rate "
                             "schedule restarts at its step (--schedule-start-step); pass --data and a --max-steps "
                             "beyond its step")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when present)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="forward passes in bf16 autocast (auto: on CPUs with native bf16) or fp32")
    parser.add_argument("--stop-after-steps", type=int, default=0,
                        help="exit (after a checkpoint) once this many steps ran in this process; 0 = no limit")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    add_config_arguments(parser)
    return parser.parse_args(argv)


class _Log:
    """Appends JSON lines to RUN/log.jsonl (flushed per line)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def inherit_history(source_log: Path, log: _Log, step: int, init: Path) -> None:
    """A grown run's log starts with its source run's records up to the state it grew from, then an
    "init" record, so curves, CPU-hours and the model card cover the whole lineage."""
    if source_log.is_file():
        for line in source_log.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of a killed run
            if isinstance(record, dict) and int(record.get("step", step + 1)) <= step:
                log.write(record)
    log.write({"kind": "init", "step": step, "from": str(init)})


def validated_steps(log_path: Path) -> set[int]:
    """Steps that RUN/log.jsonl holds a validation record for."""
    steps: set[int] = set()
    if log_path.is_file():
        for line in log_path.read_text().splitlines():
            with contextlib.suppress(AttributeError, KeyError, TypeError, ValueError):  # a torn or foreign line
                record = json.loads(line)
                if record.get("kind") == "val":
                    steps.add(int(record["step"]))
    return steps


def run_validation(trainer: Trainer, validator: Any, log: _Log) -> dict[str, Any]:
    """Validate, append the record, write the grid and the plot, and update best.safetensors."""
    from codec.train.validate import passes_gates, replaces_best, selection_score

    step = trainer.counters.step
    t0 = time.time()
    evaluated = trainer.evaluated_model
    was_training = evaluated.training
    evaluated.eval()
    record, grid = validator.run(lambda batch: model_io.generate(evaluated, batch), trainer.device)
    if evaluated.config.enhancement_size:  # the same pairs with the enhancement picture at the validation qp
        enhanced, _ = validator.run(lambda batch: model_io.generate(evaluated, batch, enhanced=True), trainer.device)
        record["enhanced"] = {"qp": trainer.config.enhancement_val_qp, "overall": enhanced["overall"]}
    evaluated.train(was_training)
    record.update(kind="val", step=step, cpu_hours=trainer.counters.cpu_seconds / 3600,
                  wall_hours=trainer.counters.wall_seconds / 3600, seconds=time.time() - t0,
                  floor_no_motion=validator.floors["no_motion"]["overall"],
                  floor_affine=validator.floors["affine"]["overall"])
    ok, why = passes_gates(record, validator.floors)
    record["gates"] = why
    record["score"] = selection_score(record)
    best_path = trainer.run / "best.json"
    best = json.loads(best_path.read_text()) if best_path.is_file() else None
    if ok and replaces_best(record, best, validator.floors):
        model_io.save_generator(evaluated, trainer.run / "best.safetensors",
                                {"step": str(step), "ema_decay": str(trainer.config.ema_decay), "score": f"{record['score']:.4f}",
                                 "cpu_hours": f"{trainer.counters.cpu_seconds / 3600:.3f}",
                                 "wall_hours": f"{trainer.counters.wall_seconds / 3600:.3f}"})
        best_path.write_text(json.dumps(record, indent=1))
        record["best"] = True
    log.write(record)
    Image.fromarray(grid).save(trainer.run / f"grid_{step:07d}.png")
    plot_metrics(trainer.run / "log.jsonl", trainer.run / "metrics.png")
    o, f = record["overall"], validator.floors["no_motion"]["overall"]
    logger.info("val step %d (%.0f s): face PSNR %.2f (floor %.2f), SSIM %.3f (%.3f), AKD %.2f (%.2f) mouth %.2f (%.2f) "
                "eyes %.2f (%.2f), mouth opening error %.2f (%.2f), kp min dist %.3f, collapsed %.1f; gates: %s", step,
                record["seconds"], o["face_psnr"], f["face_psnr"], o["ssim"], f["ssim"], o["akd"], f["akd"], o["akd_mouth"],
                f["akd_mouth"], o["akd_eyes"], f["akd_eyes"], o["mouth_open_error"], f["mouth_open_error"],
                o["kp_min_distance"], o["kp_collapsed"], why)
    if "enhanced" in record:
        e = record["enhanced"]["overall"]
        logger.info("val step %d with the enhancement picture (qp %d): face PSNR %.2f, PSNR %.2f, SSIM %.3f, AKD %.2f",
                    step, record["enhanced"]["qp"], e["face_psnr"], e["psnr"], e["ssim"], e["akd"])
    return record


def make_validator(trainer: Trainer) -> Any:
    from codec.face.identity import IdentityEmbedder
    from codec.train.validate import Validator, make_landmark_fn

    pairs = validation_pairs(trainer.val_data, trainer.config.validation_pairs, seed=trainer.config.seed)
    return Validator(trainer.val_data, pairs, make_landmark_fn(), trainer.run / "floors.json", embedder=IdentityEmbedder())


def from_model_defaults(path: Path, frozen_steps: int = 200) -> TrainConfig:
    """The training config a run started from a model file begins with (flags override it): the file's preset,
    the learning-rate schedule restarting at its step, the generator frozen for ``frozen_steps``."""
    if not path.is_file():
        raise FileNotFoundError(f"--from-model: {path} does not exist (a model file such as codec/weights/cpu.safetensors)")
    metadata = checkpoint.read_metadata(path)
    step = int(metadata.get("step") or 0)
    model_config = json.loads(metadata["config"])
    return TrainConfig(preset=model_config["name"], schedule_start_step=step, generator_frozen_until_step=step + frozen_steps,
                       landmark_refinement=float(model_config.get("landmark_refinement", 0.0)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    last = run / "last.safetensors"
    if sum(bool(x) for x in (args.resume, args.init, args.from_model)) > 1:
        raise ValueError("--resume continues RUN itself, --init and --from-model start a new RUN from another "
                         "state or a model file: pass one")
    if args.resume:
        if not last.is_file():
            raise FileNotFoundError(f"--resume: {last} does not exist; start a run without --resume first")
        saved = config_from_dict(json.loads(read_metadata(last)["train_config"]))
        config, given = config_from_args(args, saved)
        changed = [name for name in given if getattr(config, name) != getattr(saved, name)]
        forbidden = [name for name in changed if name not in RESUMABLE_OVERRIDES]
        if forbidden:
            raise ValueError(f"--resume cannot change {forbidden}; allowed: {list(RESUMABLE_OVERRIDES)}")
        if changed:
            logger.info("resume overrides: %s", {n: getattr(config, n) for n in changed})
    else:
        if last.is_file():
            raise FileExistsError(f"{last} exists: pass --resume to continue it, or choose a new --run")
        if args.init is not None and not args.init.is_file():
            raise FileNotFoundError(f"--init: {args.init} does not exist (a run's last.safetensors)")
        base = config_from_dict(json.loads(read_metadata(args.init)["train_config"])) if args.init else None
        if args.from_model is not None:
            base = from_model_defaults(args.from_model)
        config, _ = config_from_args(args, base)
        if args.from_model is not None and config.max_steps <= config.schedule_start_step:
            raise ValueError(f"--from-model: {args.from_model} is at step {config.schedule_start_step}; pass a "
                             "--max-steps beyond it")
        if not config.data:
            raise ValueError("--data is required for a new run (a prepared dataset folder)")
    run.mkdir(parents=True, exist_ok=True)
    device = pick_device(args.device)
    precision = resolve_precision(args.precision, device)
    logger.info("device %s, %s forward passes", device, precision)
    trainer = Trainer(config, run, device, precision)
    if args.resume:
        trainer.load(last)
        trainer.config = config
        logger.info("resumed at step %d (%.2f CPU-hours)", trainer.counters.step, trainer.counters.cpu_seconds / 3600)
    elif args.init is not None:
        trainer.counters, new = grow_from(args.init, generator=trainer.model, discriminator=trainer.disc,
                                          opt_g=trainer.opt_g, opt_d=trainer.opt_d)
        logger.info("grown from %s at step %d (%.2f CPU-hours); new generator entries: %s", args.init,
                    trainer.counters.step, trainer.counters.cpu_seconds / 3600, new)
    elif args.from_model is not None:
        trainer.counters, new = start_from_model(args.from_model, trainer.model)
        logger.info("started from model %s at step %d (%.2f CPU-hours); fresh discriminator and optimizers, generator "
                    "frozen until step %d; new generator entries: %s", args.from_model, trainer.counters.step,
                    trainer.counters.cpu_seconds / 3600, config.generator_frozen_until_step, new)
    if args.init is not None or args.from_model is not None:
        trainer.reset_ema()
    (run / "config.json").write_text(json.dumps({"train": config_to_dict(config), "model": trainer.model_config},
                                                indent=1))
    log = _Log(run / "log.jsonl")
    if args.init is not None:
        inherit_history(args.init.parent / "log.jsonl", log, trainer.counters.step, args.init)
    elif args.from_model is not None:
        log.write({"kind": "init", "step": trainer.counters.step, "from": str(args.from_model)})
    validator = make_validator(trainer)

    stop = {"signal": 0}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop["signal"] = signum

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    cpu0, wall0 = time.process_time(), time.time()
    base = trainer.counters
    last_ckpt = last_val = time.time()
    steps_here = 0
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    if base.step == 0:
        run_validation(trainer, validator, log)
    bar = tqdm(total=config.max_steps, initial=base.step, disable=args.no_progress, dynamic_ncols=True)
    try:
        while trainer.counters.step < config.max_steps and not stop["signal"]:
            step = trainer.counters.step
            batch = trainer.sampler.sample(trainer.rng).to(device)
            result = trainer.step(batch, step)
            steps_here += 1
            trainer.counters = Counters(step + 1, base.cpu_seconds + time.process_time() - cpu0,
                                        base.wall_seconds + time.time() - wall0)
            for key, value in result.items():
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + 1
            bar.update(1)
            if steps_here % 5 == 0:
                bar.set_postfix({k: f"{result[k]:.3g}" for k in ("loss_g", "loss_d", "l1", "landmark", "keypoint_prior")
                                 if k in result})
            if (step + 1) % config.log_steps == 0:
                log.write({"kind": "train", "step": step + 1, "cpu_hours": trainer.counters.cpu_seconds / 3600,
                           **{k: v / counts[k] for k, v in sums.items()}})
                sums, counts = {}, {}
            now = time.time()
            due_val = (config.validate_steps > 0 and (step + 1) % config.validate_steps == 0) or (
                config.validate_steps <= 0 and now - last_val >= 60 * config.validate_minutes)
            if due_val:
                run_validation(trainer, validator, log)
                last_val = time.time()
            limit = args.stop_after_steps > 0 and steps_here >= args.stop_after_steps
            if due_val or limit or now - last_ckpt >= 60 * config.checkpoint_minutes:
                trainer.save(last)
                last_ckpt = time.time()
            if limit:
                break
    finally:
        bar.close()
        for s, handler in old_handlers.items():
            signal.signal(s, handler)
    finished = trainer.counters.step >= config.max_steps
    if finished and not stop["signal"] and trainer.counters.step not in validated_steps(run / "log.jsonl"):
        run_validation(trainer, validator, log)  # the final weights are scored too (and may become best)
    if stop["signal"] or finished:
        trainer.save(last)
        logger.info("saved %s at step %d (%s)", last, trainer.counters.step,
                    f"signal {stop['signal']}" if stop["signal"] else "max steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
