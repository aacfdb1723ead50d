"""Which vertices a camera sees, and the visible vertex nearest to a 2D point.

Visibility is the authors' back-face test: a vertex is visible when the z of its summed triangle normals
is negative (it faces the camera, which looks down -z; see :mod:`models.geometry.normals`).
Self-occlusion is not tested.
"""

import torch

from .normals import vertex_normal_sums

# Distance (pixels) added to invisible vertices so that a nearest-vertex search never picks them while a
# visible one exists (the authors' landmark_loss / land3d_loss use 1e6).
INVISIBLE_PENALTY = 1e6


def backface_visibility(vertices: torch.Tensor, triangles: torch.Tensor, adjacent: torch.Tensor) -> torch.Tensor:
    """Back-face visibility of each vertex, as the authors' ``backface_culling``.

    Args:
        vertices: (B, n, 3) camera-space vertices. triangles: (t, 3). adjacent: (n, k) padded with t.
    Returns:
        (B, n) bool.
    """
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must have shape (B, n, 3), got {tuple(vertices.shape)}")
    with torch.no_grad():
        return facing_camera(vertex_normal_sums(vertices, triangles, adjacent))


def facing_camera(normal_sums: torch.Tensor) -> torch.Tensor:
    """(..., 3) summed triangle normals (:func:`~models.geometry.normals.vertex_normal_sums`) -> (...) bool, the
    back-face test of :func:`backface_visibility`."""
    return normal_sums[..., 2] < 0.0


def visible_distances(
    points: torch.Tensor, projected: torch.Tensor, visible: torch.Tensor, exact: bool = True
) -> torch.Tensor:
    """2D distances from each point to each vertex, invisible vertices pushed away by :data:`INVISIBLE_PENALTY`.

    Args:
        points: (..., L, 2) image points. projected: (..., n, 2) projected vertices. visible: (..., n) bool.
        exact: compute from coordinate differences (what an argmin that must match the authors' needs);
            False lets torch use the faster matrix-product form for large sets (rounding ~1e-4 px), enough
            to pre-select candidates.
    Returns:
        (..., L, n) distances in pixels.
    """
    mode = "donot_use_mm_for_euclid_dist" if exact else "use_mm_for_euclid_dist_if_necessary"
    distance = torch.cdist(points, projected, compute_mode=mode)
    return distance + (~visible).unsqueeze(-2).to(distance.dtype) * INVISIBLE_PENALTY


def closest_visible_vertices(points: torch.Tensor, projected: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Index of the visible vertex nearest to each point (first on ties); (..., L) int64.

    With no visible vertex, the nearest invisible one is chosen, as in the authors' code. Shapes as
    :func:`visible_distances`.
    """
    return visible_distances(points, projected, visible).argmin(dim=-1)
