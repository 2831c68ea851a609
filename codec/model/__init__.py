"""The neural model (face-vid2vid): F, L, H, M, G, D, presets and checkpoints."""

from codec.model.config import KEYPOINT_LANDMARK_INDICES, PRESETS, ModelConfig
from codec.model.discriminator import MultiScaleDiscriminator
from codec.model.face_model import FaceVid2VidModel, ReferenceFeatures

__all__ = ["KEYPOINT_LANDMARK_INDICES", "PRESETS", "ModelConfig", "MultiScaleDiscriminator", "FaceVid2VidModel", "ReferenceFeatures"]

from codec.model.loading import ModelInfo, load_model_for_inference  # noqa: E402
from codec.model.retarget import retarget_relative  # noqa: E402
from codec.model.view import ViewControl  # noqa: E402
from codec.model.wrappers import FrameSynthesizer, MotionEncoder, ReferenceCache, ReferenceState  # noqa: E402

__all__ += ["ModelInfo", "load_model_for_inference", "retarget_relative", "ViewControl", "FrameSynthesizer",
            "MotionEncoder", "ReferenceCache", "ReferenceState"]
