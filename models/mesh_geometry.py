"""Geometry on meshes of the 3DMM's topology: normals, back-face visibility, face crop, landmark smoothing.

Conventions: the 3DMM's triangles are clockwise seen from the camera, so ``cross(p0 - p1, p0 - p2)``
points *into* the head and a vertex faces the camera when the z of its (unnormalised) normal is negative.
"""

from typing import NamedTuple

import numpy as np
import torch

# Weights of the demo's landmark correction (authors' demo_utils.correct_landmark_verts):
# new = NEIGHBOUR_MEAN_WEIGHT * mean(one-ring) + LANDMARK_SELF_WEIGHT * old.
NEIGHBOUR_MEAN_WEIGHT = 0.9
LANDMARK_SELF_WEIGHT = 0.1


def triangle_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Unnormalised triangle normals ``cross(p0 - p1, p0 - p2)`` (area-weighted, pointing into the head).

    Args:
        vertices: (B, n, 3). triangles: (ntri, 3) int64.
    Returns:
        (B, ntri, 3).
    """
    p0, p1, p2 = (vertices[:, triangles[:, k]] for k in range(3))
    return torch.linalg.cross(p0 - p1, p0 - p2, dim=-1)


def vertex_normal_sums(vertices: torch.Tensor, triangles: torch.Tensor, adjacent: torch.Tensor) -> torch.Tensor:
    """Sum of the adjacent triangles' unnormalised normals at each vertex, summed in table order.

    Args:
        vertices: (B, n, 3). triangles: (ntri, 3). adjacent: (n, k) adjacent-triangle table padded with ntri.
    Returns:
        (B, n, 3).
    """
    normals = triangle_normals(vertices, triangles)
    padded = torch.cat([normals, torch.zeros_like(normals[:, :1])], dim=1)
    batch, n = vertices.shape[:2]
    return padded[:, adjacent.reshape(-1)].view(batch, n, adjacent.shape[1], 3).sum(dim=2)


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor, adjacent: torch.Tensor) -> torch.Tensor:
    """Unit vertex normals (into the head for the 3DMM's winding); isolated vertices get (1, 0, 0).

    As face3d's ``get_normal``. Shapes as :func:`vertex_normal_sums`.
    """
    return unit_normals(vertex_normal_sums(vertices, triangles, adjacent))


def unit_normals(sums: torch.Tensor) -> torch.Tensor:
    """Normalise summed normals (..., 3) to unit length; zero sums (isolated vertices) become (1, 0, 0)."""
    length = sums.norm(dim=-1, keepdim=True)
    isolated = length == 0
    fallback = torch.zeros_like(sums)
    fallback[..., 0] = 1.0
    return torch.where(isolated, fallback, sums / torch.where(isolated, torch.ones_like(length), length))


def backface_visibility(vertices: torch.Tensor, triangles: torch.Tensor, adjacent: torch.Tensor) -> torch.Tensor:
    """Back-face culling visibility of each vertex, as the authors' ``backface_culling``.

    A vertex is visible when the z of the sum of its adjacent triangles' normals is negative (it faces
    the camera, which looks down -z). Self-occlusion is not tested.

    Args:
        vertices: (B, n, 3) camera-space vertices. triangles: (ntri, 3). adjacent: (n, k) padded with ntri.
    Returns:
        (B, n) bool.
    """
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must have shape (B, n, 3), got {tuple(vertices.shape)}")
    with torch.no_grad():
        return vertex_normal_sums(vertices, triangles, adjacent)[..., 2] < 0.0


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
