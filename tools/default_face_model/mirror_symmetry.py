"""The face's mirror symmetry: the mirror vertex map from a photo and its mirror image, symmetrisation."""

import numpy as np
from scipy.optimize import linear_sum_assignment


def mirror_map(mesh: np.ndarray, mirrored_mesh: np.ndarray) -> np.ndarray:
    """Mirror vertex of each vertex, from detections on a photo and on its mirror image.

    Landmark i of the mirrored photo, mapped back, lies where landmark mirror(i) of the photo does; a
    minimum-cost assignment on 3D distances makes the map one-to-one.

    Args:
        mesh, mirrored_mesh: (n, 3) as :class:`PhotoLandmarks`.
    Returns:
        (n,) int64 involution.
    """
    distances = np.linalg.norm(mirrored_mesh[:, None] - mesh[None], axis=2)
    rows, cols = linear_sum_assignment(distances)
    mirror = np.empty(len(mesh), dtype=np.int64)
    mirror[rows] = cols
    if not np.array_equal(mirror[mirror], np.arange(len(mesh))):
        raise ValueError("the mirror assignment is not an involution")
    return mirror


def symmetric_frame(points: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """Mirror-symmetrise points and express them in the frame of their mid-plane.

    The frame: x = the mid-plane's normal (pointing to +x of the input), z = the input's z made orthogonal to
    it (so the view direction is kept), y = z cross x; origin = the mean of the mirror pairs' midpoints.

    Args:
        points: (n, 3) in model axes. mirror: (n,) involution.
    Returns:
        (n, 3) points, exactly symmetric: ``out[mirror] == out * (-1, 1, 1)``.
    """
    _, _, basis = np.linalg.svd(points - points[mirror], full_matrices=False)
    x_axis = basis[0] * np.sign(basis[0, 0])
    z_axis = np.array([0.0, 0.0, 1.0]) - x_axis[2] * x_axis
    z_axis /= np.linalg.norm(z_axis)
    frame = np.stack([x_axis, np.cross(z_axis, x_axis), z_axis])
    local = (points - (points + points[mirror]).mean(0) / 2) @ frame.T
    return mirror_average(local, mirror)


def mirror_average(points: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """(points + reflected mirror points) / 2, exactly symmetric about x = 0; midline points get x = 0."""
    symmetric = (points + points[mirror] * (-1.0, 1.0, 1.0)) / 2
    symmetric[mirror == np.arange(len(mirror)), 0] = 0.0
    return symmetric
