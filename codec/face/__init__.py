"""Face pipeline: landmarks (mediapipe face mesh), the crop, the head-pose teacher, regions, AKD."""

from codec.face.metrics import LANDMARK_METRICS, akd, eye_opening, landmark_metrics, mouth_opening
from codec.face.regions import EYES, FACE_OVAL, LEFT_EYE, MOUTH, RIGHT_EYE, RIGID, face_hull_mask

__all__ = ["LANDMARK_METRICS", "akd", "eye_opening", "landmark_metrics", "mouth_opening", "EYES", "FACE_OVAL", "LEFT_EYE", "MOUTH", "RIGHT_EYE", "RIGID", "face_hull_mask"]
