"""What one frame's motion is: head pose (R, t) and per-keypoint expression deformation δ.

This is the representation of face-vid2vid (Wang, Mallya, Liu, CVPR 2021, Sec. 3.1, Eq. 1-2):
the driving keypoints are obtained from the reference's canonical keypoints x_c as

    x_d,k = R · x_c,k + t + δ_k          (paper Eq. 2, with R, t, δ from the driving frame)

Coordinate frame (shared by every part of the project):
    keypoints live in normalised image coordinates, x to the right and y *down* in [-1, 1]
    (the convention of ``torch.nn.functional.grid_sample``), z pointing *into* the screen.
    This is a right-handed frame.

Rotation convention (the paper's released code and its reimplementations):
    R = R_x(pitch) · R_y(yaw) · R_z(roll), angles in degrees, each a right-handed rotation about
    the named axis of the frame above. A face looking at the camera has its nose at -z (towards
    the viewer), so:
    - positive yaw turns the face to the subject's own right (its nose moves to -x, the image's left),
    - positive pitch tilts the face down (its nose moves to +y, down in the image),
    - positive roll rotates the face clockwise on screen (from +x towards +y).
``angles_to_rotation`` and ``rotation_to_angles`` are exact inverses for |pitch| < 90°.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

DEFAULT_NUM_KEYPOINTS = 20
MAX_NUM_KEYPOINTS = 64  # the bitstream's presence bitmask is 64 bits wide


@dataclass(frozen=True, eq=False)
class MotionParams:
    """One frame's motion: everything the sender transmits for it.

    yaw, pitch, roll: degrees (see the module docstring for the convention).
    translation: (3,) float32 in normalised coordinates.
    expression: (K, 3) float32 δ per keypoint; rows whose ``present`` flag is False are zero and
        mean "not transmitted" (the receiver keeps the reference's own δ there, or conceals them).
    present: (K,) bool, which keypoints' δ are present.
    """

    yaw: float
    pitch: float
    roll: float
    translation: np.ndarray = field(repr=False)
    expression: np.ndarray = field(repr=False)
    present: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        translation = np.asarray(self.translation, dtype=np.float32).reshape(-1)
        expression = np.asarray(self.expression, dtype=np.float32)
        present = np.asarray(self.present, dtype=bool).reshape(-1)
        if translation.shape != (3,):
            raise ValueError(f"translation must have 3 values, got shape {translation.shape}")
        if expression.ndim != 2 or expression.shape[1] != 3:
            raise ValueError(f"expression must be (K, 3), got shape {expression.shape}")
        if present.shape != (expression.shape[0],):
            raise ValueError(
                f"present must be (K,) = ({expression.shape[0]},), got shape {present.shape}"
            )
        if expression.shape[0] > MAX_NUM_KEYPOINTS:
            raise ValueError(f"K = {expression.shape[0]} exceeds the maximum of {MAX_NUM_KEYPOINTS}")
        values = np.concatenate([[self.yaw, self.pitch, self.roll], translation, expression.ravel()])
        if not np.all(np.isfinite(values)):
            raise ValueError("motion parameters must be finite (got NaN or inf)")
        expression = np.where(present[:, None], expression, np.float32(0.0)).astype(np.float32)
        for name, value in (("translation", translation), ("expression", expression), ("present", present)):
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        for name in ("yaw", "pitch", "roll"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def num_keypoints(self) -> int:
        return int(self.expression.shape[0])

    @classmethod
    def neutral(cls, num_keypoints: int = DEFAULT_NUM_KEYPOINTS) -> MotionParams:
        """Frontal pose, no translation, no expression, all keypoints present."""
        return cls(
            0.0, 0.0, 0.0,
            np.zeros(3, np.float32),
            np.zeros((num_keypoints, 3), np.float32),
            np.ones(num_keypoints, bool),
        )

    def rotation(self) -> np.ndarray:
        """(3, 3) float32 rotation matrix R."""
        return angles_to_rotation(self.yaw, self.pitch, self.roll)

    def with_present(self, present: np.ndarray) -> MotionParams:
        """The same motion with only the keypoints in ``present`` (K,) bool kept."""
        return MotionParams(self.yaw, self.pitch, self.roll, self.translation, self.expression, present)

    def max_abs_difference(self, other: MotionParams) -> dict[str, float]:
        """Largest absolute difference per field group (angles in degrees); for tests and benchmarks."""
        if other.num_keypoints != self.num_keypoints:
            raise ValueError(f"K differs: {self.num_keypoints} vs {other.num_keypoints}")
        return {
            "angles_deg": float(
                np.max(np.abs(np.subtract([self.yaw, self.pitch, self.roll], [other.yaw, other.pitch, other.roll])))
            ),
            "translation": float(np.max(np.abs(self.translation - other.translation))),
            "expression": float(np.max(np.abs(self.expression - other.expression), initial=0.0)),
        }


def _axis_rotations(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """yaw, pitch, roll: (...,) degrees -> (..., 3, 3) R = R_x(pitch) R_y(yaw) R_z(roll), float64."""
    y, p, r = (np.deg2rad(np.asarray(a, dtype=np.float64)) for a in (yaw, pitch, roll))
    zeros, ones = np.zeros_like(p), np.ones_like(p)
    rx = np.stack([ones, zeros, zeros, zeros, np.cos(p), -np.sin(p), zeros, np.sin(p), np.cos(p)], -1)
    ry = np.stack([np.cos(y), zeros, np.sin(y), zeros, ones, zeros, -np.sin(y), zeros, np.cos(y)], -1)
    rz = np.stack([np.cos(r), -np.sin(r), zeros, np.sin(r), np.cos(r), zeros, zeros, zeros, ones], -1)
    shape = p.shape + (3, 3)
    return rx.reshape(shape) @ ry.reshape(shape) @ rz.reshape(shape)  # (..., 3, 3)


def angles_to_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Degrees -> (3, 3) float32 rotation matrix R = R_x(pitch) · R_y(yaw) · R_z(roll)."""
    return _axis_rotations(np.float64(yaw), np.float64(pitch), np.float64(roll)).astype(np.float32)


def rotation_to_angles(rotation: np.ndarray) -> tuple[float, float, float]:
    """(3, 3) rotation matrix -> (yaw, pitch, roll) in degrees, inverse of ``angles_to_rotation``.

    With R = R_x(p) R_y(y) R_z(r): R[0, 2] = sin(y), R[1, 2] = -sin(p) cos(y), R[2, 2] = cos(p) cos(y),
    R[0, 1] = -cos(y) sin(r), R[0, 0] = cos(y) cos(r). Yaw is taken in [-90°, 90°].
    """
    r = np.asarray(rotation, dtype=np.float64)
    if r.shape != (3, 3) or not np.all(np.isfinite(r)):
        raise ValueError(f"rotation must be a finite (3, 3) matrix, got shape {r.shape}")
    yaw = np.arcsin(np.clip(r[0, 2], -1.0, 1.0))
    pitch = np.arctan2(-r[1, 2], r[2, 2])
    roll = np.arctan2(-r[0, 1], r[0, 0])
    return float(np.rad2deg(yaw)), float(np.rad2deg(pitch)), float(np.rad2deg(roll))


def transform_keypoints(
    canonical: np.ndarray, rotation: np.ndarray, translation: np.ndarray, expression: np.ndarray
) -> np.ndarray:
    """x_d = R · x_c + t + δ (paper Eq. 2), numpy.

    canonical: (K, 3); rotation: (3, 3); translation: (3,); expression: (K, 3) -> (K, 3) float32.
    """
    return (np.asarray(canonical) @ np.asarray(rotation).T + np.asarray(translation) + np.asarray(expression)).astype(
        np.float32
    )


def motion_keypoints(canonical: np.ndarray, motion: MotionParams) -> np.ndarray:
    """The driving keypoints for a MotionParams: canonical (K, 3) -> (K, 3)."""
    if canonical.shape != (motion.num_keypoints, 3):
        raise ValueError(f"canonical keypoints {canonical.shape} do not match K = {motion.num_keypoints}")
    return transform_keypoints(canonical, motion.rotation(), motion.translation, motion.expression)


def matmul_exact(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (..., n, m) @ b (..., m, p) as a broadcast product and sum: the inputs' precision even under
    bf16/fp16 autocast (which would round the small geometric products of keypoints and rotations)."""
    return (a[..., :, :, None] * b[..., None, :, :]).sum(-2)


def angles_to_rotation_torch(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """yaw, pitch, roll: (B,) degrees -> (B, 3, 3) R = R_x(pitch) R_y(yaw) R_z(roll); differentiable."""
    y, p, r = torch.deg2rad(yaw), torch.deg2rad(pitch), torch.deg2rad(roll)
    zeros, ones = torch.zeros_like(p), torch.ones_like(p)
    rx = torch.stack([ones, zeros, zeros, zeros, p.cos(), -p.sin(), zeros, p.sin(), p.cos()], -1)
    ry = torch.stack([y.cos(), zeros, y.sin(), zeros, ones, zeros, -y.sin(), zeros, y.cos()], -1)
    rz = torch.stack([r.cos(), -r.sin(), zeros, r.sin(), r.cos(), zeros, zeros, zeros, ones], -1)
    shape = p.shape + (3, 3)
    return matmul_exact(matmul_exact(rx.view(shape), ry.view(shape)), rz.view(shape))  # (B, 3, 3)


def transform_keypoints_torch(
    canonical: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor, expression: torch.Tensor
) -> torch.Tensor:
    """x_d = R · x_c + t + δ (paper Eq. 2), batched torch.

    canonical: (B, K, 3); rotation: (B, 3, 3); translation: (B, 3); expression: (B, K, 3) -> (B, K, 3).
    """
    rotated = (rotation[:, None] * canonical[:, :, None, :]).sum(-1)  # (B, K, 3): R x_c, fp32 under autocast
    return rotated + translation[:, None, :] + expression
