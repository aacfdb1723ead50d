"""Feature sampling with the authors' gradient, and the two energy terms, on hand-made inputs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.geometry import camera
from models.nrmvs.energy import (
    CONTOUR_LANDMARKS,
    feature_metric_energy,
    feature_metric_energy_and_gradient,
    landmark_energy,
    landmark_energy_and_gradient,
)
from models.nrmvs.feature_sampling import FeatureGradientSample, central_difference_gradients, sample_at_vertices


def test_central_differences_on_a_ramp():
    ys, xs = torch.meshgrid(torch.arange(6.0), torch.arange(7.0), indexing="ij")
    ramp = (2.0 * xs - 3.0 * ys).view(1, 1, 6, 7)
    slopes = central_difference_gradients(ramp)
    assert torch.allclose(slopes[:, 0], torch.full_like(ramp, 2.0))
    assert torch.allclose(slopes[:, 1], torch.full_like(ramp, -3.0))
    quadratic = (xs**2).view(1, 1, 6, 7)
    # replicate padding at the border: the first column copies the second's central difference
    assert torch.allclose(central_difference_gradients(quadratic)[0, 0, 0, :, 0], torch.full((6,), 2.0))


def test_grid_gradient_uses_feature_slopes(device):
    """On a ramp feature map the position gradient is the ramp's slope times (size - 1) / 2."""
    height, width = 9, 11
    ys, xs = torch.meshgrid(torch.arange(float(height)), torch.arange(float(width)), indexing="ij")
    features = torch.stack([0.5 * xs + 0.25 * ys, -xs]).unsqueeze(0).to(device)  # (1, 2, H, W)
    grid = torch.tensor([[[[0.1, -0.3]], [[-0.6, 0.45]]]], device=device, requires_grad=True)  # (1, 2, 1, 2)
    sampled = FeatureGradientSample.apply(grid, features)
    torch.testing.assert_close(
        sampled, F.grid_sample(features, grid.detach(), mode="bilinear", align_corners=True), rtol=0, atol=0
    )
    weights = torch.tensor([1.0, 2.0], device=device).view(1, 2, 1, 1)
    (sampled * weights).sum().backward()
    d_pixel = torch.tensor([0.5 * 1.0 - 1.0 * 2.0, 0.25 * 1.0])  # d/dx, d/dy of the weighted sum
    expected = d_pixel * torch.tensor([(width - 1) / 2, (height - 1) / 2])
    torch.testing.assert_close(grid.grad[0, :, 0].cpu(), expected.expand(2, 2))


def test_feature_gradient_matches_autograd_for_the_map(device):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 8, 8, generator=generator, dtype=torch.float64).to(device).requires_grad_(True)
    grid = (torch.rand(2, 5, 1, 2, generator=generator, dtype=torch.float64) * 1.6 - 0.8).to(device)
    upstream = torch.randn(2, 3, 5, 1, generator=generator, dtype=torch.float64).to(device)
    (FeatureGradientSample.apply(grid, features) * upstream).sum().backward()
    ours = features.grad.clone()
    features.grad = None
    (F.grid_sample(features, grid, align_corners=True) * upstream).sum().backward()
    torch.testing.assert_close(ours, features.grad)


def test_sample_at_vertices_reads_the_right_pixels(device):
    image = torch.arange(256.0 * 256, device=device).view(1, 1, 1, 256, 256)
    # camera space (x right, y up, origin at the centre) -> pixel (u, v) = (x + 128, 127 - y)
    vertices = torch.tensor([[[[0.0, 0.0, 0.0], [-128.0, 127.0, 0.0], [10.0, -20.0, 5.0]]]], device=device)
    values = sample_at_vertices(image, vertices, (256, 256), feature_gradient=False)[0, 0, 0].cpu()
    expected = [127 * 256 + 128, 0, 147 * 256 + 138]
    torch.testing.assert_close(values, torch.tensor(expected, dtype=torch.float32))


def test_feature_metric_energy_by_hand(device):
    features = torch.zeros(1, 3, 2, 4)
    features[0, 1, :, 0] = torch.tensor([1.0, 2.0])
    features[0, 2, :, 1] = torch.tensor([3.0, 0.0])
    visible = torch.tensor([[[True, True, False, True], [True, True, True, True], [True, True, True, False]]])
    term = feature_metric_energy(features.to(device), visible.to(device))
    term = type(term)(*(t.cpu() for t in term))
    # pairs (0,1): co-visible {0,1,3}: squared diffs 5, 0, 0 -> 5/3; (0,2): {0,1}: 0, 9 -> 4.5; (1,2): {0,1,2}: 5, 9, 0
    expected = (5 / 3 + 4.5 + 14 / 3) / 3
    assert term.value.item() == pytest.approx(expected)
    assert term.abs_residuals.shape == (1, 3, 2)
    # view 0's residual: mean over its pairs of per-channel mean |diff|
    pair01 = torch.tensor([1 / 3, 2 / 3])
    pair02 = torch.tensor([3 / 2, 0.0])
    torch.testing.assert_close(term.abs_residuals[0, 0], (pair01 + pair02) / 2)
    with pytest.raises(ValueError, match="at least two views"):
        feature_metric_energy(features[:, :1], visible[:, :1])


def _landmark_setup():
    generator = torch.Generator().manual_seed(1)
    n = 200
    vertices = torch.randn(1, 2, n, 3, generator=generator) * 40
    landmark_indices = torch.randperm(n, generator=generator)[:68]
    image = camera.to_image(vertices)[..., :2]
    landmarks = image[:, :, landmark_indices] + torch.randn(1, 2, 68, 2, generator=generator)
    return vertices, landmarks, landmark_indices, n


def test_landmark_energy_fixed_when_all_visible(device):
    vertices, landmarks, indices, n = _landmark_setup()
    all_visible = torch.ones(1, 2, 68, dtype=torch.bool)
    region = torch.ones(1, 2, n, dtype=torch.bool)
    inputs = (t.to(device) for t in (vertices, landmarks, indices, all_visible, region))
    term = landmark_energy(*inputs, (256, 256))
    term = type(term)(*(t.cpu() for t in term))
    projected = camera.to_image(vertices)[..., :2][:, :, indices]
    expected = (projected - landmarks).square().sum(-1).mean()
    torch.testing.assert_close(term.value, expected)
    residual = (projected - landmarks).abs().mean(dim=2) / torch.tensor([255.0, 255.0])
    torch.testing.assert_close(term.abs_residuals, residual)


def test_dynamic_contour_landmarks_use_the_closest_visible_vertex(device):
    vertices, landmarks, indices, n = _landmark_setup()
    hidden = torch.ones(1, 2, 68, dtype=torch.bool)
    hidden[0, 0, 3] = False  # contour landmark 3 is back-facing in view 0
    hidden[0, 1, 30] = False  # a fixed landmark stays fixed even when hidden
    region = torch.rand(1, 2, n, generator=torch.Generator().manual_seed(2)) > 0.5
    inputs = (t.to(device) for t in (vertices, landmarks, indices, hidden, region))
    term = landmark_energy(*inputs, (256, 256))
    term = type(term)(*(t.cpu() for t in term))
    projected = camera.to_image(vertices)[..., :2]
    fixed_error = (projected[:, :, indices] - landmarks).square().sum(-1)
    fixed_error[0, 0, 3] = 0.0
    candidates = np.flatnonzero(region[0, 0].numpy())
    distances = np.linalg.norm(projected[0, 0, candidates].numpy() - landmarks[0, 0, 3].numpy(), axis=1)
    closest = projected[0, 0, candidates[np.argmin(distances)]]
    dynamic_error = (closest - landmarks[0, 0, 3]).square().sum()
    expected = fixed_error.mean() + dynamic_error / (2 * 68)
    torch.testing.assert_close(term.value, expected)
    assert 3 in CONTOUR_LANDMARKS and 30 not in CONTOUR_LANDMARKS


def test_feature_energy_gradient_is_autograd_of_the_energy(device):
    """The hand-written gradient (inference) against autograd of feature_metric_energy (training), float64."""
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(2, 3, 30, 5, generator=generator, dtype=torch.float64).to(device)
    visible = (torch.rand(2, 3, 30, generator=generator) > 0.3).to(device)
    leaf = features.transpose(2, 3).contiguous().requires_grad_(True)  # autograd's layout: (N, V, C, n)
    term = feature_metric_energy(leaf, visible)
    (expected,) = torch.autograd.grad(term.value, leaf)
    ours = feature_metric_energy_and_gradient(features.clone(), visible)
    torch.testing.assert_close(ours.term.value, term.value.detach())
    torch.testing.assert_close(ours.term.abs_residuals, term.abs_residuals.detach())
    torch.testing.assert_close(ours.dense(), expected.transpose(2, 3))
    assert expected.abs().sum() > 0


def test_landmark_energy_gradient_is_autograd_of_the_energy(device):
    vertices, landmarks, indices, n = _landmark_setup()
    vertices = vertices.double()
    landmarks = landmarks.double()
    generator = torch.Generator().manual_seed(5)
    landmark_visible = torch.rand(1, 2, 68, generator=generator) > 0.4  # some contour landmarks go dynamic
    region = torch.rand(1, 2, n, generator=generator) > 0.5
    inputs = [t.to(device) for t in (vertices, landmarks, indices, landmark_visible, region)]
    leaf = inputs[0].clone().requires_grad_(True)
    term = landmark_energy(leaf, *inputs[1:], (256, 200))
    (expected,) = torch.autograd.grad(term.value, leaf)
    projected = camera.to_image(inputs[0], 256, 200)[..., :2]
    ours = landmark_energy_and_gradient(projected, *inputs[1:], (256, 200))
    torch.testing.assert_close(ours.term.value, term.value.detach())
    torch.testing.assert_close(ours.term.abs_residuals, term.abs_residuals.detach())
    # image (u, v) -> camera (x, y): u = x + W/2, v = H/2 - 1 - y
    torch.testing.assert_close(ours.gradient[..., 0], expected[..., 0])
    torch.testing.assert_close(ours.gradient[..., 1], -expected[..., 1])
    dynamic = ~(landmark_visible[0, 0, list(CONTOUR_LANDMARKS)])
    assert dynamic.any() and torch.count_nonzero(ours.gradient[0, 0].abs().sum(-1)) > 56
