"""A reconstruction in the morphable model's own frame, in millimetres: per-view meshes and the neutral identity.

The model's frame is the one its mean shape is given in (x right, y up, face towards +z, depth centred near
:data:`~models.geometry.camera.MODEL_DEPTH_OFFSET`); the BFM and the built-in default model measure it in
micrometres. A per-view mesh in crop camera space goes back to it by undoing the view's weak-perspective
pose (:func:`models.geometry.camera.unpose_vertices`), keeping that view's expression.

**Neutral identity**: the model's mean plus its identity basis at the reconstruction's identity
coefficients, with every expression coefficient zero. The fitting estimates one identity and a separate
expression per view, so this is exactly its identity. The learned network (FNRMVSNet) optimises an identity
(its last step's shape coefficients) and per-view adaptive-basis displacements that carry expression and
person-specific detail together and cannot be split; its neutral mesh is the identity coefficients alone.
"""

import numpy as np
import torch

from ..geometry.camera import unpose_vertices
from .morphable_model import MorphableModel

# The BFM and the default model are in micrometres (README, "Built-in default").
MODEL_UNITS_PER_MM = 1000.0

# iBUG-68 numbers of the 7 landmarks the NoW benchmark and eval.evaluate's scan protocol use, in their
# order: the subject's right eye outer and inner corners, left eye inner and outer corners, nose bottom
# (subnasale), right and left mouth corners (iBUG 36-41 is the subject's right eye).
EVALUATION_LANDMARKS = (36, 39, 42, 45, 33, 48, 54)


def neutral_vertices(model: MorphableModel, shape_coeffs: np.ndarray) -> np.ndarray:
    """The identity with expression zero (see the module docstring).

    Args:
        shape_coeffs: (ks,) normalised identity coefficients.
    Returns:
        (n, 3) float64 vertices in model units.
    """
    coeffs = torch.as_tensor(np.asarray(shape_coeffs, dtype=np.float32)).reshape(1, -1).to(model.device)
    with torch.no_grad():
        return model.vertices(coeffs)[0].double().cpu().numpy()


def model_frame_millimetres(camera_vertices: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """Per-view meshes in crop camera space (V, n, 3) with their normalised poses (V, 6) -> the model's frame,
    millimetres, (V, n, 3) float64 (each view keeps its expression)."""
    model_units = unpose_vertices(
        torch.as_tensor(np.asarray(camera_vertices, dtype=np.float64)),
        torch.as_tensor(np.asarray(poses, dtype=np.float64)),
    )
    return model_units.numpy() / MODEL_UNITS_PER_MM


def evaluation_landmarks(vertices: np.ndarray, landmark_indices: np.ndarray) -> np.ndarray:
    """(7, 3) the :data:`EVALUATION_LANDMARKS` of a mesh (n, 3) whose 68 iBUG landmark vertices are given."""
    return np.asarray(vertices)[np.asarray(landmark_indices)[list(EVALUATION_LANDMARKS)]]
