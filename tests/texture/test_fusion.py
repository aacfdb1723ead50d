"""Texture fusion on generated faces with a known texture (tests/texture/known_texture.py).

Bounds, mean absolute colour error in [0, 1] units (measured values in brackets, default model, 512 texels):
texels some view sees <= 0.004 [0.0009]; texels filled because no view sees them <= 0.04 [0.012]; texels
within 2 texels of the chart's border (its seam) <= 0.015 [0.010]; colours of the rim vertices (bilinear
lookups across the seam) <= 0.03 [0.014]; the textured mesh rendered back into the unlit photos, face
region <= 0.004 [0.0006]. Under light, the albedo estimate, after one best scale per channel, <= 0.006
[0.002] where the plain texture is >= 0.03 [0.041] off.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from models.face_model.default_model import load_default_model
from models.face_model.morphable_model import MorphableModel
from models.face_model.procedural import synthetic_morphable_model
from models.geometry.camera import to_image
from models.geometry.normals import vertex_normals
from models.geometry.rasterizer import rasterize
from models.texture.fusion import TextureConfig, fuse_texture, sample_texture
from models.texture.textured_render import reprojection_errors
from models.texture.uv_chart import texel_positions
from models.texture.view_sampling import MAX_VIEW_ANGLE_DEG
from tests.texture.known_texture import KnownTextureViews, known_texels, render_known_views

SIZE = 512
SEEN_BOUND = 0.004
FILLED_BOUND = 0.04
SEAM_TEXEL_BOUND = 0.015
SEAM_VERTEX_BOUND = 0.03
REPROJECTION_BOUND = 0.004


@pytest.fixture(scope="module")
def default_model() -> MorphableModel:
    return load_default_model()


def _fuse(mm: MorphableModel, views: KnownTextureViews, device, albedo: bool = False, size: int = SIZE):
    return fuse_texture(
        views.vertices.to(device),
        views.crops.to(device),
        mm.triangles.to(device),
        mm.uv_coords,
        TextureConfig(size, albedo),
        mm.face_region_mask.to(device),
    )


def _texel_errors(fused, views: KnownTextureViews, texture: torch.Tensor | None = None):
    """Per chart texel: |fused - true| (mean over channels), whether a view saw it, fused and true colours."""
    chart = fused.chart
    truth = known_texels(views, chart.corners.cpu(), chart.weights.cpu())
    values = (fused.texture if texture is None else texture).reshape(-1, 3)[chart.texels].cpu()
    seen = fused.seen.reshape(-1)[chart.texels].cpu()
    return (values - truth).abs().mean(1), seen, values, truth


def _rim_vertices(mm: MorphableModel) -> torch.Tensor:
    """Vertices on the mesh's open boundary (the chart's border)."""
    edges = torch.cat([mm.triangles[:, [0, 1]], mm.triangles[:, [1, 2]], mm.triangles[:, [2, 0]]]).sort(1).values
    unique, counts = torch.unique(edges, dim=0, return_counts=True)
    return torch.unique(unique[counts == 1])


@pytest.mark.parametrize("yaws", [(-35.0, 35.0), (-40.0, 0.0, 40.0)])
def test_fused_texture_matches_the_known_one(default_model, yaws, device):
    mm = default_model
    views = render_known_views(mm, yaws)
    fused = _fuse(mm, views, device)
    errors, seen, values, _ = _texel_errors(fused, views)
    assert seen.float().mean() > 0.9
    assert errors[seen].mean() < SEEN_BOUND and errors[seen].quantile(0.95) < 2.5 * SEEN_BOUND
    # occluded / unseen texels are filled: no hole, plausible colours
    assert torch.isfinite(fused.texture).all() and (~seen).sum() > 100
    assert ((values >= 0) & (values <= 1)).all()
    assert errors[~seen].mean() < FILLED_BOUND
    # the seam: texels along the chart's border, and lookups across it at the rim vertices
    chart = fused.chart.mask().float()[None, None].cpu()
    inner = -F.max_pool2d(-F.pad(chart, (2, 2, 2, 2)), 5, stride=1)[0, 0].reshape(-1)[fused.chart.texels.cpu()]
    assert errors[inner < 0.5].mean() < SEAM_TEXEL_BOUND
    rim = _rim_vertices(mm)
    facing = (-vertex_normals(views.vertices, mm.triangles)[..., 2] > 0.5).any(0)[rim]
    rim_errors = (fused.vertex_colours.cpu()[rim] - views.albedo[rim]).abs().mean(1)
    assert facing.sum() > 50 and rim_errors[facing].mean() < SEAM_VERTEX_BOUND
    # the vertex colours are the texture's at the vertices
    assert torch.allclose(fused.vertex_colours, sample_texture(fused.texture, fused.texture_uv))
    # rendering the textured mesh back into each view reproduces the photo's face region
    reprojection = reprojection_errors(
        views.vertices.to(device), views.crops.to(device), mm.triangles, fused.texture_uv, fused.texture,
        mm.face_region_mask,
    )  # fmt: skip
    print(f"yaws {yaws}: texel error seen {errors[seen].mean():.5f}, filled {errors[~seen].mean():.5f}, "
          f"reprojection {reprojection.tolist()}")  # fmt: skip
    assert (reprojection < REPROJECTION_BOUND).all()
    assert abs(float(fused.view_shares.sum()) - 1) < 1e-5 and fused.albedo is None and fused.lighting is None


def test_occluded_texels_take_no_colour_from_the_occluding_view(default_model):
    mm = default_model
    views = render_known_views(mm, (55.0,))  # the nose hides part of the far cheek
    fused = _fuse(mm, views, "cpu")
    chart = fused.chart
    # Independently: each texel's point in the view, its normal, and the z-buffer in front of it.
    image_vertices = to_image(views.vertices[0])
    point = (chart.weights.unsqueeze(-1) * image_vertices[chart.corners]).sum(1)
    normals = -vertex_normals(views.vertices, mm.triangles)[0]
    facing = (chart.weights.unsqueeze(-1) * normals[chart.corners]).sum(1)[:, 2]
    depth = rasterize(image_vertices, mm.triangles, 256, 256).depth
    pixel = point[:, :2].round().long().clamp(0, 255)
    in_front = depth[pixel[:, 1], pixel[:, 0]] - point[:, 2]
    hidden = (facing > math.cos(math.radians(MAX_VIEW_ANGLE_DEG)) + 0.1) & (in_front > 5.0)
    assert hidden.sum() > 200  # a back-face test would call these visible
    seen = fused.seen.reshape(-1)[chart.texels]
    assert seen[hidden].float().mean() < 0.02
    errors = _texel_errors(fused, views)[0]
    assert errors[seen].mean() < SEEN_BOUND


def test_albedo_estimate_removes_the_lighting(default_model):
    mm = default_model
    views = render_known_views(mm, (-35.0, 35.0), lit=True)
    fused = _fuse(mm, views, "cpu", albedo=True, size=256)
    _, seen, texture, truth = _texel_errors(fused, views)
    albedo = _texel_errors(fused, views, fused.albedo)[2]

    def scaled_error(estimate: torch.Tensor) -> float:
        scale = (estimate[seen] * truth[seen]).sum(0) / estimate[seen].square().sum(0)
        return float((estimate[seen] * scale - truth[seen]).abs().mean())

    assert scaled_error(texture) > 0.03 and scaled_error(albedo) < 0.006
    light = fused.lighting / fused.lighting[:, :1]
    assert (light[:, :4] - views.sh[:4] / views.sh[0]).abs().max() < 0.05
    reprojection = reprojection_errors(
        views.vertices, views.crops, mm.triangles, fused.texture_uv, fused.texture, mm.face_region_mask
    )
    print(f"lit: reprojection of the plain texture {reprojection.tolist()}")
    assert (reprojection < 0.04).all()


def _check_other_chart(mm: MorphableModel) -> None:
    views = render_known_views(mm, (-30.0, 30.0))
    fused = _fuse(mm, views, "cpu", size=384)
    errors, seen, _, _ = _texel_errors(fused, views)
    assert seen.float().mean() > 0.6 and errors[seen].mean() < SEEN_BOUND
    positions = texel_positions(fused.texture_uv, 384)
    assert positions.min() > 0 and positions.max() < 384  # the chart fits inside the texture


def test_bfm_layout(reference_dir):
    """The BFM's face3d layout (here the reference stand-in): its UV map from BFM_UV.mat as the authors adjust it."""
    mm = MorphableModel.from_face3d_dir(reference_dir)
    _check_other_chart(mm)


def test_grid_chart():
    _check_other_chart(synthetic_morphable_model(60, 60))
