"""The part of a morphable model the weights-free fit evaluates while it optimises: the face region.

Visibility and normals computed on this sub-mesh equal those of the whole mesh at its core vertices (the face
region, the landmark vertices and the dense landmarks' triangle corners), whose adjacent triangles are all kept in
their original order.
"""

from typing import NamedTuple

import numpy as np
import torch

from ..face_model.dense_landmarks import DenseLandmarks
from ..face_model.linear_model import LinearFaceModel
from ..face_model.mesh_topology import adjacent_triangles
from ..face_model.morphable_model import MorphableModel


class RegionMesh(NamedTuple):
    """The face region (plus landmark vertices) with every triangle touching it, in local indices.

    face: the :class:`LinearFaceModel` of its s vertices. triangles: (t, 3) local.
    adjacent: (s, k) local adjacent-triangle table padded with t. face_region: (s,) bool.
    landmarks: (68,) local landmark indices. photometric: (p,) local face-region sample indices.
    dense_corners: (K, 3) local indices of the dense landmarks' triangle corners, or None.
    """

    face: LinearFaceModel
    triangles: torch.Tensor
    adjacent: torch.Tensor
    face_region: torch.Tensor
    landmarks: torch.Tensor
    photometric: torch.Tensor
    dense_corners: torch.Tensor | None


def region_mesh(
    mm: MorphableModel, photometric_points: int, device: torch.device, dense: DenseLandmarks | None = None
) -> RegionMesh:
    """Cut the region sub-mesh out of ``mm`` (numpy topology, then tensors on ``device``).

    Args:
        photometric_points: face-region vertices sampled for the photometric term (evenly spaced in index
            order; all when fewer).
        dense: the dense landmarks whose triangle corners join the core, or None.
    """
    n = mm.num_vertices
    triangles = mm.triangles.cpu().numpy()
    core = mm.face_region_mask.cpu().numpy().copy()
    core[mm.landmark_indices.cpu().numpy()] = True
    if dense is not None:
        core[dense.triangle_vertices.cpu().numpy().reshape(-1)] = True
    kept_triangles = triangles[core[triangles].any(axis=1)]
    support = np.zeros(n, dtype=bool)
    support[kept_triangles.reshape(-1)] = True
    support |= core
    vertex_ids = np.flatnonzero(support)
    local = np.full(n, -1, dtype=np.int64)
    local[vertex_ids] = np.arange(vertex_ids.size)
    local_triangles = local[kept_triangles]
    face_region = mm.face_region_mask.cpu().numpy()[vertex_ids]
    region_local = np.flatnonzero(face_region)
    count = min(photometric_points, region_local.size)
    photometric = region_local[np.linspace(0, region_local.size - 1, count).round().astype(np.int64)]
    dense_corners = None
    if dense is not None:
        dense_corners = torch.from_numpy(local[dense.triangle_vertices.cpu().numpy()]).to(device)

    return RegionMesh(
        face=mm.linear.take(torch.from_numpy(vertex_ids)).to(device),
        triangles=torch.from_numpy(local_triangles).to(device),
        adjacent=torch.from_numpy(adjacent_triangles(local_triangles, vertex_ids.size)).to(device),
        face_region=torch.from_numpy(face_region).to(device),
        landmarks=torch.from_numpy(local[mm.landmark_indices.cpu().numpy()]).to(device),
        photometric=torch.from_numpy(np.unique(photometric)).to(device),
        dense_corners=dense_corners,
    )
