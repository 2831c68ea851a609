"""Face pipeline: landmarks (mediapipe face mesh), the crop, the head-pose teacher, regions, AKD."""
