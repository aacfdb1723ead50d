"""Closed-form weak-perspective pose of a morphable model's mean face from 2D landmarks."""

import math

import torch

from ..face_model.landmark_layout import FIXED_LANDMARKS, NUM_LANDMARKS
from ..face_model.morphable_model import MorphableModel
from ..geometry.camera import Pose, from_image, normalize_pose, remove_depth_offset


def check_landmarks(landmarks: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``landmarks`` is a finite (V, 68, 2) tensor."""
    if landmarks.dim() != 3 or landmarks.shape[1:] != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must have shape (V, {NUM_LANDMARKS}, 2), got {tuple(landmarks.shape)}")
    if not bool(torch.isfinite(landmarks).all()):
        raise ValueError("landmarks contain NaN or infinite values")


def landmark_pose(mm: MorphableModel, landmarks: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Closed-form weak-perspective pose of the mean face from 2D landmarks.

    Per view, the affine camera ``x = P X + t`` (P: 2x3) from the mean shape's landmark vertices (depth
    offset by :data:`models.geometry.camera.MODEL_DEPTH_OFFSET`) to the camera-space landmarks is solved by linear
    least squares on the non-contour landmarks (:data:`models.face_model.landmark_layout.FIXED_LANDMARKS`); P is then
    projected to the nearest scaled rotation ``s * R[:2]`` (SVD; s = mean singular value), completed by
    ``r3 = r1 x r2`` and decomposed into face3d's Euler angles ``R = Rz(roll) Ry(yaw) Rx(pitch)``.

    Args:
        mm: the morphable model.
        landmarks: (V, 68, 2) image pixels (x right, y down).
        image_size: (H, W) of the image the landmarks are given in.
    Returns:
        (V, 6) normalised pose on the landmarks' device and dtype.
    """
    check_landmarks(landmarks)
    height, width = image_size
    fixed = torch.tensor(FIXED_LANDMARKS, device=mm.device)
    model_points = mm.mean_shape.view(-1, 3)[mm.landmark_indices[fixed]].to(landmarks.device, torch.float64)
    model_points = remove_depth_offset(model_points)
    rhs = from_image(landmarks[:, list(FIXED_LANDMARKS)].to(torch.float64), height, width)  # (V, k, 2)
    design = torch.cat([model_points, torch.ones_like(model_points[:, :1])], dim=1)  # (k, 4)
    solution = torch.linalg.lstsq(design.expand(rhs.shape[0], -1, -1), rhs).solution  # (V, 4, 2)
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
    return normalize_pose(pose).to(landmarks.dtype)
