"""Tests of the z-buffer rasteriser, colour rendering, SH shading and the demo's geometry overlay."""

import time

import numpy as np
import pytest
import torch
from matplotlib.path import Path as PolygonPath
from PIL import Image

from models.face_model.procedural import synthetic_morphable_model
from models.geometry.camera import pose_vertices, to_image
from models.geometry.normals import vertex_normals
from models.geometry.rasterizer import rasterize, render_colors
from models.geometry.spherical_harmonics import sh_shading
from models.io.overlay import OVERLAY_ALBEDO, render_geometry_overlay

TRIANGLE = torch.tensor([[3.3, 2.2, 1.0], [17.6, 5.1, 2.0], [8.4, 14.7, 3.0]])


def _pixels_inside(corners: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool: pixel centres strictly inside the 2D triangle (a polygon test independent of the rasteriser)."""
    ys, xs = np.mgrid[0:height, 0:width]
    path = PolygonPath(np.asarray(corners)[:, :2])
    return path.contains_points(np.stack([xs.ravel(), ys.ravel()], 1)).reshape(height, width)


def test_single_triangle_covers_exactly_the_pixels_inside_it():
    raster = rasterize(TRIANGLE, torch.tensor([[0, 1, 2]]), 20, 24)
    expected = _pixels_inside(TRIANGLE.numpy(), 20, 24)
    covered = (raster.triangle_ids == 0).numpy()
    assert covered.sum() > 40
    assert np.array_equal(covered, expected)
    assert (raster.triangle_ids[~torch.from_numpy(covered)] == -1).all()
    weights = raster.barycentric[torch.from_numpy(covered)]
    assert torch.allclose(weights.sum(1), torch.ones(weights.shape[0]), atol=1e-6)
    assert (weights >= -1e-6).all()
    # The weights reproduce the pixel position and the interpolated depth.
    ys, xs = torch.nonzero(torch.from_numpy(covered), as_tuple=True)
    position = weights @ TRIANGLE
    assert torch.allclose(position[:, 0], xs.float(), atol=1e-4)
    assert torch.allclose(position[:, 1], ys.float(), atol=1e-4)
    assert torch.allclose(raster.depth[torch.from_numpy(covered)], position[:, 2], atol=1e-5)
    assert torch.isneginf(raster.depth[~torch.from_numpy(covered)]).all()


def test_winding_does_not_matter_and_degenerate_triangles_cover_nothing():
    clockwise = rasterize(TRIANGLE, torch.tensor([[0, 2, 1]]), 20, 24)
    counter = rasterize(TRIANGLE, torch.tensor([[0, 1, 2]]), 20, 24)
    assert torch.equal(clockwise.triangle_ids >= 0, counter.triangle_ids >= 0)
    flat = torch.tensor([[2.0, 2.0, 0.0], [10.0, 10.0, 0.0], [6.0, 6.0, 0.0]])
    assert (rasterize(flat, torch.tensor([[0, 1, 2]]), 16, 16).triangle_ids == -1).all()


def test_nearer_triangle_wins_whatever_the_order():
    square = torch.tensor([[1.0, 1.0], [14.0, 1.0], [14.0, 14.0], [1.0, 14.0]])
    far = torch.cat([square, torch.full((4, 1), -5.0)], 1)
    near = torch.cat([square, torch.full((4, 1), 5.0)], 1)
    vertices = torch.cat([far, near])
    quads = torch.tensor([[0, 1, 2], [0, 2, 3]])
    for triangles in (torch.cat([quads, quads + 4]), torch.cat([quads + 4, quads])):
        raster = rasterize(vertices, triangles, 16, 16)
        covered = raster.triangle_ids >= 0
        assert covered.sum() > 100
        near_ids = torch.nonzero(triangles.min(1).values >= 4).ravel()
        assert torch.isin(raster.triangle_ids[covered], near_ids).all()
        assert torch.allclose(raster.depth[covered], torch.tensor(5.0))


def test_depth_tie_keeps_the_first_triangle_as_face3d():
    vertices = torch.tensor([[1.0, 1.0, 0.0], [14.0, 1.0, 0.0], [7.0, 14.0, 0.0]])
    raster = rasterize(vertices, torch.tensor([[0, 1, 2], [2, 1, 0], [1, 2, 0]]), 16, 16)
    first_only = rasterize(vertices, torch.tensor([[0, 1, 2]]), 16, 16).triangle_ids == 0
    assert first_only.sum() > 50
    assert (raster.triangle_ids[first_only] == 0).all()


def test_chunking_gives_the_same_result(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    vertices = torch.rand(60, 3, generator=generator) * torch.tensor([40.0, 30.0, 10.0])
    triangles = torch.randint(0, 60, (80, 3), generator=generator)
    whole = rasterize(vertices, triangles, 30, 40)
    monkeypatch.setattr("models.geometry.rasterizer.MAX_PAIRS_PER_CHUNK", 37)
    chunked = rasterize(vertices, triangles, 30, 40)
    assert (whole.triangle_ids >= 0).sum() > 300
    assert torch.equal(whole.triangle_ids, chunked.triangle_ids)
    assert torch.equal(whole.barycentric, chunked.barycentric)
    assert torch.equal(whole.depth, chunked.depth)


def test_render_colors_interpolates_linearly_and_keeps_background():
    colors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    background = torch.full((20, 24, 2), 7.0)
    image = render_colors(TRIANGLE, torch.tensor([[0, 1, 2]]), colors, 20, 24, background)
    covered = torch.from_numpy(_pixels_inside(TRIANGLE.numpy(), 20, 24))
    assert (image[~covered] == 7.0).all()
    assert (background == 7.0).all(), "the background must not be modified"
    # A linear function of position, given as vertex colours, renders as that function.
    linear = 0.3 * TRIANGLE[:, 0] - 0.7 * TRIANGLE[:, 1] + 2.0
    ramp = render_colors(TRIANGLE, torch.tensor([[0, 1, 2]]), linear.unsqueeze(1), 20, 24)[..., 0]
    ys, xs = torch.nonzero(covered, as_tuple=True)
    assert torch.allclose(ramp[covered], 0.3 * xs - 0.7 * ys + 2.0, atol=1e-4)
    assert (ramp[~covered] == 0).all()


def test_render_colors_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="colors"):
        render_colors(TRIANGLE, torch.tensor([[0, 1, 2]]), torch.ones(2, 3), 8, 8)
    with pytest.raises(ValueError, match="background"):
        render_colors(TRIANGLE, torch.tensor([[0, 1, 2]]), torch.ones(3, 3), 8, 8, torch.zeros(8, 9, 3))
    with pytest.raises(ValueError, match="outside"):
        rasterize(TRIANGLE, torch.tensor([[0, 1, 3]]), 8, 8)


def test_sh_shading_matches_the_basis():
    normals = torch.nn.functional.normalize(torch.randn(50, 3, generator=torch.Generator().manual_seed(1)), dim=1)
    nx, ny, nz = normals.unbind(1)
    grey = torch.arange(1.0, 10.0) / 10
    expected = (
        grey[0]
        + grey[1] * nx
        + grey[2] * ny
        + grey[3] * nz
        + grey[4] * nx * ny
        + grey[5] * nx * nz
        + grey[6] * ny * nz
        + grey[7] * (nx**2 - ny**2)
        + grey[8] * (3 * nz**2 - 1)
    )
    assert sh_shading(normals, grey).shape == (50, 1)
    assert torch.allclose(sh_shading(normals, grey)[:, 0], expected, atol=1e-6)
    colour = torch.stack([grey, 2 * grey, -grey], 1)
    assert torch.allclose(sh_shading(normals, colour), expected.unsqueeze(1) * torch.tensor([1.0, 2.0, -1.0]))


def test_vertex_normals_of_a_flat_patch():
    vertices = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]])
    normals = vertex_normals(vertices.unsqueeze(0), torch.tensor([[0, 1, 2]]))[0]
    assert torch.allclose(normals[:3], torch.tensor([0.0, 0.0, 1.0]).expand(3, 3))
    assert torch.equal(normals[3], torch.tensor([1.0, 0.0, 0.0]))


def _posed_grid_face(rows: int, cols: int, yaw: float = 0.3):
    mm = synthetic_morphable_model(rows, cols)
    vertices = mm.vertices(torch.zeros(1, mm.shape_std.shape[0]), torch.zeros(1, mm.exp_std.shape[0]))
    camera = pose_vertices(vertices, torch.tensor([[0.05, yaw, 0.0, 0.0, 0.0, 0.0]]))[0]
    return mm, camera


def test_geometry_overlay_changes_only_the_projected_masked_mesh():
    mm, camera = _posed_grid_face(30, 34)
    background = torch.rand(256, 256, 3, generator=torch.Generator().manual_seed(2))
    mask = mm.face_region_mask_no_nose_hole
    overlay = render_geometry_overlay(camera, mm.triangles, background, mask)
    assert overlay.shape == (256, 256, 3) and overlay.min() >= 0 and overlay.max() <= 1

    masked = torch.from_numpy(np.isin(mm.triangles.numpy(), np.flatnonzero(mask.numpy())).all(axis=1))
    footprint = rasterize(to_image(camera), mm.triangles[masked], 256, 256).triangle_ids >= 0
    changed = (overlay != background).any(dim=2)
    assert footprint.sum() > 2000
    assert torch.equal(changed, footprint)
    # Grey shading: equal channels, at most the albedo, brightest where the surface faces the camera.
    drawn = overlay[footprint]
    assert torch.equal(drawn[:, 0], drawn[:, 1]) and torch.equal(drawn[:, 1], drawn[:, 2])
    assert drawn.max() <= OVERLAY_ALBEDO + 1e-6 and drawn.max() > 0.7

    full = render_geometry_overlay(camera, mm.triangles, background)
    assert ((full != background).any(dim=2) & ~footprint).sum() > 1000


def test_overlay_renders_a_bfm_sized_mesh(tmp_path):
    mm, camera = _posed_grid_face(231, 231)
    assert mm.num_vertices == 53361 and mm.num_triangles == 105800
    background = torch.full((256, 256, 3), 0.2)
    start = time.perf_counter()
    raster = rasterize(to_image(camera), mm.triangles, 256, 256)
    elapsed = time.perf_counter() - start
    overlay = render_geometry_overlay(camera, mm.triangles, background, mm.face_region_mask_no_nose_hole)
    print(f"rasterised {mm.num_triangles} triangles at 256x256 in {elapsed:.3f} s")
    assert (raster.triangle_ids >= 0).sum() > 20000
    assert (overlay != background).any(dim=2).sum() > 10000
    Image.fromarray((overlay.numpy() * 255).round().astype(np.uint8)).save(tmp_path / "overlay.png")


def test_overlay_style_matches_the_published_overlays(examples_dir):
    """The published overlays are grey with a maximum of 0.75 (the albedo), as ours."""
    published = np.asarray(Image.open(examples_dir / "original_outputs" / "case0" / "vis_view0.jpg"), dtype=float)
    grey = published[(np.ptp(published, axis=2) < 4)].mean(axis=1) / 255
    assert abs(np.percentile(grey, 99.5) - OVERLAY_ALBEDO) < 0.03
    mm, camera = _posed_grid_face(60, 64)
    overlay = render_geometry_overlay(camera, mm.triangles, torch.zeros(256, 256, 3), mm.face_region_mask)
    assert abs(overlay.max().item() - OVERLAY_ALBEDO) < 0.01
