"""Operations on meshes of the 3DMM's topology: winding for export, cropping to a vertex mask, smoothing the
landmark vertices."""

from typing import NamedTuple

import numpy as np
import torch

# Weights of the demo's landmark correction (authors' demo_utils.correct_landmark_verts):
# new = NEIGHBOUR_MEAN_WEIGHT * mean(one-ring) + LANDMARK_SELF_WEIGHT * old.
NEIGHBOUR_MEAN_WEIGHT = 0.9
LANDMARK_SELF_WEIGHT = 0.1


def outward_triangles(triangles: np.ndarray) -> np.ndarray:
    """The 3DMM's triangles (t, 3), clockwise seen from the camera, reversed so that normals point out of the
    face, as the authors write their meshes."""
    return np.ascontiguousarray(np.asarray(triangles, dtype=np.int64)[:, ::-1])


class CroppedMesh(NamedTuple):
    """A sub-mesh: vertices (m, 3), triangles (t, 3) re-indexed into them, kept_vertices (m,) original indices."""

    vertices: np.ndarray
    triangles: np.ndarray
    kept_vertices: np.ndarray


def crop_mesh(vertices: np.ndarray, triangles: np.ndarray, mask: np.ndarray) -> CroppedMesh:
    """Keep the masked vertices and the triangles whose three corners are all kept (``filter_non_tight_face_vert``).

    Triangle order is preserved; vertex indices are remapped to the kept vertices' order.

    Args:
        vertices: (n, 3). triangles: (ntri, 3) 0-based. mask: (n,) or (n, 1) bool.
    """
    mask = np.asarray(mask, dtype=bool).reshape(-1)
    if mask.shape[0] != vertices.shape[0]:
        raise ValueError(f"mask has {mask.shape[0]} entries for {vertices.shape[0]} vertices")
    kept = np.flatnonzero(mask)
    remap = np.full(vertices.shape[0], -1, dtype=np.int64)
    remap[kept] = np.arange(kept.shape[0])
    new_triangles = remap[np.asarray(triangles, dtype=np.int64)]
    new_triangles = new_triangles[(new_triangles >= 0).all(axis=1)]
    return CroppedMesh(vertices=vertices[kept], triangles=new_triangles, kept_vertices=kept)


def correct_landmark_vertices(
    vertices: torch.Tensor,
    landmark_indices: torch.Tensor,
    neighbour_vertices: torch.Tensor,
    neighbour_counts: torch.Tensor,
) -> torch.Tensor:
    """The demo's landmark correction: pull each landmark vertex towards the mean of its one-ring.

    Landmark vertices are dragged by the landmark loss and tend to form spikes; the authors replace them
    by ``0.9 * mean(neighbours) + 0.1 * vertex`` (means taken from the uncorrected mesh).

    Args:
        vertices: (B, n, 3). landmark_indices: (68,). neighbour_vertices: (n, m) padded with n.
        neighbour_counts: (n,).
    Returns:
        (B, n, 3) corrected copy.
    """
    batch, n = vertices.shape[:2]
    padded = torch.cat([vertices, torch.zeros_like(vertices[:, :1])], dim=1)
    neighbour_sum = padded[:, neighbour_vertices.reshape(-1)].view(batch, n, neighbour_vertices.shape[1], 3).sum(2)
    neighbour_mean = neighbour_sum / neighbour_counts.view(1, n, 1).to(vertices.dtype)
    corrected = vertices.clone()
    corrected[:, landmark_indices] = (
        NEIGHBOUR_MEAN_WEIGHT * neighbour_mean[:, landmark_indices]
        + LANDMARK_SELF_WEIGHT * vertices[:, landmark_indices]
    )
    return corrected
