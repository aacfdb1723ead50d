"""A vectorised z-buffer rasteriser and per-vertex colour rendering, in torch.

Behaviour follows face3d's ``rasterize_triangles`` / ``render_colors`` (the renderer the authors' demo
uses): vertices are in image coordinates (u right, v down, pixels, pixel centres at integers; z larger
= closer to the camera), a pixel belongs to a triangle when face3d's barycentric test
``u >= 0, v >= 0, u + v < 1`` passes at its centre, attributes are interpolated linearly with the
barycentric weights, and the largest interpolated z wins (on a tie, the triangle listed first). The
arithmetic is float32 in face3d's operation order. Two of face3d's quirks are deliberately dropped:
pixels within 2 of the image border are not painted from triangles that merely have them in their
bounding box, and zero-area triangles cover nothing.

Instead of looping over triangles, every (triangle, pixel in its bounding box) pair is tested at once
in chunks of at most :data:`MAX_PAIRS_PER_CHUNK` pairs, and the depth test is a scatter-max per pixel.
"""

from typing import NamedTuple

import torch

# Bound on the (triangle, pixel) pairs tested at once (about 200 bytes of temporaries each, so ~100 MB).
MAX_PAIRS_PER_CHUNK = 1 << 19


class Rasterization(NamedTuple):
    """Per-pixel result of :func:`rasterize` for an (H, W) image.

    triangle_ids: (H, W) int64, index of the visible triangle, -1 where no triangle covers the pixel.
    barycentric: (H, W, 3) float32, weights of the triangle's three corners (sum 1), 0 where empty.
    depth: (H, W) float32, interpolated z of the visible surface, -inf where empty.
    """

    triangle_ids: torch.Tensor
    barycentric: torch.Tensor
    depth: torch.Tensor


def _check_mesh(image_vertices: torch.Tensor, triangles: torch.Tensor) -> None:
    if image_vertices.dim() != 2 or image_vertices.shape[1] != 3:
        raise ValueError(f"image_vertices must have shape (n, 3), got {tuple(image_vertices.shape)}")
    if triangles.dim() != 2 or triangles.shape[1] != 3:
        raise ValueError(f"triangles must have shape (t, 3), got {tuple(triangles.shape)}")
    if triangles.numel() and (int(triangles.min()) < 0 or int(triangles.max()) >= image_vertices.shape[0]):
        raise ValueError(f"triangles refer to vertices outside 0..{image_vertices.shape[0] - 1}")


def barycentric_coordinates(
    px: torch.Tensor, py: torch.Tensor, p0: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """face3d's (u, v) of the points (px, py) in triangles (p0, p1, p2), and whether the triangle is degenerate.

    The weights of the corners p0, p1, p2 are (1 - u - v, v, u). All tensors are float32 of one shape
    (p0, p1, p2 with a trailing dimension of 2).
    """
    v0x, v0y = p2[..., 0] - p0[..., 0], p2[..., 1] - p0[..., 1]
    v1x, v1y = p1[..., 0] - p0[..., 0], p1[..., 1] - p0[..., 1]
    v2x, v2y = px - p0[..., 0], py - p0[..., 1]
    dot00 = v0x * v0x + v0y * v0y
    dot01 = v0x * v1x + v0y * v1y
    dot02 = v0x * v2x + v0y * v2y
    dot11 = v1x * v1x + v1y * v1y
    dot12 = v1x * v2x + v1y * v2y
    denominator = dot00 * dot11 - dot01 * dot01
    degenerate = denominator == 0
    inverse = 1.0 / torch.where(degenerate, torch.ones_like(denominator), denominator)
    u = (dot11 * dot02 - dot01 * dot12) * inverse
    v = (dot00 * dot12 - dot01 * dot02) * inverse
    return u, v, degenerate


def _chunks(pair_counts: torch.Tensor, max_pairs: int) -> list[tuple[int, int]]:
    """Split triangles [0, t) into consecutive ranges holding at most ``max_pairs`` pairs (or one triangle)."""
    ends = torch.cumsum(pair_counts, 0)
    ranges = []
    start, done = 0, 0
    total = pair_counts.shape[0]
    while start < total:
        stop = int(torch.searchsorted(ends, done + max_pairs, right=True))
        stop = max(stop, start + 1)
        ranges.append((start, stop))
        done = int(ends[stop - 1])
        start = stop
    return ranges


def rasterize(image_vertices: torch.Tensor, triangles: torch.Tensor, height: int, width: int) -> Rasterization:
    """Z-buffer rasterisation of a triangle mesh given in image coordinates.

    Args:
        image_vertices: (n, 3) vertices, u right and v down in pixels (pixel centres at integers), z with
            larger = closer to the camera (as :func:`models.geometry.camera.to_image` gives them).
        triangles: (t, 3) int64 vertex indices (any winding; nothing is culled).
        height, width: image size in pixels.
    Returns:
        :class:`Rasterization` on the vertices' device.
    """
    _check_mesh(image_vertices, triangles)
    device = image_vertices.device
    with torch.no_grad():
        points = image_vertices.detach().to(torch.float32)
        triangles = triangles.to(device=device, dtype=torch.int64)
        corners = points[triangles]  # (t, 3, 3)
        finite = torch.isfinite(corners).all(dim=2).all(dim=1)
        corners = torch.where(finite.view(-1, 1, 1), corners, torch.zeros_like(corners))
        x_min = corners[..., 0].min(1).values.ceil().clamp(min=0).long()
        x_max = corners[..., 0].max(1).values.floor().clamp(max=width - 1).long()
        y_min = corners[..., 1].min(1).values.ceil().clamp(min=0).long()
        y_max = corners[..., 1].max(1).values.floor().clamp(max=height - 1).long()
        box_widths = (x_max - x_min + 1).clamp(min=0)
        pair_counts = box_widths * (y_max - y_min + 1).clamp(min=0) * finite

        best_depth = torch.full((height * width,), float("-inf"), device=device)
        best_triangle = torch.full((height * width,), -1, dtype=torch.int64, device=device)
        best_weights = torch.zeros((height * width, 3), device=device)
        for start, stop in _chunks(pair_counts, MAX_PAIRS_PER_CHUNK):
            counts = pair_counts[start:stop]
            if int(counts.sum()) == 0:
                continue
            local_triangle = torch.repeat_interleave(torch.arange(stop - start, device=device), counts)
            first_pair = torch.cumsum(counts, 0) - counts
            offset = torch.arange(local_triangle.shape[0], device=device) - first_pair[local_triangle]
            triangle = local_triangle + start
            row_width = box_widths[triangle]
            px = x_min[triangle] + offset % row_width
            py = y_min[triangle] + offset // row_width
            tri_corners = corners[triangle]
            u, v, degenerate = barycentric_coordinates(
                px.to(torch.float32), py.to(torch.float32), tri_corners[:, 0], tri_corners[:, 1], tri_corners[:, 2]
            )
            inside = (u >= 0) & (v >= 0) & (u + v < 1) & ~degenerate
            triangle, px, py, u, v, tri_corners = (a[inside] for a in (triangle, px, py, u, v, tri_corners))
            weights = torch.stack([1.0 - u - v, v, u], dim=1)
            depth = (weights * tri_corners[..., 2]).sum(1)
            pixel = py * width + px

            chunk_depth = torch.full_like(best_depth, float("-inf")).scatter_reduce(0, pixel, depth, "amax")
            # Earlier chunks hold earlier triangles, which keep the pixel on a depth tie (strict test).
            candidate = (depth == chunk_depth[pixel]) & (depth > best_depth[pixel])
            first = torch.full_like(best_triangle, triangles.shape[0])
            first = first.scatter_reduce(0, pixel[candidate], triangle[candidate], "amin")
            winner = candidate & (triangle == first[pixel])
            won = pixel[winner]
            best_depth[won] = depth[winner]
            best_triangle[won] = triangle[winner]
            best_weights[won] = weights[winner]
    return Rasterization(
        triangle_ids=best_triangle.view(height, width),
        barycentric=best_weights.view(height, width, 3),
        depth=best_depth.view(height, width),
    )


def render_colors(
    image_vertices: torch.Tensor,
    triangles: torch.Tensor,
    colors: torch.Tensor,
    height: int,
    width: int,
    background: torch.Tensor | None = None,
) -> torch.Tensor:
    """Render per-vertex colours with barycentric interpolation, as face3d's ``render_colors``.

    Differentiable with respect to ``colors`` and ``background`` (not the vertex positions).

    Args:
        image_vertices: (n, 3) vertices in image coordinates (see :func:`rasterize`).
        triangles: (t, 3) int64. colors: (n, C) per-vertex attributes.
        background: (H, W, C) image kept where no triangle is visible (not modified); zeros when None.
    Returns:
        (H, W, C) image in the dtype of ``colors``.
    """
    if colors.dim() != 2 or colors.shape[0] != image_vertices.shape[0]:
        raise ValueError(
            f"colors must have shape (n, C) with n = {image_vertices.shape[0]} vertices, got {tuple(colors.shape)}"
        )
    channels = colors.shape[1]
    if background is None:
        background = torch.zeros((height, width, channels), dtype=colors.dtype, device=colors.device)
    elif tuple(background.shape) != (height, width, channels):
        raise ValueError(f"background must have shape ({height}, {width}, {channels}), got {tuple(background.shape)}")
    raster = rasterize(image_vertices, triangles, height, width)
    covered = raster.triangle_ids >= 0
    corner_ids = triangles.to(raster.triangle_ids.device)[raster.triangle_ids[covered]]  # (k, 3)
    weights = raster.barycentric[covered].to(colors.dtype)
    pixel_colors = (weights.unsqueeze(-1) * colors[corner_ids]).sum(dim=1)
    image = background.to(colors.dtype).clone()
    image[covered] = pixel_colors
    return image
