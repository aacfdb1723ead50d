"""The UV chart in a texture: the texels each triangle covers, against the general z-buffer, and the layout."""

import numpy as np
import pytest
import torch

from models.face_model.default_model import load_default_model
from models.face_model.procedural import synthetic_morphable_model
from models.geometry.rasterizer import rasterize
from models.texture.uv_chart import CHART_MARGIN, cached_chart, rasterize_chart, texel_positions, texture_coordinates


@pytest.mark.parametrize("model", ["default", "grid"])
def test_chart_texels_are_the_z_buffers(model, device):
    mm = load_default_model() if model == "default" else synthetic_morphable_model(30, 34)
    uv = torch.from_numpy(texture_coordinates(mm.uv_coords.numpy())).to(device)
    size = 192
    chart = rasterize_chart(uv, mm.triangles.to(device), size)
    # The general rasteriser with every depth 0 (no overlaps in a chart) gives the same texels.
    flat = torch.cat([texel_positions(uv.float(), size), torch.zeros_like(uv[:, :1]).float()], 1)
    reference = rasterize(flat, mm.triangles.to(device), size, size)
    expected = torch.nonzero(reference.triangle_ids.reshape(-1) >= 0).squeeze(1)
    assert chart.texels.shape[0] > 0.5 * size * size
    # The same texels, but for a few centres exactly on an edge, which the z-buffer's half-open float32 test
    # may leave out and the chart keeps.
    assert torch.isin(expected, chart.texels).all()
    extra = ~torch.isin(chart.texels, expected)
    assert int(extra.sum()) <= 1e-3 * expected.numel()
    assert (chart.weights[extra].amin(1) < 1e-6).all()
    assert torch.equal(chart.mask().reshape(-1).nonzero().squeeze(1), chart.texels)
    # Each texel's weights put it exactly where it is, on its own triangle.
    assert torch.allclose(chart.weights.sum(1), torch.ones_like(chart.weights[:, 0]), atol=1e-6)
    assert (chart.weights >= 0).all()
    position = (chart.weights.unsqueeze(-1) * texel_positions(uv.float(), size)[chart.corners]).sum(1)
    column_row = torch.stack([chart.texels % size, chart.texels // size], 1).float()
    assert (position - column_row).abs().max() < 1e-3


def test_texture_coordinates_fit_the_square_keeping_the_shape():
    stretched = np.array([[-0.2, 0.1], [1.3, 0.1], [0.4, 1.4], [0.55, 0.7]])  # beyond the unit square
    fitted = texture_coordinates(stretched)
    assert fitted.min() >= CHART_MARGIN - 1e-12 and fitted.max() <= 1 - CHART_MARGIN + 1e-12
    assert np.isclose(np.ptp(fitted, axis=0).max(), 1 - 2 * CHART_MARGIN)
    # one uniform scale and a shift: distances keep their ratios
    before = np.linalg.norm(stretched[1:] - stretched[0], axis=1)
    after = np.linalg.norm(fitted[1:] - fitted[0], axis=1)
    assert np.allclose(after / before, after[0] / before[0])
    assert np.allclose((fitted.min(0) + fitted.max(0)) / 2, 0.5)
    with pytest.raises(ValueError, match="coincide"):
        texture_coordinates(np.zeros((3, 2)))


def test_two_triangles_over_the_square_cover_every_texel_once():
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    chart = rasterize_chart(uv, torch.tensor([[0, 1, 2], [0, 2, 3]]), 16)
    assert torch.equal(chart.texels, torch.arange(256))
    # texels on the shared diagonal go to the later triangle
    diagonal = chart.texels[(chart.texels % 16) == 15 - chart.texels // 16]
    assert diagonal.numel() == 16
    on_diagonal = torch.isin(chart.texels, diagonal)
    assert (chart.corners[on_diagonal] == torch.tensor([0, 2, 3])).all()


def test_charts_are_cached_per_model_and_size():
    mm = synthetic_morphable_model(12, 12)
    uv = torch.from_numpy(texture_coordinates(mm.uv_coords.numpy()))
    first = cached_chart(uv, mm.triangles, 64)
    assert cached_chart(uv.clone(), mm.triangles.clone(), 64) is first
    assert cached_chart(uv, mm.triangles, 32) is not first
