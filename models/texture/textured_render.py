"""Rendering a textured mesh with the project's z-buffer, and how well a texture reproduces the photos.

A covered pixel's texture coordinate is the barycentric mix of its visible triangle's vertex coordinates
(exact under the weak-perspective camera, where screen and surface are related affinely), looked up
bilinearly in the texture.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..geometry.camera import to_image
from ..geometry.rasterizer import rasterize
from .fusion import sample_texture


class TexturedImage(NamedTuple):
    """image: (H, W, C) rendered colours (the background where nothing is drawn); triangle_ids: (H, W) int64
    visible triangle per pixel, -1 where empty."""

    image: torch.Tensor
    triangle_ids: torch.Tensor


def render_texture(
    image_vertices: torch.Tensor,
    triangles: torch.Tensor,
    texture_uv: torch.Tensor,
    texture: torch.Tensor,
    height: int,
    width: int,
    background: torch.Tensor | None = None,
) -> TexturedImage:
    """Render a mesh with a texture (no lighting).

    Args:
        image_vertices: (n, 3) vertices in image coordinates (x right, y down, pixels; z larger = closer).
        triangles: (t, 3) int64. texture_uv: (n, 2) texture coordinates (v up). texture: (S, S, C) texels.
        background: (H, W, C) image kept where nothing is drawn; zeros when None.
    """
    raster = rasterize(image_vertices, triangles, height, width)
    covered = raster.triangle_ids >= 0
    corners = triangles.to(raster.triangle_ids.device)[raster.triangle_ids[covered]]  # (k, 3)
    uv = (raster.barycentric[covered].unsqueeze(-1) * texture_uv.to(torch.float32)[corners]).sum(1)
    if background is None:
        background = texture.new_zeros(height, width, texture.shape[2])
    image = background.to(texture.dtype).clone()
    image[covered] = sample_texture(texture, uv)
    return TexturedImage(image, raster.triangle_ids)


def reprojection_errors(
    camera_vertices: torch.Tensor,
    crops: torch.Tensor,
    triangles: torch.Tensor,
    texture_uv: torch.Tensor,
    texture: torch.Tensor,
    region_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean absolute colour difference between each view's photo and the textured mesh rendered into it.

    Counted on the pixels of the face region (triangles with every corner in ``region_mask``; all when
    None) whose 3x3 neighbourhood is drawn too, so that silhouette pixels (mixed with the background in a
    real photo) do not count.

    Args:
        camera_vertices: (V, n, 3) crop camera space (pixels). crops: (V, H, W, 3) uint8 or float in [0, 1].
        triangles: (t, 3) int64. texture_uv: (n, 2). texture: (S, S, 3) in [0, 1].
    Returns:
        (V,) errors in colour units of [0, 1] (mean over pixels and channels); NaN where no pixel counts.
    """
    images = crops.float() / 255.0 if crops.dtype == torch.uint8 else crops.float()
    height, width = images.shape[1:3]
    device = texture.device
    triangles = triangles.to(device=device, dtype=torch.int64)
    in_region = (
        torch.ones(triangles.shape[0], dtype=torch.bool, device=device)
        if region_mask is None
        else region_mask.to(device)[triangles].all(dim=1)
    )
    errors = []
    for view in range(camera_vertices.shape[0]):
        image_vertices = to_image(camera_vertices[view].to(device=device, dtype=torch.float32), height, width)
        rendered = render_texture(image_vertices, triangles, texture_uv, texture, height, width)
        drawn = rendered.triangle_ids >= 0
        face = drawn & in_region[rendered.triangle_ids.clamp(min=0)]
        interior = -F.max_pool2d(-drawn.float()[None, None], 3, stride=1, padding=1)[0, 0] > 0.5
        counted = face & interior
        difference = (rendered.image - images[view].to(device)).abs().mean(dim=-1)
        errors.append(difference[counted].mean() if bool(counted.any()) else difference.new_tensor(float("nan")))
    return torch.stack(errors)
