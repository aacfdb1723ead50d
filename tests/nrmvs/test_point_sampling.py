"""Bilinear taps + table gathers against grid_sample, and the inference path's feature slopes against autograd."""

import torch
import torch.nn.functional as F

from models.nrmvs import point_sampling
from models.nrmvs.energy import feature_metric_energy, feature_metric_energy_and_gradient
from models.nrmvs.feature_sampling import (
    FeatureGradientSample,
    feature_tables,
    position_gradient,
    sample_features,
)
from models.nrmvs.point_sampling import bilinear_taps, gather_taps, pixel_table


def _grid(batch: int, points: int, seed: int, spread: float = 1.2) -> torch.Tensor:
    """Points in [-spread, spread]^2: some outside the map (zero padding), some on its border."""
    generator = torch.Generator().manual_seed(seed)
    grid = (torch.rand(batch, points, 2, generator=generator) * 2 - 1) * spread
    grid[:, :4] = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [1.0, -0.3], [0.2, -1.0]])  # corners and edges
    return grid


def test_gather_at_taps_is_grid_sample(device):
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 5, 7, 9, generator=generator).to(device)
    grid = _grid(3, 50, seed=1, spread=1.6).to(device)
    taps = bilinear_taps(grid, 7, 9)
    ours = gather_taps(pixel_table(maps), taps).view(3, 50, 5)
    reference = F.grid_sample(maps, grid.unsqueeze(2), align_corners=True)[..., 0].transpose(1, 2)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)
    # more than a pixel out (a pixel is 2 / (size - 1) in grid units): all four taps outside
    outside = (grid[..., 0].abs() > 1.0 + 2.0 / 8) | (grid[..., 1].abs() > 1.0 + 2.0 / 6)
    assert outside.any() and (ours[outside] == 0).all()


def test_wide_tables_are_gathered_in_blocks(device):
    columns = 2 * point_sampling.TABLE_BLOCK + 3
    generator = torch.Generator().manual_seed(2)
    maps = torch.randn(2, columns, 6, 6, generator=generator).to(device).contiguous(memory_format=torch.channels_last)
    taps = bilinear_taps(_grid(2, 30, seed=3, spread=1.0).to(device), 6, 6)
    table = pixel_table(maps)
    assert table.data_ptr() == maps.data_ptr()  # channels-last maps are tables without a copy
    wide = gather_taps(table, taps)
    narrow = torch.cat([gather_taps(table[:, k : k + 1].contiguous(), taps) for k in range(columns)], dim=1)
    torch.testing.assert_close(wide, narrow, rtol=0, atol=1e-6)


def test_inference_feature_gradient_is_the_authors_gradient(device):
    """Tables + taps + hand-written energy gradient give what autograd gives through FeatureGradientSample."""
    generator = torch.Generator().manual_seed(4)
    n_samples, n_views, channels, size, image, m = 2, 3, 6, 16, 64, 40
    features = torch.randn(n_samples * n_views, channels, size, size, generator=generator).to(device)
    vertices = (torch.rand(n_samples, n_views, m, 3, generator=generator) * 80 - 40).to(device)
    visible = (torch.rand(n_samples, n_views, m, generator=generator) > 0.2).to(device)

    tables = feature_tables(features)
    sampled = sample_features(tables, vertices, (image, image))
    values = sampled.values.view(n_samples, n_views, m, channels)
    energy = feature_metric_energy_and_gradient(values, visible)
    ours = position_gradient(tables, sampled.taps, energy.pairs, (image, image), n_views)

    image_points = torch.stack([vertices[..., 0] + image / 2, image / 2 - 1.0 - vertices[..., 1]], dim=-1)
    image_points = image_points.requires_grad_(True)
    grid = (image_points / (image - 1.0) * 2.0 - 1.0).view(n_samples * n_views, m, 1, 2)
    reference = FeatureGradientSample.apply(grid, features).view(n_samples, n_views, channels, m)
    value = feature_metric_energy(reference, visible).value
    (gradient,) = torch.autograd.grad(value, image_points)
    torch.testing.assert_close(values, reference.detach().transpose(2, 3))
    torch.testing.assert_close(energy.term.value, value.detach())
    torch.testing.assert_close(ours, gradient, rtol=1e-4, atol=1e-6)
    assert gradient.abs().max() > 1e-3
