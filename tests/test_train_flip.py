"""The left-right landmark map used by flip augmentation is a consistent mirror symmetry of the mesh."""

from __future__ import annotations

import numpy as np
import pytest
from mediapipe.python.solutions import face_mesh_connections as mesh

from codec.motion import angles_to_rotation, rotation_to_angles
from codec.train.flip import MIRROR_LANDMARK_INDEX, NUM_LANDMARKS, flip_landmarks, flip_pose

MIRROR = np.array(MIRROR_LANDMARK_INDEX)


def _edges(connections: frozenset[tuple[int, int]]) -> set[tuple[int, int]]:
    return {(min(a, b), max(a, b)) for a, b in connections}


def _mapped(edges: set[tuple[int, int]]) -> set[tuple[int, int]]:
    return {(min(MIRROR[a], MIRROR[b]), max(MIRROR[a], MIRROR[b])) for a, b in edges}


def test_mirror_map_is_an_involution_with_midline_fixed_points() -> None:
    assert MIRROR.shape == (NUM_LANDMARKS,)
    np.testing.assert_array_equal(MIRROR[MIRROR], np.arange(NUM_LANDMARKS))
    fixed = set(np.flatnonzero(MIRROR == np.arange(NUM_LANDMARKS)).tolist())
    assert {0, 1, 4, 6, 8, 9, 10, 13, 14, 17, 152, 168} <= fixed  # lips' centre, nose, forehead, chin
    assert len(fixed) == 28


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (mesh.FACEMESH_LEFT_EYE, mesh.FACEMESH_RIGHT_EYE),
        (mesh.FACEMESH_LEFT_EYEBROW, mesh.FACEMESH_RIGHT_EYEBROW),
        (mesh.FACEMESH_LEFT_IRIS, mesh.FACEMESH_RIGHT_IRIS),
        (mesh.FACEMESH_LIPS, mesh.FACEMESH_LIPS),
        (mesh.FACEMESH_FACE_OVAL, mesh.FACEMESH_FACE_OVAL),
    ],
)
def test_mirror_map_swaps_named_regions(left: frozenset[tuple[int, int]], right: frozenset[tuple[int, int]]) -> None:
    assert _mapped(_edges(left)) == _edges(right)


def test_mirror_map_preserves_almost_all_mesh_edges() -> None:
    edges = _edges(mesh.FACEMESH_TESSELATION)
    assert len(_mapped(edges) & edges) >= 0.995 * len(edges)


def test_flip_landmarks_mirrors_x_and_remaps() -> None:
    rng = np.random.default_rng(0)
    landmarks = rng.uniform(0, 256, (2, NUM_LANDMARKS, 3)).astype(np.float32)
    flipped = flip_landmarks(landmarks, 256)
    assert flipped.shape == landmarks.shape
    np.testing.assert_allclose(flipped[:, 33, 0], 256 - landmarks[:, MIRROR[33], 0])
    np.testing.assert_array_equal(flipped[:, 33, 1:], landmarks[:, MIRROR[33], 1:])
    np.testing.assert_allclose(flip_landmarks(flipped, 256), landmarks, atol=1e-4)
    with pytest.raises(ValueError, match="478"):
        flip_landmarks(landmarks[:, :468], 256)


def test_flip_pose_matches_mirrored_rotation() -> None:
    mirror = np.diag([-1.0, 1.0, 1.0])
    for yaw, pitch, roll in [(20.0, -10.0, 5.0), (-35.0, 12.0, -8.0)]:
        rotated = mirror @ angles_to_rotation(yaw, pitch, roll).astype(np.float64) @ mirror
        np.testing.assert_allclose(rotation_to_angles(rotated), flip_pose(np.array([yaw, pitch, roll])), atol=1e-3)
