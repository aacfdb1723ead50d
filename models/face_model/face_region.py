"""The tight face region of a 3DMM: the vertices the feature-metric loss and adaptive bases work on.

The authors' ``get_tight_face_region`` intersects two axis-aligned ellipsoids centred between the inner
eye corners: one bounds the whole face, the other cuts the forehead (it only applies above that point).
Both are scaled by a radius derived from the eye and nose landmark distances, so the rule adapts to any
model in the BFM's orientation (x right, y up, face towards +z).
"""

import numpy as np

# iBUG 68-point landmark numbers (0-based) the rule is built from.
NOSE_TIP_BOTTOM = 30
LEFT_EYE_OUTER, LEFT_EYE_INNER = 36, 39
RIGHT_EYE_INNER, RIGHT_EYE_OUTER = 42, 45

# Radius = RADIUS_FACTOR * mean(outer-eye distance, nose length) (authors' get_tight_face_region).
RADIUS_FACTOR = 1.5
# Semi-axes (x, y, z) of the two ellipsoids, in units of that radius.
FACE_ELLIPSOID_AXES = (1.2, 1.075, 0.65)
FOREHEAD_ELLIPSOID_AXES = (1.0, 0.5, 0.75)


def _inside(vertices: np.ndarray, centre: np.ndarray, semi_axes: np.ndarray) -> np.ndarray:
    offsets = (vertices - centre) / semi_axes
    return np.sum(np.square(offsets), axis=1) <= 1


def tight_face_region(vertices: np.ndarray, landmark_indices: np.ndarray) -> np.ndarray:
    """Boolean mask of the face-region vertices of the mean face.

    Args:
        vertices: (n, 3) float64 mean-face vertices (model units, x right, y up, face towards +z).
        landmark_indices: (68,) vertex indices of the iBUG landmarks.
    Returns:
        (n,) bool mask.
    """
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must have shape (n, 3), got {vertices.shape}")
    landmarks = vertices[landmark_indices]
    nose_bottom = landmarks[NOSE_TIP_BOTTOM]
    nose_bridge = (landmarks[LEFT_EYE_INNER] + landmarks[RIGHT_EYE_INNER]) / 2
    outer_eye_distance = np.linalg.norm(landmarks[LEFT_EYE_OUTER] - landmarks[RIGHT_EYE_OUTER])
    nose_length = np.linalg.norm(nose_bridge - nose_bottom)
    radius = RADIUS_FACTOR * (outer_eye_distance + nose_length) / 2

    in_face = _inside(vertices, nose_bridge, np.array(FACE_ELLIPSOID_AXES) * radius)
    in_forehead = _inside(vertices, nose_bridge, np.array(FOREHEAD_ELLIPSOID_AXES) * radius)
    above_bridge = vertices[:, 1] > nose_bridge[1]
    below_bridge = vertices[:, 1] < nose_bridge[1]
    return in_face & ((in_forehead & above_bridge) | below_bridge)
