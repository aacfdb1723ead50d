"""Per-vertex masks of the model: the tight face region and the photometric weights."""

import numpy as np
from scipy.spatial.distance import cdist

from models.face_region import LEFT_EYE_INNER, RIGHT_EYE_INNER, tight_face_region
from tools.default_face_model.ibug import IBUG_EYES, IBUG_MOUTH

# Photometric weights: 1 within these distances (micrometres) of the eye / mouth landmarks, else 0.
PHOTO_EYE_RADIUS = 1.2e4
PHOTO_MOUTH_RADIUS = 1.0e4


def face_region(vertices: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(n,) bool: the authors' tight face region, with vertices exactly level with the nose bridge counted below it.

    The rule splits the face at the height of the inner eye corners with strict inequalities, so vertices exactly
    at that height are in neither part. An exactly symmetric model has such vertices (the inner eye corners
    themselves); each is judged as if it were a micrometre lower.
    """
    region = tight_face_region(vertices, landmarks)
    bridge = (vertices[landmarks[LEFT_EYE_INNER], 1] + vertices[landmarks[RIGHT_EYE_INNER], 1]) / 2
    level = np.flatnonzero(vertices[:, 1] == bridge)
    probes = np.concatenate([vertices, vertices[level] - (0.0, 1.0, 0.0)])
    region[level] |= tight_face_region(probes, landmarks)[len(vertices) :]
    return region


def photo_weights(vertices: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(n,) float32: 1 near the eyes and the mouth (:data:`PHOTO_EYE_RADIUS`, :data:`PHOTO_MOUTH_RADIUS`), else 0."""
    eyes = cdist(vertices, vertices[landmarks[list(IBUG_EYES)]]).min(1) <= PHOTO_EYE_RADIUS
    mouth = cdist(vertices, vertices[landmarks[list(IBUG_MOUTH)]]).min(1) <= PHOTO_MOUTH_RADIUS
    return (eyes | mouth).astype(np.float32)
