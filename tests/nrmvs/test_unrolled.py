"""The inference path of the unrolled optimisation (no autograd, hand-written gradients) against the training
path (autograd, second-order graph): the same steps up to float32 rounding."""

import pytest
import torch
from torch import nn

from models.face_model.morphable_model import MorphableModel
from models.geometry import camera
from models.networks.adaptive_basis import AdaptiveBasisNet
from models.networks.face_model_buffers import FaceModelBuffers
from models.networks.step_size_net import StepSizeNet
from models.nrmvs.config import NRMVSConfig
from models.nrmvs.unrolled import LevelModules, _VertexModel, unrolled_optimisation
from tools.face3d_writer import make_tiny_model, write_face3d_dir

# Small nets and feature maps (the full-size CNNs are not what is compared here): C channels, K basis vectors.
CHANNELS, BASIS, WIDTH = 8, 4, 8
MAP_SIDES = {2: 8, 3: 12, 4: 16}


@pytest.fixture(scope="module")
def tiny_mm(tmp_path_factory):
    return MorphableModel.load(write_face3d_dir(tmp_path_factory.mktemp("mm"), make_tiny_model()))


@pytest.fixture(scope="module")
def small_optimiser(tiny_mm):
    """(face buffers, config, level modules) with random step and basis nets."""
    torch.manual_seed(0)
    config = NRMVSConfig(num_adaptive=BASIS)
    modules = []
    for level in config.levels:
        table = tiny_mm.uv_tables[level.uv_size]
        step_net = StepSizeNet((CHANNELS, 2), WIDTH, (1, 1, 1, 1))
        nn.init.normal_(step_net.net[-2].weight, std=0.05)  # steps that depend on the residuals,
        nn.init.constant_(step_net.net[-2].bias, -0.4)  # small enough for these random features
        basis_net = AdaptiveBasisNet(
            level.uv_size,
            table.vertex_uv,
            table.pixel_vert_idx,
            table.pixel_vert_weights,
            tiny_mm.face_region_mask,
            exp_basis=tiny_mm.exp_basis[:, :BASIS] if level.expression_init else None,
            exp_std=tiny_mm.exp_std[:BASIS] if level.expression_init else None,
            n_adap_para=BASIS,
            feat_channels=CHANNELS,
            n_planes=WIDTH,
            n_gn=2,
        )
        nn.init.normal_(basis_net.net[-1].weight, std=0.05)
        modules.append(LevelModules(step_net, basis_net))
    return FaceModelBuffers(tiny_mm), config, modules


def _inputs(face, n_samples, n_views, seed):
    """Smooth images, per-level feature maps, landmarks near the posed mean face, regressor-like poses."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n_samples * n_views, 3, 16, 16, generator=generator)
    raw = torch.nn.functional.interpolate(coarse, size=256, mode="bilinear").view(n_samples, n_views, 3, 256, 256)
    maps = {
        level: torch.nn.functional.interpolate(
            torch.randn(n_samples * n_views, CHANNELS, 6, 6, generator=generator), size=side, mode="bilinear"
        )
        for level, side in MAP_SIDES.items()
    }
    pyramid = [None, None, maps[2], maps[3], maps[4]]
    pose = torch.zeros(n_samples * n_views, 6)
    pose[:, 1] = torch.linspace(-0.4, 0.4, n_samples * n_views)
    pose[:, 3] = -0.5
    vertices = camera.pose_vertices(face.linear.vertices(torch.zeros(len(pose), 80)), pose)
    landmarks = camera.to_image(vertices)[:, face.landmark_indices, :2].view(n_samples, n_views, 68, 2)
    landmarks = landmarks + 2.0 * torch.randn(landmarks.shape, generator=generator)
    pose = pose + 0.02 * torch.randn(pose.shape, generator=generator)
    return pyramid, raw * 2.0 - 1.0, raw, landmarks, pose.view(n_samples, n_views, 6)


@pytest.mark.parametrize("n_samples, n_views", [(1, 2), (2, 3)])
def test_inference_steps_equal_the_autograd_steps(small_optimiser, n_samples, n_views):
    face, config, modules = small_optimiser
    pyramid, images, raw, landmarks, pose = _inputs(face, n_samples, n_views, seed=n_views)
    arguments = (face, pyramid, pyramid, modules, images, raw, landmarks, pose, config)
    fast = unrolled_optimisation(*arguments, create_graph=False)
    graph = unrolled_optimisation(*arguments, create_graph=True)
    assert graph.final_vertices.requires_grad and not fast.final_vertices.requires_grad
    for ours, reference in zip(fast.steps, graph.steps, strict=True):
        torch.testing.assert_close(ours.vertices, reference.vertices.detach(), rtol=0, atol=2e-4)
        torch.testing.assert_close(ours.pose, reference.pose.detach(), rtol=0, atol=5e-6)
        torch.testing.assert_close(ours.shape_coeffs, reference.shape_coeffs.detach(), rtol=0, atol=5e-6)
        torch.testing.assert_close(ours.adaptive_coeffs, reference.adaptive_coeffs.detach(), rtol=0, atol=5e-6)
        torch.testing.assert_close(ours.raw_step_size, reference.raw_step_size.detach(), rtol=0, atol=1e-6)
        torch.testing.assert_close(ours.colors, reference.colors.detach(), rtol=0, atol=1e-5)
        torch.testing.assert_close(ours.feature_energy, reference.feature_energy, rtol=2e-5, atol=0)
        torch.testing.assert_close(ours.landmark_energy, reference.landmark_energy, rtol=2e-5, atol=0)
        assert torch.equal(ours.visible, reference.visible) and torch.equal(ours.full_visible, reference.full_visible)
    for ours, reference in zip(fast.levels, graph.levels, strict=True):
        torch.testing.assert_close(ours.adaptive_basis, reference.adaptive_basis.detach(), rtol=1e-5, atol=1e-3)
    # the steps do move the mesh, and by different amounts per level: the comparison is not a trivial one
    moves = [(level.steps[-1].vertices - level.steps[0].vertices).abs().max() for level in fast.levels]
    assert min(moves) > 1e-2
    assert all(step.raw_step_size.std() > 0 for step in fast.steps)


def test_hand_written_chain_rule_is_autograd(tiny_mm):
    """_VertexModel.gradients: d energy / d (shape, pose, adaptive) from d energy / d camera-space vertices."""
    face = FaceModelBuffers(tiny_mm).double()
    generator = torch.Generator().manual_seed(7)
    n = face.num_vertices
    basis = torch.randn(2, 3 * n, 5, generator=generator, dtype=torch.float64) * 1e3
    frozen = torch.randn(2, 3, n, 3, generator=generator, dtype=torch.float64)
    model = _VertexModel(face, basis, torch.rand(1, 5, 1, dtype=torch.float64) + 0.5, frozen)
    shape = torch.randn(2, 80, 1, generator=generator, dtype=torch.float64)
    pose = torch.randn(2, 3, 6, generator=generator, dtype=torch.float64) * 0.3
    adaptive = torch.randn(2, 3, 5, 1, generator=generator, dtype=torch.float64)
    upstream = torch.randn(2, 3, n, 3, generator=generator, dtype=torch.float64)
    leaves = [t.clone().requires_grad_(True) for t in (shape, pose, adaptive)]
    vertices, _ = model.vertices(*leaves)
    expected = torch.autograd.grad(vertices, leaves, upstream)
    points, _ = model.model_space(shape, adaptive, 3)
    ours = model.gradients(upstream, points, pose)
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want)
