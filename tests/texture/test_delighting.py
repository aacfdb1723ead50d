"""The lights of the views from the colours they share: known light and albedo on a face's vertices."""

import numpy as np
import torch

from models.face_model.default_model import load_default_model
from models.geometry.camera import Pose, normalize_pose, pose_vertices
from models.geometry.normals import vertex_normals
from models.geometry.spherical_harmonics import sh_shading
from models.synthesis.multiview_sample import smooth_field
from models.texture.delighting import MIN_SHADING, fit_view_lighting, grey_shading


def _views(yaws: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Outward normals (V, n, 3) of the default model's mean at these yaws, per-vertex albedo (n,) and a mask."""
    mm = load_default_model()
    mean = mm.mean_shape.view(1, -1, 3).expand(len(yaws), -1, -1)
    zeros = torch.zeros(len(yaws), dtype=torch.float64)
    pose = normalize_pose(Pose(zeros, torch.tensor(yaws, dtype=torch.float64), zeros, zeros + 1e-3, zeros, zeros))
    normals = -vertex_normals(pose_vertices(mean, pose.float()), mm.triangles)
    albedo = 0.6 * (1 + 0.15 * torch.from_numpy(smooth_field(mm.mean_shape.view(-1, 3).double().numpy(), 4e4,
                                                             np.random.default_rng(1))).float())  # fmt: skip
    return normals, albedo, mm.face_region_mask


def test_a_light_fixed_to_the_camera_is_recovered_from_two_views():
    normals, albedo, region = _views((-30.0, 30.0))
    light = torch.tensor([0.7, -0.15, 0.1, 0.35, 0.03, -0.02, 0.01, 0.04, 0.02])
    colours = torch.stack([albedo[:, None] * sh_shading(n, light).clamp(min=0).expand(-1, 3) for n in normals])
    weights = (normals[..., 2] > 0.2).float() * region
    lights = fit_view_lighting(colours, normals, weights)
    expected = light / light[0]
    for fitted in lights:
        assert (fitted / fitted[0] - expected).abs().max() < 0.03
    # scaled to average 1 over what the views see, so colour / shading keeps the albedo's level
    shading = torch.stack([grey_shading(n, lit) for n, lit in zip(normals, lights, strict=True)])
    assert abs(float((shading * weights).sum() / weights.sum()) - 1.0) < 1e-6
    recovered = colours[..., 0] / shading
    ratio = recovered[weights > 0] / albedo.expand(2, -1)[weights > 0]
    assert float(ratio.std() / ratio.mean()) < 0.01


def test_without_two_different_views_the_light_stays_constant():
    normals, albedo, region = _views((10.0, 10.0))
    colours = torch.stack([albedo[:, None].expand(-1, 3) * (0.5 + 0.5 * n[:, 2:]) for n in normals])
    weights = (normals[..., 2] > 0.2).float() * region
    for lights in (
        fit_view_lighting(colours, normals, weights),
        fit_view_lighting(colours[:1], normals[:1], weights[:1]),
    ):
        constant = torch.zeros_like(lights)
        constant[:, 0] = 1.0
        assert torch.allclose(lights, constant, atol=1e-3)
    assert grey_shading(normals[0], torch.tensor([-1.0] + [0.0] * 8)).min() == MIN_SHADING
