"""Triangle and vertex normals of meshes in the 3DMM's convention.

The 3DMM's triangles (BFM, the default model) are clockwise seen from the camera, so the triangle normal
``cross(p0 - p1, p0 - p2)`` points *into* the head; a vertex faces the camera (which looks down -z) when
the z of its summed normal is negative. Callers wanting outward normals negate the result, or pass the
triangles reversed (``triangles.flip(1)``), which gives ``cross(p2 - p1, p2 - p0)``, as the authors'
``normal_loss`` computes them.
"""

import torch


def triangle_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Unnormalised triangle normals ``cross(p0 - p1, p0 - p2)`` (length: twice the triangle's area).

    Args:
        vertices: (..., n, 3). triangles: (t, 3) int64.
    Returns:
        (..., t, 3).
    """
    # index_select: the same values as advanced indexing, about 3x faster on CPU
    p0, p1, p2 = (torch.index_select(vertices, -2, triangles[:, k]) for k in range(3))
    return torch.linalg.cross(p0 - p1, p0 - p2, dim=-1)


def vertex_normal_sums(
    vertices: torch.Tensor, triangles: torch.Tensor, adjacent: torch.Tensor | None = None
) -> torch.Tensor:
    """Sum of the adjacent triangles' unnormalised normals at each vertex.

    Args:
        vertices: (..., n, 3). triangles: (t, 3) int64.
        adjacent: (m, k) adjacent-triangle table padded with t (rows of the vertices wanted, e.g.
            ``MorphableModel.adjacent_triangles`` or a subset of its rows): sums are taken in table order,
            as the authors' code does (float32 sums are order-sensitive). None: every vertex, scattered
            from the triangle list (any triangles, no table needed).
    Returns:
        (..., m, 3) with a table, else (..., n, 3).
    """
    normals = triangle_normals(vertices, triangles)
    if adjacent is None:
        sums = torch.zeros_like(vertices)
        for k in range(3):
            sums.index_add_(-2, triangles[:, k], normals)
        return sums
    padded = torch.cat([normals, torch.zeros_like(normals[..., :1, :])], dim=-2)
    gathered = torch.index_select(padded, -2, adjacent.reshape(-1))
    return gathered.view(*vertices.shape[:-2], *adjacent.shape, 3).sum(dim=-2)


def unit_normals(sums: torch.Tensor) -> torch.Tensor:
    """Normalise summed normals (..., 3) to unit length; zero sums (isolated vertices) become (1, 0, 0)."""
    length = sums.norm(dim=-1, keepdim=True)
    isolated = length == 0
    fallback = torch.zeros_like(sums)
    fallback[..., 0] = 1.0
    return torch.where(isolated, fallback, sums / torch.where(isolated, torch.ones_like(length), length))


def vertex_normals(
    vertices: torch.Tensor, triangles: torch.Tensor, adjacent: torch.Tensor | None = None
) -> torch.Tensor:
    """Unit vertex normals (into the head for the 3DMM's winding), as face3d's ``get_normal``.

    Shapes as :func:`vertex_normal_sums`; isolated vertices get (1, 0, 0).
    """
    return unit_normals(vertex_normal_sums(vertices, triangles, adjacent))
