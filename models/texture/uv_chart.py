"""A morphable model's UV chart laid out in a square texture: which triangle covers each texel, with which weights.

Texture convention (Wavefront OBJ/MTL, what mesh viewers expect): a texture coordinate (u, v) in [0, 1], v up,
lies at texel (column, row) = (u S - 0.5, (1 - v) S - 0.5) of an S x S image stored top row first; texel
centres are at integers.

The models' UV maps (the default model's disk, the BFM's ``BFM_UV.mat`` after the authors' adjustment, the
procedural grid) are single charts without folds, but not always inside the unit square (the authors'
adjustment shifts and stretches the BFM's by 4/3 vertically, which moves its ends out), so textures use the
chart scaled uniformly into the square with a blank margin (:func:`texture_coordinates`); the margin leaves
room for the filled gutter around the chart.

Triangles do not overlap in UV, so a texel belongs to at most one triangle: the one whose closed interior
holds its centre (on an edge shared by two, the one listed later). No depth test is needed, which makes
this much cheaper than the general z-buffer (:mod:`models.geometry.rasterizer`).
"""

import hashlib
from typing import NamedTuple

import numpy as np
import torch

# Blank border around the chart, as a fraction of the texture side (16 texels at 1024): the hole filling
# pads it so that bilinear and mip-mapped lookups at the chart's rim do not mix in unrelated colours.
CHART_MARGIN = 1.0 / 64.0

# Slack of the point-in-triangle test (barycentric units) so that texel centres exactly on an edge are kept.
EDGE_SLACK = 1e-9

# Charts kept by :func:`cached_chart` (one per model, texture size and device in use).
CACHE_ENTRIES = 4


class UVChart(NamedTuple):
    """The texels of an S x S texture inside the chart (K of them), in row-major order.

    size: S. texels: (K,) int64 flat texel indices (row * S + column). corners: (K, 3) int64 vertex indices
    of the triangle covering each texel. weights: (K, 3) float32 barycentric weights of those corners (sum 1).
    """

    size: int
    texels: torch.Tensor
    corners: torch.Tensor
    weights: torch.Tensor

    def mask(self) -> torch.Tensor:
        """(S, S) bool, True on the chart's texels."""
        flat = torch.zeros(self.size * self.size, dtype=torch.bool, device=self.texels.device)
        flat[self.texels] = True
        return flat.view(self.size, self.size)


def texture_coordinates(uv_coords: np.ndarray, margin: float = CHART_MARGIN) -> np.ndarray:
    """A model's UV coordinates (n, 2), v up, scaled uniformly and centred into [margin, 1 - margin]^2.

    Raises:
        ValueError: the coordinates are not finite or all coincide.
    """
    uv = np.asarray(uv_coords, dtype=np.float64)
    if uv.ndim != 2 or uv.shape[1] != 2 or not np.isfinite(uv).all():
        raise ValueError(f"uv_coords must be finite with shape (n, 2), got {uv.shape}")
    low, high = uv.min(axis=0), uv.max(axis=0)
    extent = float((high - low).max())
    if extent <= 0:
        raise ValueError("uv_coords all coincide")
    scale = (1.0 - 2.0 * margin) / extent
    return (uv - (low + high) / 2.0) * scale + 0.5


def texel_positions(texture_uv: torch.Tensor, size: int) -> torch.Tensor:
    """(..., 2) texture coordinates -> (..., 2) texel coordinates (column, row) of an S x S texture."""
    u, v = texture_uv.unbind(-1)
    return torch.stack([u * size - 0.5, (1.0 - v) * size - 0.5], dim=-1)


def _barycentric_planes(corners: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine maps texel position -> barycentric weights, per triangle.

    Args:
        corners: (t, 3, 2) float64 texel positions of the triangles' corners.
    Returns:
        planes (t, 3, 3): weight of corner k = planes[:, k] . (x, y, 1); degenerate (t,) bool (zero area).
    """
    p0, p1, p2 = corners.unbind(1)
    e1, e2 = p1 - p0, p2 - p0
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    degenerate = det == 0
    inverse = 1.0 / torch.where(degenerate, torch.ones_like(det), det)
    # weight_1 = ((q - p0) x e2) / det, weight_2 = (e1 x (q - p0)) / det, with a x b = a_x b_y - a_y b_x.
    w1 = torch.stack([e2[:, 1], -e2[:, 0], p0[:, 1] * e2[:, 0] - p0[:, 0] * e2[:, 1]], dim=1) * inverse[:, None]
    w2 = torch.stack([-e1[:, 1], e1[:, 0], p0[:, 0] * e1[:, 1] - p0[:, 1] * e1[:, 0]], dim=1) * inverse[:, None]
    w0 = -(w1 + w2)
    w0[:, 2] += 1.0
    return torch.stack([w0, w1, w2], dim=1), degenerate


def _row_spans(
    planes: torch.Tensor, triangle: torch.Tensor, y: torch.Tensor, x_low: torch.Tensor, x_high: torch.Tensor
):
    """First and last texel column of each (triangle, row) whose centre lies in the triangle (empty: last < first).

    Each barycentric weight a x + (b y + c) >= 0 bounds x from one side on a row y.
    """
    plane = planes[triangle]  # (r, 3, 3)
    slope = plane[..., 0]
    offset = plane[..., 1] * y[:, None].to(plane.dtype) + plane[..., 2]
    flat = slope == 0
    bound = -offset / torch.where(flat, torch.ones_like(slope), slope)
    infinite = torch.full_like(bound, float("inf"))
    lower = torch.where(slope > 0, bound, -infinite).amax(1)
    upper = torch.where(slope < 0, bound, infinite).amin(1)
    empty = (flat & (offset < -EDGE_SLACK)).any(1)
    first = torch.maximum((lower - EDGE_SLACK).ceil(), x_low.to(lower.dtype))
    last = torch.minimum((upper + EDGE_SLACK).floor(), x_high.to(upper.dtype))
    last = torch.where(empty, first - 1, last)
    return first.long(), last.long()


def rasterize_chart(texture_uv: torch.Tensor, triangles: torch.Tensor, size: int) -> UVChart:
    """The chart's texels in an S x S texture (see the module docstring for the conventions).

    Row by row: for each (triangle, texel row) in the triangle's bounding box, the span of texel centres
    inside it; then the texels of every span with their barycentric weights.

    Args:
        texture_uv: (n, 2) texture coordinates in [0, 1] (v up), e.g. from :func:`texture_coordinates`.
        triangles: (t, 3) int64 vertex indices (any winding).
        size: S, the texture's side in texels.
    Returns:
        :class:`UVChart` on ``texture_uv``'s device.
    """
    if texture_uv.dim() != 2 or texture_uv.shape[1] != 2:
        raise ValueError(f"texture_uv must have shape (n, 2), got {tuple(texture_uv.shape)}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    device = texture_uv.device
    triangles = triangles.to(device=device, dtype=torch.int64)
    corners = texel_positions(texture_uv.to(torch.float64), size)[triangles]  # (t, 3, 2)
    planes, degenerate = _barycentric_planes(corners)
    x_min = corners[..., 0].amin(1).ceil().clamp(min=0).long()
    x_max = corners[..., 0].amax(1).floor().clamp(max=size - 1).long()
    y_min = corners[..., 1].amin(1).ceil().clamp(min=0).long()
    y_max = corners[..., 1].amax(1).floor().clamp(max=size - 1).long()
    rows = (y_max - y_min + 1).clamp(min=0) * ((x_max >= x_min) & ~degenerate)

    triangle = torch.repeat_interleave(torch.arange(triangles.shape[0], device=device), rows)
    y = y_min[triangle] + torch.arange(triangle.shape[0], device=device) - (torch.cumsum(rows, 0) - rows)[triangle]
    first, last = _row_spans(planes, triangle, y, x_min[triangle], x_max[triangle])
    lengths = (last - first + 1).clamp(min=0)
    span = torch.repeat_interleave(torch.arange(lengths.shape[0], device=device), lengths)
    x = first[span] + torch.arange(span.shape[0], device=device) - (torch.cumsum(lengths, 0) - lengths)[span]
    texel = y[span] * size + x

    # A texel on an edge shared by two triangles is listed twice: the later triangle keeps it.
    owner = torch.full((size * size,), -1, dtype=torch.int64, device=device)
    owner.scatter_reduce_(0, texel, triangle[span], "amax")
    texel = torch.nonzero(owner >= 0).squeeze(1)
    triangle = owner[texel]
    plane = planes[triangle]
    x, y = (texel % size).to(plane.dtype), (texel // size).to(plane.dtype)
    weights = (plane[..., 0] * x[:, None] + plane[..., 1] * y[:, None] + plane[..., 2]).clamp(min=0.0)
    weights = weights / weights.sum(1, keepdim=True)
    return UVChart(size, texel, triangles[triangle], weights.to(torch.float32))


_cache: dict[tuple, UVChart] = {}


def cached_chart(texture_uv: torch.Tensor, triangles: torch.Tensor, size: int) -> UVChart:
    """:func:`rasterize_chart`, remembered for the last :data:`CACHE_ENTRIES` (chart, size, device) keys, so
    that a model's chart is computed once per process (a demo run reconstructs many cases with one model)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(texture_uv.detach().cpu().numpy().astype(np.float64).tobytes())
    digest.update(triangles.detach().cpu().numpy().astype(np.int64).tobytes())
    key = (digest.hexdigest(), size, str(texture_uv.device))
    if key not in _cache:
        if len(_cache) >= CACHE_ENTRIES:
            _cache.pop(next(iter(_cache)))
        _cache[key] = rasterize_chart(texture_uv, triangles, size)
    return _cache[key]
