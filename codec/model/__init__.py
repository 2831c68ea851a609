"""The neural model (face-vid2vid): F, L, H, M, G, D, presets and checkpoints."""

from codec.model.config import KEYPOINT_LANDMARK_INDICES, PRESETS, ModelConfig
from codec.model.discriminator import MultiScaleDiscriminator
from codec.model.face_model import FaceVid2VidModel, ReferenceFeatures

__all__ = ["KEYPOINT_LANDMARK_INDICES", "PRESETS", "ModelConfig", "MultiScaleDiscriminator", "FaceVid2VidModel", "ReferenceFeatures"]
