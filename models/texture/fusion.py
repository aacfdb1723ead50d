"""One UV texture per person, fused from all views of a reconstruction.

Every texel of the model's UV chart (:mod:`models.texture.uv_chart`) is a point on each view's mesh (the
views share the model's topology, so a texel is the same skin point in all of them). Each view that sees it
contributes the photo's colour there, weighted by viewing angle, distance from silhouettes and occluding
edges, and a z-buffer visibility test (:mod:`models.texture.view_sampling`); the texel takes the weighted
mean. Texels no view sees well, and the margin around the chart, are filled by push-pull
(:mod:`models.texture.hole_filling`), which also pads the chart's border so that lookups there stay clean.

With ``albedo``, each view's colours are also divided by its grey spherical-harmonics shading, fitted so that
the views agree on the albedo (:mod:`models.texture.delighting`), and fused the same way: an albedo
estimate beside the plain texture.

Cost: the chart is rasterised once per model and texture size (cached); per case, one z-buffer per view at
crop resolution, then a few passes over the chart's texels (about 0.8 million at 1024 x 1024).
"""

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..geometry.camera import to_image
from ..geometry.normals import vertex_normals
from .delighting import fit_view_lighting, grey_shading
from .hole_filling import push_pull_weighted
from .uv_chart import UVChart, cached_chart, texture_coordinates
from .view_sampling import NUM_CHANNELS, ViewMaps, sample_view, vertex_channels, view_maps

DEFAULT_TEXTURE_SIZE = 1024
# Texture sizes accepted (texels per side).
MIN_TEXTURE_SIZE, MAX_TEXTURE_SIZE = 16, 8192
# A texel whose summed view weight reaches this keeps its fused colour as it is; below, it is blended with
# the hole filling's colour in proportion (the weight of one view at ~63 degrees, see view_sampling).
FULL_CONFIDENCE_WEIGHT = 0.05


@dataclass(frozen=True)
class TextureConfig:
    """size: texels per side of the square texture; albedo: also fuse a de-lit albedo estimate."""

    size: int = DEFAULT_TEXTURE_SIZE
    albedo: bool = True

    def __post_init__(self) -> None:
        if not MIN_TEXTURE_SIZE <= self.size <= MAX_TEXTURE_SIZE:
            raise ValueError(f"texture size must lie in [{MIN_TEXTURE_SIZE}, {MAX_TEXTURE_SIZE}], got {self.size}")


class FusedTexture(NamedTuple):
    """A person's texture (S texels per side, n vertices, V views).

    texture: (S, S, 3) float32 in [0, 1], row 0 at the top (v = 1). albedo: the same de-lit, or None.
    texture_uv: (n, 2) float32 the texture coordinates of the vertices (v up; the model's UVs fitted into
    the square, :func:`~models.texture.uv_chart.texture_coordinates`). chart: the texels of the chart.
    seen: (S, S) bool, texels some view colours (the rest is filled). vertex_colours: (n, 3) the texture at
    the vertices (:func:`sample_texture`). lighting: (V, 9) each view's grey SH light (face3d's basis of
    camera-space normals), or None. view_shares: (V,) each view's share of all texel weights.
    """

    texture: torch.Tensor
    albedo: torch.Tensor | None
    texture_uv: torch.Tensor
    chart: UVChart
    seen: torch.Tensor
    vertex_colours: torch.Tensor
    lighting: torch.Tensor | None
    view_shares: torch.Tensor


def sample_texture(texture: torch.Tensor, texture_uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of an (S, S, C) texture at (p, 2) texture coordinates (v up) -> (p, C)."""
    u, v = texture_uv.to(texture.dtype).unbind(-1)
    grid = torch.stack([u * 2.0 - 1.0, 1.0 - v * 2.0], dim=-1).view(1, 1, -1, 2)
    image = texture.permute(2, 0, 1).unsqueeze(0)
    looked_up = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return looked_up.view(texture.shape[2], -1).T


def _dense(values: torch.Tensor, chart: UVChart) -> torch.Tensor:
    """(C, K) values of the chart's texels -> (C, S, S) image, zero elsewhere."""
    image = values.new_zeros(values.shape[0], chart.size * chart.size)
    image[:, chart.texels] = values
    return image.view(values.shape[0], chart.size, chart.size)


def _finish(totals: torch.Tensor, weight: torch.Tensor, chart: UVChart) -> torch.Tensor:
    """Weighted colour sums (C, K) and summed weights (K,) -> filled (S, S, C) texture(s) in [0, 1]."""
    confidence = (weight / FULL_CONFIDENCE_WEIGHT).clamp(max=1.0)
    # colour x confidence = totals x confidence / weight, the premultiplied colour push-pull starts from
    premultiplied = totals * (confidence / weight.clamp(min=torch.finfo(weight.dtype).tiny))
    filled = push_pull_weighted(_dense(premultiplied, chart), _dense(confidence[None], chart))
    return filled.clamp_(0.0, 1.0).permute(1, 2, 0)


def _prepare_views(
    vertices: torch.Tensor,
    triangles: torch.Tensor,
    images: torch.Tensor,
    albedo: bool,
    region_mask: torch.Tensor | None,
) -> tuple[list[ViewMaps], list[torch.Tensor], torch.Tensor | None]:
    """Per view, its lookups (:func:`view_maps`) and per-vertex channels (:func:`vertex_channels`, plus the
    shading when ``albedo``); and the fitted lights (V, 9) or None."""
    height, width = images.shape[1:3]
    normals = -vertex_normals(vertices, triangles)  # (V, n, 3), out of the head
    maps, channels = [], []
    for view in range(vertices.shape[0]):
        image_vertices = to_image(vertices[view], height, width)
        maps.append(view_maps(image_vertices, triangles, images[view]))
        channels.append(vertex_channels(image_vertices, normals[view], height, width))
    if not albedo:
        return maps, channels, None
    samples = [sample_view(view_maps_, view_channels) for view_maps_, view_channels in zip(maps, channels, strict=True)]
    weights = torch.stack([s.weights for s in samples])
    if region_mask is not None:
        weights = weights * region_mask.to(weights.device)
    lighting = fit_view_lighting(torch.stack([s.colours.T for s in samples]), normals, weights)
    shaded = [
        torch.cat([view_channels, grey_shading(normals[view], lighting[view])[:, None]], dim=1)
        for view, view_channels in enumerate(channels)
    ]
    return maps, shaded, lighting


def fuse_texture(
    camera_vertices: torch.Tensor,
    crops: torch.Tensor,
    triangles: torch.Tensor,
    uv_coords: torch.Tensor,
    config: TextureConfig | None = None,
    region_mask: torch.Tensor | None = None,
) -> FusedTexture:
    """Fuse the views' colours into the model's UV texture (see the module docstring).

    Args:
        camera_vertices: (V, n, 3) per-view meshes in crop camera space (pixels, x right, y up, origin at
            the crop centre), as :class:`models.reconstruction.Reconstruction` holds them.
        crops: (V, H, W, 3) the crops they were reconstructed from, uint8 or float in [0, 1].
        triangles: (t, 3) int64, the model's triangles (clockwise seen from the camera).
        uv_coords: (n, 2) the model's UV coordinates (``MorphableModel.uv_coords``).
        config: texture size and whether to de-light.
        region_mask: (n,) bool, the vertices the lighting is fitted on (e.g. the face region); all when None.
    Returns:
        :class:`FusedTexture` on ``camera_vertices``' device.
    """
    config = config or TextureConfig()
    if camera_vertices.dim() != 3 or camera_vertices.shape[2] != 3:
        raise ValueError(f"camera_vertices must have shape (V, n, 3), got {tuple(camera_vertices.shape)}")
    if crops.dim() != 4 or crops.shape[0] != camera_vertices.shape[0] or crops.shape[3] != 3:
        raise ValueError(f"crops must have shape ({camera_vertices.shape[0]}, H, W, 3), got {tuple(crops.shape)}")
    device = camera_vertices.device
    vertices = camera_vertices.detach().to(torch.float32)
    triangles = triangles.to(device=device, dtype=torch.int64)
    images = crops.to(device) / 255.0 if crops.dtype == torch.uint8 else crops.to(device=device, dtype=torch.float32)
    texture_uv = torch.from_numpy(texture_coordinates(uv_coords.detach().cpu().numpy())).to(device)
    chart = cached_chart(texture_uv, triangles, config.size)
    texture_uv = texture_uv.to(torch.float32)

    maps, channels, lighting = _prepare_views(vertices, triangles, images, config.albedo, region_mask)
    per_view = channels[0].shape[1]
    texel_channels = F.embedding_bag(
        chart.corners, torch.cat(channels, dim=1), per_sample_weights=chart.weights, mode="sum"
    )

    weight = texel_channels.new_zeros(chart.texels.shape[0])
    totals = texel_channels.new_zeros(6 if config.albedo else 3, chart.texels.shape[0])  # colour, then albedo
    shares = []
    for view in range(vertices.shape[0]):
        view_texels = texel_channels[:, view * per_view : (view + 1) * per_view]
        samples = sample_view(maps[view], view_texels[:, :NUM_CHANNELS])
        weight += samples.weights
        totals[:3].addcmul_(samples.colours, samples.weights)
        if config.albedo:
            totals[3:].addcmul_(samples.colours, samples.weights / view_texels[:, NUM_CHANNELS])
        shares.append(samples.weights.sum())

    textures = _finish(totals, weight, chart)
    texture, albedo_texture = textures[..., :3], textures[..., 3:] if config.albedo else None
    seen = _dense((weight > 0)[None], chart)[0]
    total = torch.stack(shares)
    return FusedTexture(
        texture=texture,
        albedo=albedo_texture,
        texture_uv=texture_uv,
        chart=chart,
        seen=seen,
        vertex_colours=sample_texture(texture, texture_uv),
        lighting=lighting,
        view_shares=total / total.sum().clamp(min=torch.finfo(total.dtype).tiny),
    )
