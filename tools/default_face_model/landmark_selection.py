"""The mesh vertex of each iBUG landmark, chosen from the detections on the photos."""

import numpy as np

from models.face_model.landmark_layout import MIRROR, OUTER_EYE_CORNERS
from models.face_model.morphable_model import NUM_LANDMARKS


def select_landmarks(
    projections: list[np.ndarray], visible: list[np.ndarray], detections: list[np.ndarray], mirror: np.ndarray
) -> np.ndarray:
    """Vertex of each iBUG landmark: closest in image projection, over all photos, in mirror pairs.

    Landmark k and its partner m get vertices v and mirror(v), v minimising over the photos
    ``(|proj(v) - det[k]|^2 + |proj(mirror v) - det[m]|^2) / d^2`` (d: the photo's outer-eye distance),
    with v and mirror(v) visible; midline landmarks take midline vertices.

    Args:
        projections: per photo, (n, 2) vertex image positions. visible: per photo, (n,) bool.
        detections: per photo, (68, 2) landmarks. mirror: (n,) involution.
    Returns:
        (68,) int64.
    """
    n = len(mirror)
    midline = mirror == np.arange(n)
    chosen = np.full(NUM_LANDMARKS, -1, dtype=np.int64)
    for k in range(NUM_LANDMARKS):
        if chosen[k] >= 0:
            continue
        m = int(MIRROR[k])
        cost = np.zeros(n)
        for proj, vis, det in zip(projections, visible, detections, strict=True):
            scale = np.linalg.norm(det[OUTER_EYE_CORNERS[0]] - det[OUTER_EYE_CORNERS[1]])
            own = np.sum((proj - det[k]) ** 2, 1)
            partner = np.sum((proj[mirror] - det[m]) ** 2, 1)
            cost += np.where(vis & vis[mirror], (own + partner) / scale**2, np.inf)
        if m == k:
            cost[~midline] = np.inf
        vertex = int(np.argmin(cost))
        if not np.isfinite(cost[vertex]):
            raise ValueError(f"no visible vertex for landmark {k}")
        chosen[k], chosen[m] = vertex, mirror[vertex]
    return chosen
