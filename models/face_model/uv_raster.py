"""UV-space rasterisation tables: which triangle covers each pixel of the UV map, with which weights.

The adaptive-basis networks of DFNRMVS splat per-vertex features into a square UV image and sample
the predicted basis back at each vertex's UV position. The splatting uses, for every UV pixel, the
three vertex indices of the covering triangle and the pixel's barycentric weights. The authors
compute these tables with face3d's Cython rasteriser; this module reproduces it, vectorised, in
float32 with the same operation order, so the tables are bit-identical:

* a pixel takes the *first* triangle (in triangle order) that covers it (all UV depths are 0, so the
  z-test lets no later triangle replace it);
* pixels within :data:`BORDER_PIXELS` of the image border take the first triangle whose bounding box
  contains them, even when they lie outside it, so their barycentric weights are extrapolated
  (and can be negative);
* pixels no triangle reaches get triangle 0 with zero weights.
"""

from typing import NamedTuple

import numpy as np
import torch

from ..geometry.rasterizer import barycentric_coordinates

# face3d's rasteriser skips the point-in-triangle test for pixels closer than this to the border
# (mesh_core.cpp: `p.x < 2 || p.x > w - 3 || p.y < 2 || p.y > h - 3`).
BORDER_PIXELS = 2

# The UV map sizes the three adaptive-basis levels use (NRMVSOptimization: adap_B_net2/3/4).
UV_SIZES = (32, 64, 128)


class UVRasterTable(NamedTuple):
    """Rasterisation of the mesh in one square UV image of side s.

    vertex_uv: (n, 3) float32, vertex positions in that image's pixel coordinates (x right, y down,
        z = 0), the points the per-vertex basis is sampled back at.
    pixel_vert_idx: (s, s, 3) int64, vertex indices of the triangle covering each pixel.
    pixel_vert_weights: (s, s, 3) float32, the pixel's barycentric weights for those vertices.
    """

    vertex_uv: torch.Tensor
    pixel_vert_idx: torch.Tensor
    pixel_vert_weights: torch.Tensor


def uv_to_pixels(uv_coords: np.ndarray, size: int) -> np.ndarray:
    """UV coordinates in [0, 1] (v up) -> pixel coordinates of a size x size image (y down), z = 0.

    As the authors' ``process_uv``: x = u (s - 1), y = s - v (s - 1) - 1.

    Args:
        uv_coords: (n, 2) float64.
    Returns:
        (n, 3) float64.
    """
    x = uv_coords[:, 0] * (size - 1)
    y = size - uv_coords[:, 1] * (size - 1) - 1
    return np.stack([x, y, np.zeros_like(x)], axis=1)


def _barycentric(px: np.ndarray, py: np.ndarray, p0: np.ndarray, p1: np.ndarray, p2: np.ndarray):
    """face3d's (u, v) in float32; degenerate triangles give u = v = 0 (face3d's zero inverse denominator)."""
    as_tensor = torch.from_numpy
    u, v, degenerate = barycentric_coordinates(as_tensor(px), as_tensor(py), *(as_tensor(p) for p in (p0, p1, p2)))
    zero = torch.zeros((), dtype=u.dtype)
    return torch.where(degenerate, zero, u).numpy(), torch.where(degenerate, zero, v).numpy()


def rasterize_uv(vertices: np.ndarray, triangles: np.ndarray, size: int) -> UVRasterTable:
    """Rasterise a flat mesh (vertices in pixel coordinates) into a size x size table.

    Args:
        vertices: (n, 3) or (n, 2) vertex pixel coordinates (only x and y are used).
        triangles: (ntri, 3) 0-based vertex indices.
        size: side of the square image in pixels.
    Returns:
        :class:`UVRasterTable` (CPU tensors) with ``vertex_uv`` = the vertices as float32 (n, 3).
    """
    if vertices.ndim != 2 or vertices.shape[1] not in (2, 3):
        raise ValueError(f"vertices must have shape (n, 2) or (n, 3), got {vertices.shape}")
    if triangles.ndim != 2 or triangles.shape[1] != 3:
        raise ValueError(f"triangles must have shape (ntri, 3), got {triangles.shape}")
    points = vertices[:, :2].astype(np.float32)
    corners = points[triangles]  # (ntri, 3, 2)

    x_min = np.maximum(np.ceil(corners[:, :, 0].min(1)).astype(np.int64), 0)
    x_max = np.minimum(np.floor(corners[:, :, 0].max(1)).astype(np.int64), size - 1)
    y_min = np.maximum(np.ceil(corners[:, :, 1].min(1)).astype(np.int64), 0)
    y_max = np.minimum(np.floor(corners[:, :, 1].max(1)).astype(np.int64), size - 1)
    widths = np.maximum(x_max - x_min + 1, 0)
    heights = np.maximum(y_max - y_min + 1, 0)
    counts = widths * heights

    # One row per (triangle, pixel in its bounding box), in triangle order then row-major.
    tri_of_pair = np.repeat(np.arange(len(triangles)), counts)
    first_pair = np.cumsum(counts) - counts
    local = np.arange(counts.sum()) - np.repeat(first_pair, counts)
    row_width = np.repeat(widths, counts)
    px = np.repeat(x_min, counts) + local % np.maximum(row_width, 1)
    py = np.repeat(y_min, counts) + local // np.maximum(row_width, 1)

    p0, p1, p2 = (corners[tri_of_pair, k] for k in range(3))
    u, v = _barycentric(px.astype(np.float32), py.astype(np.float32), p0, p1, p2)
    inside = (u >= 0) & (v >= 0) & (u + v < 1)
    near_border = (px < BORDER_PIXELS) | (px > size - 1 - BORDER_PIXELS)
    near_border |= (py < BORDER_PIXELS) | (py > size - 1 - BORDER_PIXELS)
    covered = inside | near_border

    pixel_id = (py * size + px)[covered]
    pixel_ids, first = np.unique(pixel_id, return_index=True)
    winners = np.flatnonzero(covered)[first]

    triangle_buffer = np.zeros(size * size, dtype=np.int64)
    weights = np.zeros((size * size, 3), dtype=np.float32)
    triangle_buffer[pixel_ids] = tri_of_pair[winners]
    u_w, v_w = u[winners], v[winners]
    weights[pixel_ids] = np.stack([np.float32(1) - u_w - v_w, v_w, u_w], axis=1)

    pixel_vert_idx = triangles[triangle_buffer].astype(np.int64).reshape(size, size, 3)
    vertex_uv = np.concatenate([points, np.zeros((len(points), 1), np.float32)], axis=1)
    if vertices.shape[1] == 3:
        vertex_uv = vertices.astype(np.float32)
    return UVRasterTable(
        vertex_uv=torch.from_numpy(np.ascontiguousarray(vertex_uv)),
        pixel_vert_idx=torch.from_numpy(np.ascontiguousarray(pixel_vert_idx)),
        pixel_vert_weights=torch.from_numpy(np.ascontiguousarray(weights.reshape(size, size, 3))),
    )
