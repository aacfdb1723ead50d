"""The default model's tight face region."""

import numpy as np

from models.face_model.face_region import LEFT_EYE_INNER, RIGHT_EYE_INNER, tight_face_region


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
