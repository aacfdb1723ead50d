"""What one view contributes to a surface point: the photo's colour there, and how much to trust it.

Per view, the mesh is z-buffered at the crop's resolution (:func:`models.geometry.rasterizer.rasterize`);
covered pixels next to a depth jump (the silhouette, the edge of the nose over the cheek) are edge pixels,
and a ramp rises from 0 there to 1 :data:`EDGE_RAMP_PX` pixels inside. A surface point, given by its
projection, depth and outward normal in the view's camera space, is weighted by

* its viewing angle: ``((cos - cos_max) / (1 - cos_max)) ** ANGLE_POWER`` for ``cos = n_z`` (the camera
  looks down -z), 0 beyond :data:`MAX_VIEW_ANGLE_DEG`, so facing views dominate and grazing ones drop out;
* the edge ramp at its projection, so that no colour is taken across a silhouette or an occluding edge
  and a view's share fades out smoothly instead of stopping at a seam;
* its visibility: its depth must reach the z-buffer's (bilinear at its projection) within
  :data:`DEPTH_TOLERANCE_PX` (scaled up on slanted surfaces), so occluded points (the far cheek behind
  the nose) drop out, beyond what a back-face test sees.

Everything a point needs is a linear function of the mesh's vertices, so the per-vertex channels of
:func:`vertex_channels` can be interpolated to any surface point (a texel) before :func:`sample_view`.
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..geometry.camera import image_to_grid
from ..geometry.rasterizer import rasterize

# Views seeing a point at more than this angle from its normal do not colour it.
MAX_VIEW_ANGLE_DEG = 75.0
# Power of the viewing-angle weight: 2 lets a view facing the point outweigh a slanted one clearly.
ANGLE_POWER = 2.0
# Depth slack of the visibility test on a surface facing the camera (crop pixels; camera z is in pixels);
# divided by the cosine of the viewing angle on slanted surfaces, whose depth changes faster per pixel.
DEPTH_TOLERANCE_PX = 1.5
# A covered pixel whose depth exceeds a 3x3 neighbour's by more than this (pixels) is an edge pixel; a
# surface at the 75 degree limit changes depth by ~3.7 px per pixel.
EDGE_DEPTH_JUMP_PX = 4.0
# Width of the ramp from edge pixels (weight 0) to full weight, in pixels.
EDGE_RAMP_PX = 3
# Depth given to pixels no triangle covers, so that a point projecting next to them fails the depth test.
EMPTY_DEPTH = 1e6
# The channels of :func:`vertex_channels`: grid x, grid y (grid_sample units), depth plus tolerance,
# viewing-angle weight.
NUM_CHANNELS = 4


class ViewMaps(NamedTuple):
    """One view's per-pixel lookups, stacked for one ``grid_sample`` call.

    stack: (1, 5, H, W) float32: the crop's R, G, B in [0, 1], the edge ramp in [0, 1] and the z-buffer
    depth (pixels, larger = closer; :data:`EMPTY_DEPTH` where nothing is drawn).
    """

    stack: torch.Tensor

    @property
    def height(self) -> int:
        return self.stack.shape[2]

    @property
    def width(self) -> int:
        return self.stack.shape[3]


class ViewSamples(NamedTuple):
    """colours: (3, p) the photo's colours at p points; weights: (p,) their confidence (0: not used)."""

    colours: torch.Tensor
    weights: torch.Tensor


def _min_pool(image: torch.Tensor, fill: float) -> torch.Tensor:
    """3x3 minimum of (1, 1, H, W), the outside taken as ``fill``."""
    return -F.max_pool2d(F.pad(-image, (1, 1, 1, 1), value=-fill), 3, stride=1)


def view_maps(image_vertices: torch.Tensor, triangles: torch.Tensor, crop: torch.Tensor) -> ViewMaps:
    """Z-buffer, edge ramp and colours of one view.

    Args:
        image_vertices: (n, 3) vertices in the crop's image coordinates (:func:`models.geometry.camera.to_image`).
        triangles: (t, 3) int64. crop: (H, W, 3) float image in [0, 1].
    """
    height, width = crop.shape[:2]
    depth = rasterize(image_vertices, triangles, height, width).depth.to(torch.float32)
    covered = torch.isfinite(depth)
    lowest = float(depth[covered].min()) - 2.0 * EDGE_DEPTH_JUMP_PX if bool(covered.any()) else 0.0
    filled = torch.where(covered, depth, torch.full_like(depth, lowest)).view(1, 1, height, width)
    edge = (filled - _min_pool(filled, lowest)) > EDGE_DEPTH_JUMP_PX
    interior = (covered.view(1, 1, height, width) & ~edge).to(torch.float32)
    ramp = interior.clone()
    eroded = interior
    for _ in range(EDGE_RAMP_PX - 1):
        eroded = _min_pool(eroded, 0.0)
        ramp = ramp + eroded
    ramp = ramp / EDGE_RAMP_PX
    lookup = torch.where(covered, depth, torch.full_like(depth, EMPTY_DEPTH)).view(1, 1, height, width)
    colours = crop.to(device=depth.device, dtype=torch.float32).permute(2, 0, 1).unsqueeze(0)
    return ViewMaps(torch.cat([colours, ramp, lookup], dim=1))


def vertex_channels(image_vertices: torch.Tensor, normals: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-vertex quantities that :func:`sample_view` needs, linear over the mesh (see the module docstring).

    Args:
        image_vertices: (n, 3) image coordinates (x right, y down, pixels; z larger = closer).
        normals: (n, 3) unit outward normals in camera space. height, width: the crop's size.
    Returns:
        (n, :data:`NUM_CHANNELS`): grid x, grid y (``grid_sample`` units, ``align_corners=True``), depth plus
        tolerance, viewing-angle weight.
    """
    cos_max = math.cos(math.radians(MAX_VIEW_ANGLE_DEG))
    facing = normals[:, 2]
    grid = image_to_grid(image_vertices[:, :2], height, width)
    reach = image_vertices[:, 2] + DEPTH_TOLERANCE_PX / facing.clamp(min=cos_max)
    angle = ((facing - cos_max) / (1.0 - cos_max)).clamp(min=0.0) ** ANGLE_POWER
    return torch.cat([grid, reach[:, None], angle[:, None]], dim=1)


def sample_view(maps: ViewMaps, channels: torch.Tensor) -> ViewSamples:
    """Colours and weights of p points in one view, from their :func:`vertex_channels` (interpolated).

    Args:
        channels: (p, :data:`NUM_CHANNELS`) float32.
    """
    grid = channels[:, :2].reshape(1, 1, -1, 2)
    looked_up = F.grid_sample(maps.stack, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    looked_up = looked_up.view(maps.stack.shape[1], -1)
    visible = channels[:, 2] >= looked_up[4]
    weights = channels[:, 3] * looked_up[3] * visible
    return ViewSamples(looked_up[:3], weights)
