"""The demo's overlay: the reconstructed mesh, grey and shaded, drawn over the crop it was fitted to."""

import numpy as np
import torch

from ..geometry.camera import to_image
from ..geometry.mesh_ops import crop_mesh
from ..geometry.normals import vertex_normals
from ..geometry.rasterizer import render_colors
from ..geometry.spherical_harmonics import sh_shading

# The authors' demo_utils.visualize_geometry with gt_flag=True: a uniform grey albedo (1 - 0.25) lit by
# spherical harmonics with only the n_z coefficient set to 1.
OVERLAY_ALBEDO = 0.75
OVERLAY_SH_COEFFS = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def render_geometry_overlay(
    camera_vertices: torch.Tensor,
    triangles: torch.Tensor,
    background: torch.Tensor,
    vertex_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The demo's grey shaded mesh drawn over the input crop (authors' ``visualize_geometry``, ``gt_flag=True``).

    The triangle order is reversed so that normals point out of the face, the mesh is lit by the SH
    light with only the n_z term (grey albedo 0.75, so faces towards the camera are brightest), moved to
    image coordinates, cropped to ``vertex_mask`` (normals are computed on the full mesh first), drawn
    over ``background`` and the result clamped to [0, 1].

    Args:
        camera_vertices: (n, 3) camera-space vertices (pixels, x right, y up, origin at the image centre).
        triangles: (t, 3) int64 in the morphable model's order (clockwise seen from the camera).
        background: (H, W, 3) float image in [0, 1].
        vertex_mask: (n,) bool tensor or array of the vertices to draw (e.g. ``face_region_mask_no_nose_hole``),
            all when None.
    Returns:
        (H, W, 3) float32 image in [0, 1].
    """
    if background.dim() != 3 or background.shape[2] != 3:
        raise ValueError(f"background must have shape (H, W, 3), got {tuple(background.shape)}")
    height, width = background.shape[:2]
    device = background.device
    vertices = camera_vertices.detach().to(device=device, dtype=torch.float32)
    flipped = triangles.to(device=device, dtype=torch.int64).flip(1)
    normals = vertex_normals(vertices.unsqueeze(0), flipped)[0]
    shading = sh_shading(normals, torch.tensor(OVERLAY_SH_COEFFS, device=device))
    colors = (OVERLAY_ALBEDO * shading).expand(-1, 3)
    image_vertices = to_image(vertices, height, width)
    if vertex_mask is not None:
        cropped = crop_mesh(
            image_vertices.cpu().numpy(), flipped.cpu().numpy(), torch.as_tensor(vertex_mask).cpu().numpy()
        )
        kept = torch.from_numpy(cropped.kept_vertices).to(device)
        image_vertices, colors = image_vertices[kept], colors[kept]
        flipped = torch.from_numpy(cropped.triangles).to(device)
    image = render_colors(image_vertices, flipped, colors, height, width, background.to(torch.float32))
    return image.clamp(0.0, 1.0)


def overlay_image(vertices: np.ndarray, triangles: np.ndarray, crop: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 overlay of the masked mesh (n, 3) with the 3DMM's triangles over ``crop`` (uint8)."""
    image = render_geometry_overlay(
        torch.from_numpy(np.asarray(vertices, dtype=np.float32)),
        torch.from_numpy(np.asarray(triangles, dtype=np.int64)),
        torch.from_numpy(crop.astype(np.float32) / 255.0),
        torch.from_numpy(np.asarray(mask, dtype=bool)),
    )
    return (image.numpy() * 255.0).round().astype(np.uint8)
