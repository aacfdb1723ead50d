"""The face's variation priors: identity and expression kernel scales and symmetry, and where expressions act."""

from dataclasses import dataclass

import numpy as np

from models.face_model.landmark_layout import BROWS, EYES, LOWER_JAW, MOUTH
from tools.default_face_model.gp_basis import KernelScale


@dataclass(frozen=True)
class ExpressionRegion:
    """Where expressions move the face: within ~``radius`` (micrometres, geodesic) of these iBUG landmarks."""

    landmarks: tuple[int, ...]
    amplitude: float
    radius: float


# Identity: smooth variation of the whole face, from face proportions (8 cm) to local shape (1.5 cm).
IDENTITY_SCALES = (KernelScale(8.0e4, 5.0e3), KernelScale(3.5e4, 2.5e3), KernelScale(1.5e4, 1.0e3))
# Share of mirror-symmetric variation (0: none, 1: perfectly symmetric faces only).
IDENTITY_SYMMETRY = 0.8
# Expression: local, larger movements (lips and jaw up to ~1-2 cm, eyelids and brows a few mm).
EXPRESSION_SCALES = (KernelScale(3.0e4, 4.0e3), KernelScale(1.5e4, 2.0e3), KernelScale(8.0e3, 6.0e2))
EXPRESSION_SYMMETRY = 0.5
EXPRESSION_REGIONS = (
    ExpressionRegion(MOUTH + LOWER_JAW, amplitude=1.0, radius=2.0e4),
    ExpressionRegion(EYES, amplitude=0.6, radius=1.0e4),
    ExpressionRegion(BROWS, amplitude=0.7, radius=1.5e4),
)


def expression_amplitude(geodesic: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(n,) how much expressions move each vertex: the largest Gaussian fall-off of :data:`EXPRESSION_REGIONS`."""
    amplitude = np.zeros(geodesic.shape[0])
    for region in EXPRESSION_REGIONS:
        distance = geodesic[:, landmarks[list(region.landmarks)]].min(1)
        amplitude = np.maximum(amplitude, region.amplitude * np.exp(-np.square(distance) / (2 * region.radius**2)))
    return amplitude
