"""Views of a generated face with a known texture: the ground truth of the texture tests.

A face of a morphable model (random identity, an expression per view) gets a per-vertex albedo (a skin tone
with smooth variation, dark brows, eyes and lips around its landmarks); each view renders it with the
project's rasteriser at a given yaw, unlit (the photo is the albedo) or under a known grey
spherical-harmonics light, over a flat background whose colour differs from the skin (bleeding shows).
Weak perspective maps surface points affinely, so a texel's true colour is the barycentric mix of its
triangle's vertex albedos, exactly what the renderer paints where the texel lands.
"""

from dataclasses import dataclass

import numpy as np
import torch

from models.face_model.landmark_layout import BROWS, EYES, MOUTH
from models.face_model.morphable_model import MorphableModel
from models.geometry.camera import IMAGE_SIZE, Pose, normalize_pose, pose_vertices, to_image
from models.geometry.normals import vertex_normals
from models.geometry.rasterizer import render_colors
from models.geometry.spherical_harmonics import sh_shading
from models.synthesis.multiview_sample import face_width, smooth_field

SKIN = (0.80, 0.62, 0.52)
FEATURE = (0.25, 0.15, 0.12)
BACKGROUND = (0.20, 0.45, 0.30)
# A frontal grey light from the upper left: ambient 0.65, directional 0.4 (face3d SH basis).
LIGHT_DIRECTION = (-0.35, 0.35, 1.0)
AMBIENT, DIRECTIONAL = 0.65, 0.4


@dataclass
class KnownTextureViews:
    """vertices: (V, n, 3) camera space; crops: (V, 256, 256, 3) uint8; albedo: (n, 3) in [0, 1];
    poses: (V, 6) normalised; neutral: (n, 3) the identity with no expression (model units);
    sh: (9,) the grey light, or None when unlit."""

    vertices: torch.Tensor
    crops: torch.Tensor
    albedo: torch.Tensor
    poses: torch.Tensor
    neutral: torch.Tensor
    sh: torch.Tensor | None


def known_albedo(mm: MorphableModel, neutral: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """(n, 3) skin with a smooth +-15 % variation, darkened around brows, eyes and lips."""
    points = neutral.double().numpy()
    width = face_width(mm)
    variation = smooth_field(points, 0.25 * width, rng)
    albedo = np.array(SKIN)[None, :] * (1.0 + 0.15 * variation[:, None])
    landmarks = points[mm.landmark_indices.numpy()]
    for group, radius in ((BROWS, 0.05), (EYES, 0.035), (MOUTH, 0.04)):
        squared = ((points[:, None] - landmarks[None, list(group)]) ** 2).sum(-1).min(axis=1)
        weight = 0.7 * np.exp(-squared / (2 * (radius * width) ** 2))
        albedo = albedo * (1 - weight[:, None]) + np.array(FEATURE)[None, :] * weight[:, None]
    return torch.from_numpy(np.clip(albedo, 0, 1)).float()


def grey_light() -> torch.Tensor:
    """(9,) face3d SH coefficients of the test light."""
    direction = np.array(LIGHT_DIRECTION) / np.linalg.norm(LIGHT_DIRECTION)
    coeffs = np.zeros(9, dtype=np.float32)
    coeffs[0] = AMBIENT
    coeffs[1:4] = DIRECTIONAL * direction
    return torch.from_numpy(coeffs)


def render_known_views(
    mm: MorphableModel, yaws_deg: tuple[float, ...], lit: bool = False, seed: int = 0, fill: float = 0.6
) -> KnownTextureViews:
    """Render the known-texture face at the given yaws (a little pitch and roll added), ``fill`` of the crop wide."""
    rng = np.random.default_rng(seed)
    views = len(yaws_deg)
    shape = torch.from_numpy(rng.normal(0, 0.7, (1, mm.shape_std.shape[0]))).float()
    expression = torch.from_numpy(rng.normal(0, 0.3, (views, mm.exp_std.shape[0]))).float()
    neutral = mm.vertices(shape)[0]
    model_vertices = mm.vertices(shape.expand(views, -1), expression)
    scale = fill * IMAGE_SIZE / face_width(mm)
    angles = torch.tensor([[rng.normal(0, 4), yaw, rng.normal(0, 3)] for yaw in yaws_deg], dtype=torch.float64)
    zeros = torch.zeros(views, dtype=torch.float64)
    scales = torch.full((views,), scale, dtype=torch.float64)
    centred = pose_vertices(model_vertices, normalize_pose(Pose(*angles.unbind(1), scales, zeros, zeros)).float())
    region = centred[:, mm.face_region_mask, :2]
    shift = -(region.amax(1) + region.amin(1)) / 2
    pose = normalize_pose(Pose(*angles.unbind(1), scales, *shift.double().unbind(1))).float()
    vertices = pose_vertices(model_vertices, pose)

    albedo = known_albedo(mm, neutral, rng)
    sh = grey_light() if lit else None
    normals = -vertex_normals(vertices, mm.triangles, mm.adjacent_triangles)
    crops = []
    background = torch.tensor(BACKGROUND).expand(IMAGE_SIZE, IMAGE_SIZE, 3)
    for view in range(views):
        colours = albedo if sh is None else albedo * sh_shading(normals[view], sh).clamp(min=0)
        image = render_colors(to_image(vertices[view]), mm.triangles, colours, IMAGE_SIZE, IMAGE_SIZE, background)
        crops.append((image.clamp(0, 1) * 255).round().to(torch.uint8))
    return KnownTextureViews(vertices, torch.stack(crops), albedo, pose, neutral, sh)


def known_texels(views: KnownTextureViews, corners: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(K, 3) true colours of texels given by their triangle corners (K, 3) and barycentric weights (K, 3)."""
    return (weights[..., None] * views.albedo[corners]).sum(1)
