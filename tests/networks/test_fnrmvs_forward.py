"""FNRMVSNet forward on a tiny model: shapes for any N and V, inference vs training graphs, input checks."""

import pytest
import torch

from models.face_model.morphable_model import MorphableModel
from models.geometry import camera
from models.networks.fnrmvs_net import FNRMVSNet
from models.nrmvs.config import RELEASED_LEVELS, LevelConfig, NRMVSConfig
from tools.face3d_writer import make_tiny_model, write_face3d_dir
from tools.reference_weights import fill_with_reference_rule

IMAGE_NORMALISATION = (torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225]))


@pytest.fixture(scope="module")
def tiny_mm(tmp_path_factory):
    return MorphableModel.load(write_face3d_dir(tmp_path_factory.mktemp("mm"), make_tiny_model()))


@pytest.fixture(scope="module")
def tiny_net(tiny_mm):
    net = FNRMVSNet(tiny_mm)
    fill_with_reference_rule(net)
    return net


def _inputs(net, n_samples, n_views, seed=0):
    generator = torch.Generator().manual_seed(seed)
    raw = torch.rand(n_samples, n_views, 3, 256, 256, generator=generator)
    mean, std = (t.view(1, 1, 3, 1, 1) for t in IMAGE_NORMALISATION)
    face = net.opt_layer.face
    pose = torch.zeros(n_samples * n_views, 6)
    pose[:, 1] = torch.linspace(-0.4, 0.4, n_samples * n_views)
    vertices = camera.pose_vertices(face.linear.vertices(torch.zeros(len(pose), 80)), pose)
    landmarks = camera.to_image(vertices)[:, face.landmark_indices, :2].view(n_samples, n_views, 68, 2)
    return (raw - mean) / std, raw, landmarks + torch.randn(landmarks.shape, generator=generator)


def test_any_number_of_samples_and_views(tiny_net):
    tiny_net.eval()
    with torch.no_grad():
        output = tiny_net(*_inputs(tiny_net, 2, 3))
    n = tiny_net.opt_layer.face.num_vertices
    result = output.optimisation
    assert output.vertices.shape == (2, 3, n, 3)
    assert len(result.stage_vertices) == 10 and len(result.steps) == 9
    assert [level.level for level in result.levels] == [2, 3, 4]
    assert result.levels[0].adaptive_basis.shape == (2, 3 * n, 64)
    step = result.steps[4]
    assert step.pose.shape == (2, 3, 6) and step.adaptive_coeffs.shape == (2, 3, 64, 1)
    assert step.raw_step_size.shape == (2, 4) and step.colors.shape == (2, 3, 3, n)
    assert step.visible.dtype == torch.bool and not step.vertices.requires_grad
    assert torch.isfinite(output.vertices).all()
    # the optimisation moves the mesh away from the regressor's initial mesh
    assert (output.vertices - result.initial_vertices).abs().max() > 1e-3


def test_training_mode_builds_second_order_graph(tiny_net):
    tiny_net.train()
    try:
        output = tiny_net(*_inputs(tiny_net, 1, 2, seed=1))
        assert output.vertices.requires_grad
        # each level restarts from detached parameters (as the authors'), so every level needs a loss term
        sum(vertices.square().mean() for vertices in output.optimisation.stage_vertices[1:]).backward()
        opt_layer = tiny_net.opt_layer
        for modules in opt_layer.level_modules:
            step_grad = modules.step_net.net[0].weight.grad
            basis_grad = modules.basis_net.net[0].weight.grad
            assert step_grad is not None and step_grad.abs().sum() > 0
            assert basis_grad is not None and basis_grad.abs().sum() > 0
        # the energy's features get gradients only through create_graph=True (second order)
        fpn_grad = opt_layer.fpn.layer2.lateral_conv.weight.grad
        assert fpn_grad is not None and fpn_grad.abs().sum() > 0
        assert all(p.grad is None for p in tiny_net.regressor.parameters())
    finally:
        tiny_net.zero_grad(set_to_none=True)
        tiny_net.eval()


def test_forward_on_the_device(tiny_mm, tiny_net, device):
    """The same weights give the same meshes on every device (CPU and, where present, CUDA)."""
    net = FNRMVSNet(tiny_mm).to(device).eval()
    net.load_state_dict(tiny_net.state_dict())
    inputs = _inputs(tiny_net, 1, 2, seed=4)
    with torch.no_grad():
        output = net(*(t.to(device) for t in inputs)).vertices.cpu()
        reference = tiny_net.eval()(*inputs).vertices
    torch.testing.assert_close(output, reference, rtol=0, atol=5e-3)


def test_reduced_precision_is_opt_in_and_stays_near_float32(tiny_net):
    """bfloat16 autocast (the opt-in mode) runs the CNNs in bfloat16: float32 results near the float32 ones,
    the same as calling the model under ``torch.autocast``; the default stays float32."""
    inputs = _inputs(tiny_net, 1, 2, seed=4)
    tiny_net.eval()
    with torch.no_grad():
        reference = tiny_net(*inputs)
        reduced = tiny_net(*inputs, reduced_precision=torch.bfloat16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            in_context = tiny_net(*inputs)
        again = tiny_net(*inputs)
    assert reduced.vertices.dtype == torch.float32 and torch.isfinite(reduced.vertices).all()
    assert reduced.optimisation.levels[-1].adaptive_basis.dtype == torch.float32
    torch.testing.assert_close(in_context.vertices, reduced.vertices, rtol=0, atol=0)
    torch.testing.assert_close(again.vertices, reference.vertices, rtol=0, atol=0)
    difference = (reduced.vertices - reference.vertices).abs()
    # bfloat16 keeps 8 bits of mantissa: the mesh moves, but by pixels, not by the face's size (~100 px)
    assert 1e-3 < difference.max() < 16.0 and difference.mean() < 4.0


def test_input_checks(tiny_net):
    images, raw, landmarks = _inputs(tiny_net, 1, 2)
    with pytest.raises(ValueError, match="at least 2 views"):
        tiny_net(images[:, :1], raw[:, :1], landmarks[:, :1])
    with pytest.raises(ValueError, match="landmarks must have shape"):
        tiny_net(images, raw, landmarks[:, :, :67])
    with pytest.raises(ValueError, match="images must have shape"):
        tiny_net(images[0], raw[0], landmarks)


def test_level_modules_are_the_checkpoint_modules(tiny_net):
    opt_layer = tiny_net.opt_layer
    registered = [(opt_layer.step_net2, opt_layer.adap_B_net2), (opt_layer.step_net3, opt_layer.adap_B_net3)]
    registered.append((opt_layer.step_net4, opt_layer.adap_B_net4))
    assert [(m.step_net, m.basis_net) for m in opt_layer.level_modules] == registered
    keys = list(tiny_net.state_dict())
    assert len(keys) == len(set(keys)) and not any("level_modules" in key for key in keys)
    assert opt_layer.bfm is opt_layer.face


def test_a_configured_schedule(tiny_mm, tiny_net):
    config = NRMVSConfig(levels=RELEASED_LEVELS[:2], steps_per_level=2, landmark_weight=0.05)
    net = FNRMVSNet(tiny_mm, config=config)
    fill_with_reference_rule(net)
    assert not hasattr(net.opt_layer, "step_net4") and not hasattr(net.opt_layer, "adap_B_net4")
    net.eval()
    with torch.no_grad():
        output = net(*_inputs(net, 1, 2))
    assert [level.level for level in output.optimisation.levels] == [2, 3]
    assert [len(level.steps) for level in output.optimisation.levels] == [2, 2]
    assert torch.isfinite(output.vertices).all()


def test_config_checks():
    with pytest.raises(ValueError, match="uv_size 48"):
        LevelConfig(2, 48, (1.0,) * 4, (0.0,) * 4)
    with pytest.raises(ValueError, match="one step scale and bias per group"):
        LevelConfig(2, 32, (1.0,) * 3, (0.0,) * 4)
    with pytest.raises(ValueError, match="distinct"):
        NRMVSConfig(levels=(RELEASED_LEVELS[0], RELEASED_LEVELS[0]))
    with pytest.raises(ValueError, match="positive"):
        NRMVSConfig(steps_per_level=0)
