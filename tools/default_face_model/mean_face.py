"""The model's mean face: the generalised Procrustes average of MediaPipe meshes of many faces.

One person's face mesh is a poor mean: distances from other people's meshes to it are about a third larger than
to an average of many (docs in the build script). Each photo's mesh is first made mirror-symmetric on its own
(the mean of the mesh detected on the photo and the one detected on its mirror image, re-indexed by the mirror
map), then all are aligned by similarity transforms to their running mean until it settles (Gower 1975).
"""

import numpy as np
import torch

from models.geometry.procrustes import procrustes
from tools.default_face_model.photos import PhotoMesh, image_to_model_axes

# Generalised Procrustes iterations: at most this many, stopping when the mean moves less than the tolerance
# (relative to its size).
PROCRUSTES_ITERATIONS = 50
PROCRUSTES_TOLERANCE = 1e-10


def mirror_symmetric_mesh(face: PhotoMesh, mirror: np.ndarray) -> np.ndarray:
    """(468, 3) the photo's mesh averaged with its mirror detection, in model axes (x right, y up, z out)."""
    return image_to_model_axes((face.mesh + face.mirrored_mesh[mirror]) / 2)


def procrustes_mean(shapes: np.ndarray) -> np.ndarray:
    """Generalised Procrustes average (similarity) of point sets in correspondence.

    Args:
        shapes: (S, K, 3) point sets.
    Returns:
        (K, 3) their average after aligning each to it, in the position, orientation and scale of ``shapes[0]``.
    """
    points = torch.from_numpy(np.asarray(shapes, dtype=np.float64))
    first = points[:1]
    mean = first[0]
    for _ in range(PROCRUSTES_ITERATIONS):
        aligned = procrustes(mean.expand_as(points), points).aligned
        average = procrustes(first, aligned.mean(dim=0, keepdim=True)).aligned[0]
        change = float((average - mean).square().sum() / (average - average.mean(0)).square().sum())
        mean = average
        if change < PROCRUSTES_TOLERANCE:
            break
    return mean.numpy()


def mean_face(faces: list[PhotoMesh], mirror: np.ndarray) -> np.ndarray:
    """(468, 3) model-axes average of the faces' mirror-symmetric meshes, in the frame and scale of the first."""
    return procrustes_mean(np.stack([mirror_symmetric_mesh(face, mirror) for face in faces]))
