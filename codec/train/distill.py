"""Distil a narrower receiver (F, M, G) from a trained model: the browser-class generator of issue 24.

    python -m codec.train.distill --teacher codec/weights/cpu.safetensors --preset web \\
        --data /work/prepared/s256 --run /work/state/web --max-steps 6000
    (the same command again resumes from RUN/state.safetensors)

The student keeps the teacher's keypoint networks L and H, copied and frozen, so a sender running the teacher
drives it unchanged (the same bitstream, model version and motion). Only the receiver's networks are new; they
learn to reproduce the teacher's render of each training pair:

    loss = pyramid L1(student, teacher) + w_ssim · SSIM loss(student, teacher) + w_truth · pyramid L1(student, driving)
           + w_flow · |flow_s - flow_t| + w_occlusion · |occlusion_s - occlusion_t|

(the teacher's flow and occlusion at M's output guide the narrow M directly). No discriminator: the target is a
picture the teacher already made. Validation (every ``--validate-every`` steps) renders fixed pairs of the
validation people with both models and reports face PSNR against the real driving frame: the student's gap to
the teacher is the figure that matters (issue 24: within 1 dB).

RUN holds state.safetensors (student, Adam, RNG, step; written atomically), student.safetensors (weights, fp16),
log.jsonl (one line per logged step and per validation).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from codec.model import checkpoint
from codec.model.config import ModelConfig
from codec.model.face_model import FaceVid2VidModel, ReferenceFeatures
from codec.model.landmark_refinement import refine_keypoints
from codec.model.loading import load_model_for_inference, pick_precision
from codec.train.dataset import PairBatch, PairSampler, PreparedData, SamplerConfig, validation_pairs
from codec.train.losses import pyramid_l1, ssim_loss
from codec.train.state import flatten_optimizer, unflatten_optimizer
from codec.train.validate import frame_metrics, to_uint8

log = logging.getLogger(__name__)
SHARED_MODULES = ("canonical_keypoints", "pose_expression")  # L and H: the sender's networks, kept as they are
STATE_FORMAT = "kpcall-distill-state-1"


@dataclass(frozen=True)
class DistillConfig:
    """Hyper-parameters of one distillation run (saved in its state)."""

    batch_size: int = 8
    lr: float = 1e-3  # AdamW, cosine to lr_final over max_steps after warmup_steps
    lr_final: float = 5e-5
    warmup_steps: int = 100
    max_steps: int = 6000
    w_ssim: float = 0.5
    w_truth: float = 0.25
    w_flow: float = 5.0
    w_occlusion: float = 1.0
    weight_decay: float = 1e-4


def student_from_teacher(teacher: FaceVid2VidModel, preset: ModelConfig) -> FaceVid2VidModel:
    """A new model of ``preset`` whose L and H are the teacher's (copied, frozen); F, M, G start fresh."""
    t = teacher.config
    for field in ("image_size", "num_keypoints", "pose_bins", "pose_bin_deg", "pose_input_size", "estimator_width",
                  "expression_spatial_channels", "motion_size", "heatmap_variance"):
        if getattr(preset, field) != getattr(t, field):
            raise ValueError(f"preset {preset.name!r} has {field} = {getattr(preset, field)}, the teacher "
                             f"{t.name!r} {getattr(t, field)}: the student must read the teacher's motion unchanged")
    if preset.volume_depth or preset.enhancement_size:
        raise ValueError(f"preset {preset.name!r}: a distilled student is the 2D, motion-only form")
    student = FaceVid2VidModel(dataclasses.replace(preset, landmark_refinement=t.landmark_refinement))
    for name in SHARED_MODULES:
        getattr(student, name).load_state_dict(getattr(teacher, name).state_dict())
        getattr(student, name).requires_grad_(False)
    return student


def student_metadata(teacher_id: str, motion_model_id: str, step: int) -> dict[str, str]:
    """The student checkpoint's metadata: whom it was distilled from and whose motion it reads (the teacher's)."""
    return {"distilled_from": teacher_id, "motion_model_id": motion_model_id, "distill_step": str(step)}


def trainable_parameters(student: FaceVid2VidModel) -> list[torch.nn.Parameter]:
    return [p for p in student.parameters() if p.requires_grad]


def student_reference(student: FaceVid2VidModel, teacher_ref: ReferenceFeatures) -> ReferenceFeatures:
    """The student's reference state: its own F's features, the teacher's keypoints (the same L and H)."""
    features, skip = student.appearance(teacher_ref.image)
    return dataclasses.replace(teacher_ref, features=features, skip=skip)


def teacher_targets(teacher: FaceVid2VidModel, batch: PairBatch) -> tuple[ReferenceFeatures, torch.Tensor, torch.Tensor,
                                                                           dict[str, torch.Tensor]]:
    """The teacher's reference state, the keypoints (B, K, 3) and rotation (B, 3, 3) a sender transmits for the
    batch's driving frames (refined towards the landmarks' motion when the teacher was trained for it, as
    ``model_io.generate`` and a real call render them), and the teacher's render of them."""
    with torch.no_grad():
        ref = teacher.encode_reference(batch.ref)
        motion = teacher.estimate_motion(batch.drv)
        kp_drv, rotation = teacher.driving_keypoints(ref.kp_canonical, motion)
        fraction = teacher.config.landmark_refinement
        if fraction > 0:
            kp_drv = refine_keypoints(kp_drv, ref.kp, batch.ref_landmarks, batch.drv_landmarks, fraction)
        out = teacher.synthesize(ref, kp_drv, rotation)
    return ref, kp_drv, rotation, out


def distill_loss(config: DistillConfig, student_out: dict[str, torch.Tensor], teacher_out: dict[str, torch.Tensor],
                 truth: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    image, target = student_out["image"].float(), teacher_out["image"].float()  # (B, 3, S, S)
    terms = {
        "l1": pyramid_l1(image, target),
        "ssim": ssim_loss(image, target),
        "truth": pyramid_l1(image, truth),
        "flow": (student_out["flow"].float() - teacher_out["flow"].float()).abs().mean(),
        "occlusion": (student_out["occlusion"].float() - teacher_out["occlusion"].float()).abs().mean(),
    }
    total = (terms["l1"] + config.w_ssim * terms["ssim"] + config.w_truth * terms["truth"]
             + config.w_flow * terms["flow"] + config.w_occlusion * terms["occlusion"])
    return total, {k: float(v.detach()) for k, v in terms.items()}


def learning_rate(config: DistillConfig, step: int) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    return config.lr_final + 0.5 * (config.lr - config.lr_final) * (1 + math.cos(math.pi * progress))


class Distiller:
    """One student, its teacher, the optimizer and the data; ``step`` is one update."""

    def __init__(self, teacher: FaceVid2VidModel, student: FaceVid2VidModel, config: DistillConfig,
                 precision: str = "fp32") -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.student = student
        self.config = config
        self.precision = precision
        self.optimizer = torch.optim.AdamW(trainable_parameters(student), lr=config.lr, weight_decay=config.weight_decay)
        self.step_count = 0

    def autocast(self) -> torch.autocast:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def step(self, batch: PairBatch) -> dict[str, float]:
        self.student.train()
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.config, self.step_count)
        with self.autocast():
            ref, kp_drv, rotation, target = teacher_targets(self.teacher, batch)
            out = self.student.synthesize(student_reference(self.student, ref), kp_drv, rotation)
        loss, terms = distill_loss(self.config, out, target, batch.drv)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable_parameters(self.student), 1.0)
        self.optimizer.step()
        self.step_count += 1
        return {"loss": float(loss.detach()), **terms}

    def render_pair(self, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(student image, teacher image), each (B, 3, S, S), in eval mode."""
        self.student.eval()
        with torch.no_grad(), self.autocast():
            ref, kp_drv, rotation, target = teacher_targets(self.teacher, batch)
            out = self.student.synthesize(student_reference(self.student, ref), kp_drv, rotation)
        return out["image"].float(), target["image"].float()

    def save(self, path: Path, rng: np.random.Generator) -> None:
        tensors = {f"student.{k}": v.detach().contiguous() for k, v in self.student.state_dict().items()}
        opt_tensors, groups = flatten_optimizer("opt", self.optimizer)
        tensors.update(opt_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        metadata = {"format": STATE_FORMAT, "step": str(self.step_count), "opt.param_groups": groups,
                    "rng.numpy": json.dumps(rng.bit_generator.state), "model_config": json.dumps(self.student.config.to_dict()),
                    "distill_config": json.dumps(dataclasses.asdict(self.config))}
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(path)

    def load(self, path: Path, rng: np.random.Generator) -> None:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata()
        if metadata.get("format") != STATE_FORMAT:
            raise ValueError(f"{path} is not a distillation state ({metadata.get('format')!r})")
        if json.loads(metadata["model_config"]) != self.student.config.to_dict():
            raise ValueError(f"{path} holds a student of another architecture; start a new --run")
        tensors = load_file(str(path))
        self.student.load_state_dict({k[len("student."):]: v for k, v in tensors.items() if k.startswith("student.")})
        self.optimizer.load_state_dict(unflatten_optimizer("opt", tensors, metadata["opt.param_groups"]))
        torch.set_rng_state(tensors["rng.torch"])
        rng.bit_generator.state = json.loads(metadata["rng.numpy"])
        self.step_count = int(metadata["step"])


def validate(distiller: Distiller, data: PreparedData, pairs: list[tuple[int, int, int]], batch_size: int = 8) -> dict[str, float]:
    """Face PSNR / PSNR / SSIM of student and teacher against the real driving frames of ``pairs``."""
    sampler = PairSampler(data, SamplerConfig(batch_size=batch_size))
    rows: dict[str, list[dict[str, float]]] = {"student": [], "teacher": []}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        batch = sampler.make_batch(chunk)
        student, teacher = distiller.render_pair(batch)
        truth = to_uint8(batch.drv)
        for name, images in (("student", student), ("teacher", teacher)):
            for i, out in enumerate(to_uint8(images)):
                clip_index, _, drv = chunk[i]
                rows[name].append(frame_metrics(out, truth[i], data.clips[clip_index].landmarks[drv], None))
    result: dict[str, float] = {"pairs": float(len(pairs))}
    for name, values in rows.items():
        for key in ("face_psnr", "psnr", "ssim"):
            result[f"{name}_{key}"] = float(np.mean([v[key] for v in values]))
    result["face_psnr_gap"] = result["teacher_face_psnr"] - result["student_face_psnr"]
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m codec.train.distill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="the trained model (safetensors) to distil from")
    parser.add_argument("--preset", default="web", help="the student's architecture (codec.model.config PRESETS)")
    parser.add_argument("--data", required=True, help="prepared dataset folder (python -m codec.data prepare)")
    parser.add_argument("--run", required=True, help="folder for the state, weights and log (resumed when it has a state)")
    parser.add_argument("--max-steps", type=int, default=DistillConfig.max_steps)
    parser.add_argument("--batch-size", type=int, default=DistillConfig.batch_size)
    parser.add_argument("--lr", type=float, default=DistillConfig.lr)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--validate-every", type=int, default=1000)
    parser.add_argument("--validation-pairs", type=int, default=96)
    parser.add_argument("--reload-data-every", type=int, default=0,
                        help="re-read --data's manifest every N steps (while a preparation still adds clips); 0: never")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    teacher, info = load_model_for_inference(Path(args.teacher), device="cpu")
    student = student_from_teacher(teacher, ModelConfig.preset(args.preset))
    config = DistillConfig(batch_size=args.batch_size, lr=args.lr, max_steps=args.max_steps)
    distiller = Distiller(teacher, student, config, pick_precision(args.precision, torch.device("cpu")))
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    state_path, weights_path, log_path = run / "state.safetensors", run / "student.safetensors", run / "log.jsonl"
    rng = np.random.default_rng(args.seed)
    if state_path.is_file():
        distiller.load(state_path, rng)
        log.info("resumed %s at step %d", state_path, distiller.step_count)
    train = PreparedData(args.data, "train")
    val = PreparedData(args.data, "val")
    pairs = validation_pairs(val, args.validation_pairs)
    sampler = PairSampler(train, SamplerConfig(batch_size=args.batch_size))
    started, steps_here = time.monotonic(), 0
    with log_path.open("a") as log_file:
        def record(entry: dict[str, object]) -> None:
            log_file.write(json.dumps(entry) + "\n")
            log_file.flush()

        while distiller.step_count < config.max_steps:
            if args.reload_data_every and distiller.step_count % args.reload_data_every == 0 and steps_here:
                train, val = PreparedData(args.data, "train"), PreparedData(args.data, "val")
                sampler = PairSampler(train, SamplerConfig(batch_size=args.batch_size))
                pairs = validation_pairs(val, args.validation_pairs)
            terms = distiller.step(sampler.sample(rng))
            steps_here += 1
            step = distiller.step_count
            if step % 20 == 0:
                rate = (time.monotonic() - started) / steps_here
                log.info("step %d  loss %.4f  l1 %.4f  flow %.4f  %.2f s/step  %d clips", step, terms["loss"],
                         terms["l1"], terms["flow"], rate, len(train.clips))
                record({"step": step, "lr": learning_rate(config, step), "s_per_step": rate, **terms})
            if step % args.save_every == 0 or step == config.max_steps:
                distiller.save(state_path, rng)
                checkpoint.save(student, weights_path, metadata=student_metadata(info.model_id, info.motion_model_id, step), half=True)
            if step % args.validate_every == 0 or step == config.max_steps:
                result = validate(distiller, val, pairs)
                log.info("validation at step %d: %s", step, result)
                record({"step": step, "validation": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
