"""Weak-perspective camera of DFNRMVS: normalised pose, face3d Euler angles, model -> camera -> image.

The network predicts a *normalised* pose per view, ``(pitch, yaw, roll, s_norm, tx_norm, ty_norm)``:
angles in radians, scale and translation shifted/scaled so that the regressor's outputs are O(1).
A model-space vertex ``X`` (3DMM units, micrometres for the BFM) is mapped to the camera space of the
256x256 crop by ``s * R @ (X - (0, 0, MODEL_DEPTH_OFFSET)) + (tx, ty, 0)``, in pixels, x right, y up,
origin at the image centre, the camera looking down -z (orthographic projection drops z).
``to_image`` then moves it to pixel coordinates with x right and y down, as face3d's ``to_image`` does.

All functions are batched over a leading dimension and work on any device. The operation order
follows the authors' code (degrees are computed and converted back to radians) so that float32
results are bit-compatible with it.
"""

import math
from typing import NamedTuple

import torch

# Normalisation of the weak-perspective scale and translation (authors' data/BFM/utils.py,
# normalize_pose_params / denormalize_pose_params).
SCALE_MEAN = 1.25e-03
SCALE_STD = 5e-04
TRANSLATION_STD = 10.0

# The authors subtract this depth (model units) from every 3DMM vertex before posing it
# (NRMVSOptimization.compute_vert_from_params), moving the BFM's centroid near the origin.
MODEL_DEPTH_OFFSET = 7.5e4

# Side of the square network input in pixels (the authors' crops are 256x256).
IMAGE_SIZE = 256


class Pose(NamedTuple):
    """Denormalised weak-perspective pose, each field of shape (B,).

    pitch, yaw, roll: Euler angles in degrees (face3d convention, R = Rz @ Ry @ Rx).
    scale: model units -> pixels. tx, ty: translation in pixels (x right, y up).
    """

    pitch: torch.Tensor
    yaw: torch.Tensor
    roll: torch.Tensor
    scale: torch.Tensor
    tx: torch.Tensor
    ty: torch.Tensor


def _check_pose_shape(pose: torch.Tensor) -> None:
    if pose.shape[-1] != 6:
        raise ValueError(
            f"a normalised pose has 6 values (pitch, yaw, roll, s, tx, ty) in its last dimension, "
            f"got shape {tuple(pose.shape)}"
        )


def denormalize_pose(pose: torch.Tensor) -> Pose:
    """Normalised pose (B, 6) -> :class:`Pose` in degrees / pixels."""
    _check_pose_shape(pose)
    return Pose(
        pitch=pose[..., 0] * 180.0 / math.pi,
        yaw=pose[..., 1] * 180.0 / math.pi,
        roll=pose[..., 2] * 180.0 / math.pi,
        scale=pose[..., 3] * SCALE_STD + SCALE_MEAN,
        tx=pose[..., 4] * TRANSLATION_STD,
        ty=pose[..., 5] * TRANSLATION_STD,
    )


def normalize_pose(pose: Pose) -> torch.Tensor:
    """:class:`Pose` in degrees / pixels -> normalised pose (B, 6); inverse of :func:`denormalize_pose`."""
    return torch.stack(
        [
            pose.pitch / 180.0 * math.pi,
            pose.yaw / 180.0 * math.pi,
            pose.roll / 180.0 * math.pi,
            (pose.scale - SCALE_MEAN) / SCALE_STD,
            pose.tx / TRANSLATION_STD,
            pose.ty / TRANSLATION_STD,
        ],
        dim=-1,
    )


def euler_to_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Rotation matrices R = Rz(roll) @ Ry(yaw) @ Rx(pitch) from angles in degrees.

    face3d's right-handed convention: positive pitch looks down, positive yaw looks left, positive
    roll tilts the head right.

    Args:
        pitch, yaw, roll: (B,) angles in degrees.
    Returns:
        (B, 3, 3) rotation matrices.
    """
    x = pitch * math.pi / 180.0
    y = yaw * math.pi / 180.0
    z = roll * math.pi / 180.0
    zeros = torch.zeros_like(x)
    ones = torch.ones_like(x)
    rot_x = torch.stack([ones, zeros, zeros, zeros, x.cos(), -x.sin(), zeros, x.sin(), x.cos()], -1)
    rot_y = torch.stack([y.cos(), zeros, y.sin(), zeros, ones, zeros, -y.sin(), zeros, y.cos()], -1)
    rot_z = torch.stack([z.cos(), -z.sin(), zeros, z.sin(), z.cos(), zeros, zeros, zeros, ones], -1)
    shape = (*x.shape, 3, 3)
    return rot_z.view(shape) @ (rot_y.view(shape) @ rot_x.view(shape))


def transform_vertices(vertices: torch.Tensor, pose: Pose) -> torch.Tensor:
    """Similarity transform s * R @ X + (tx, ty, 0) of model vertices that are already depth-offset.

    Args:
        vertices: (B, n, 3) model-space vertices with :data:`MODEL_DEPTH_OFFSET` already subtracted.
        pose: denormalised pose, fields of shape (B,).
    Returns:
        (B, n, 3) camera-space vertices in pixels (x right, y up, origin at the image centre).
    """
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must have shape (B, n, 3), got {tuple(vertices.shape)}")
    rotation = euler_to_matrix(pose.pitch, pose.yaw, pose.roll)
    scaled = pose.scale.view(-1, 1, 1) * vertices
    rotated = torch.bmm(rotation, scaled.transpose(1, 2)).transpose(1, 2)
    translation = torch.stack([pose.tx, pose.ty, torch.zeros_like(pose.tx)], dim=-1)
    return rotated + translation.view(-1, 1, 3)


def to_image(vertices: torch.Tensor, height: int = IMAGE_SIZE, width: int = IMAGE_SIZE) -> torch.Tensor:
    """Camera space -> image pixel coordinates, as face3d's ``to_image``.

    u = x + W/2, v = H - (y + H/2) - 1 (x right, y down, pixel centres at integers); z is kept.

    Args:
        vertices: (..., n, 3) camera-space vertices in pixels.
    Returns:
        (..., n, 3) image-space vertices.
    """
    x, y, z = vertices.unbind(dim=-1)
    return torch.stack([x + width / 2, height - (y + height / 2) - 1.0, z], dim=-1)


def from_image(points: torch.Tensor, height: int = IMAGE_SIZE, width: int = IMAGE_SIZE) -> torch.Tensor:
    """Image pixel coordinates -> camera space; the inverse of :func:`to_image`.

    x = u - W/2, y = H - 1 - v - H/2; a third coordinate (depth), when present, is kept.

    Args:
        points: (..., 2) or (..., 3) image-space points (x right, y down, pixels).
    Returns:
        The same shape, camera space (x right, y up, origin at the image centre).
    """
    u, v = points[..., 0], points[..., 1]
    moved = [u - width / 2, height - 1.0 - v - height / 2]
    return torch.stack([*moved, *points[..., 2:].unbind(dim=-1)], dim=-1)


def image_to_grid(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel coordinates (..., 2) -> ``grid_sample`` coordinates in [-1, 1] for ``align_corners=True``.

    The authors' ``x_2d_normalize``: x / (W - 1) * 2 - 1, y / (H - 1) * 2 - 1.
    """
    x, y = points.unbind(dim=-1)
    return torch.stack([x / (float(width) - 1.0), y / (float(height) - 1.0)], dim=-1) * 2.0 - 1.0


def pose_vertices(model_vertices: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """Model-space vertices and a normalised pose -> camera-space vertices (pixels).

    Applies the depth offset, then :func:`transform_vertices`.

    Args:
        model_vertices: (B, n, 3) 3DMM vertices (model units).
        pose: (B, 6) normalised pose.
    Returns:
        (B, n, 3) camera-space vertices.
    """
    return transform_vertices(remove_depth_offset(model_vertices), denormalize_pose(pose))


def remove_depth_offset(model_vertices: torch.Tensor) -> torch.Tensor:
    """(..., 3) model vertices -> the same with :data:`MODEL_DEPTH_OFFSET` subtracted from z (before posing)."""
    return model_vertices - model_vertices.new_tensor([0.0, 0.0, MODEL_DEPTH_OFFSET])


def add_depth_offset(vertices: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`remove_depth_offset`: back to the morphable model's own frame."""
    return vertices + vertices.new_tensor([0.0, 0.0, MODEL_DEPTH_OFFSET])


def unpose_vertices(camera_vertices: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`pose_vertices`: camera-space vertices back to the morphable model's frame.

    Args:
        camera_vertices: (B, n, 3) camera-space vertices (pixels). pose: (B, 6) normalised pose.
    Returns:
        (B, n, 3) model-space vertices (model units, depth offset restored).
    """
    params = denormalize_pose(pose)
    rotation = euler_to_matrix(params.pitch, params.yaw, params.roll)  # (B, 3, 3)
    translation = torch.stack([params.tx, params.ty, torch.zeros_like(params.tx)], dim=-1)
    centred = camera_vertices - translation[:, None]
    return add_depth_offset(centred @ rotation / params.scale.view(-1, 1, 1))  # R^T applied to row vectors
