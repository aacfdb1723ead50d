"""Closed-form weak-perspective pose of a morphable model's mean face from 2D landmarks."""

import math

import torch

from ..face_model.landmark_layout import FIXED_LANDMARKS, NUM_LANDMARKS
from ..face_model.morphable_model import MorphableModel
from ..geometry.camera import Pose, from_image, normalize_pose, remove_depth_offset


def check_landmarks(landmarks: torch.Tensor, count: int = NUM_LANDMARKS) -> None:
    """Raise ``ValueError`` unless ``landmarks`` is a finite (V, count, 2) tensor."""
    if landmarks.dim() != 3 or landmarks.shape[1:] != (count, 2):
        raise ValueError(f"landmarks must have shape (V, {count}, 2), got {tuple(landmarks.shape)}")
    if not bool(torch.isfinite(landmarks).all()):
        raise ValueError("landmarks contain NaN or infinite values")


def affine_pose(
    model_points: torch.Tensor,
    image_points: torch.Tensor,
    image_size: tuple[int, int],
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Closed-form weak-perspective pose that maps 3D model points onto their 2D image positions.

    Per view, the affine camera ``x = P X + t`` (P: 2x3) from the model points (depth offset by
    :data:`models.geometry.camera.MODEL_DEPTH_OFFSET`) to the camera-space image points is solved by linear
    least squares (weighted by ``weights``); P is then projected to the nearest scaled rotation ``s * R[:2]``
    (SVD; s = mean singular value), completed by ``r3 = r1 x r2`` and decomposed into face3d's Euler angles
    ``R = Rz(roll) Ry(yaw) Rx(pitch)``.

    Args:
        model_points: (k, 3) model-space points (model units), k >= 4, not coplanar.
        image_points: (V, k, 2) their image pixels (x right, y down).
        image_size: (H, W) of the image.
        weights: (V, k) non-negative weights of the points (at least 4 positive, not coplanar), or None (all 1).
    Returns:
        (V, 6) normalised pose on the image points' device and dtype.
    """
    height, width = image_size
    model = remove_depth_offset(model_points.to(image_points.device, torch.float64))
    rhs = from_image(image_points.to(torch.float64), height, width)  # (V, k, 2)
    design = torch.cat([model, torch.ones_like(model[:, :1])], dim=1).expand(rhs.shape[0], -1, -1)  # (V, k, 4)
    if weights is not None:
        root = weights.to(rhs).clamp(min=0).sqrt().unsqueeze(-1)
        design, rhs = design * root, rhs * root
    solution = torch.linalg.lstsq(design, rhs).solution  # (V, 4, 2)
    affine = solution[:, :3].mT  # (V, 2, 3)
    u, singular, vh = torch.linalg.svd(affine, full_matrices=False)
    rows = u @ vh  # (V, 2, 3), orthonormal rows
    rotation = torch.cat([rows, torch.linalg.cross(rows[:, 0], rows[:, 1]).unsqueeze(1)], dim=1)
    pitch = torch.atan2(rotation[:, 2, 1], rotation[:, 2, 2])
    yaw = torch.atan2(-rotation[:, 2, 0], rotation[:, 2, 1:].norm(dim=-1))
    roll = torch.atan2(rotation[:, 1, 0], rotation[:, 0, 0])
    degrees = 180.0 / math.pi
    pose = Pose(
        pitch=pitch * degrees,
        yaw=yaw * degrees,
        roll=roll * degrees,
        scale=singular.mean(dim=-1),
        tx=solution[:, 3, 0],
        ty=solution[:, 3, 1],
    )
    return normalize_pose(pose).to(image_points.dtype)


def landmark_pose(mm: MorphableModel, landmarks: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Closed-form weak-perspective pose of the mean face from its 68 iBUG landmarks (:func:`affine_pose` on the
    non-contour landmarks, :data:`models.face_model.landmark_layout.FIXED_LANDMARKS`).

    Args:
        mm: the morphable model.
        landmarks: (V, 68, 2) image pixels (x right, y down).
        image_size: (H, W) of the image the landmarks are given in.
    Returns:
        (V, 6) normalised pose on the landmarks' device and dtype.
    """
    check_landmarks(landmarks)
    fixed = torch.tensor(FIXED_LANDMARKS, device=mm.device)
    model_points = mm.mean_shape.view(-1, 3)[mm.landmark_indices[fixed]]
    return affine_pose(model_points, landmarks[:, list(FIXED_LANDMARKS)], image_size)
