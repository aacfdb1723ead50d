"""The one evaluation of the linear model: LinearFaceModel, MorphableModel.vertices and the network's buffers."""

import pytest
import torch

from models.face_model.linear_model import LinearFaceModel
from models.face_model.procedural import synthetic_morphable_model
from models.networks.face_model_buffers import FaceModelBuffers


@pytest.fixture(scope="module")
def mm():
    return synthetic_morphable_model(12, 14)


def _explicit(mm, shape, expression):
    """mean + basis @ (coeffs * std) in float64, one item at a time."""
    mean = mm.mean_shape.double()
    flat = mean + mm.shape_basis.double() @ (shape.double() * mm.shape_std.double())
    if expression is not None:
        flat = flat + mm.exp_basis.double() @ (expression.double() * mm.exp_std.double())
    return flat.view(-1, 3)


def test_vertices_are_mean_plus_scaled_bases(mm, device):
    generator = torch.Generator().manual_seed(0)
    shape = torch.randn(3, 80, generator=generator)
    expression = torch.randn(3, 64, generator=generator)
    model = mm.to(device)
    vertices = model.vertices(shape.to(device), expression.to(device)).cpu()
    assert vertices.shape == (3, mm.num_vertices, 3) and vertices.dtype == torch.float32
    for k in range(3):
        expected = _explicit(mm, shape[k], expression[k]).float()
        torch.testing.assert_close(vertices[k], expected, rtol=1e-5, atol=2.0)  # model units: micrometres
    # (B, k, 1) columns are accepted as the network passes them; identity only without expression
    torch.testing.assert_close(
        model.vertices(shape.unsqueeze(-1).to(device)).cpu()[1],
        _explicit(mm, shape[1], None).float(),
        rtol=1e-5,
        atol=2.0,
    )


def test_a_shared_identity_broadcasts_over_expressions(mm, device):
    linear = mm.to(device).linear
    shape = torch.randn(80, device=device)
    expression = torch.randn(4, 64, device=device)
    shared = linear.vertices(shape, expression)
    repeated = linear.vertices(shape.expand(4, -1), expression)
    assert shared.shape == (4, mm.num_vertices, 3)
    torch.testing.assert_close(shared, repeated, rtol=1e-6, atol=0.05)


def test_take_selects_vertex_rows(mm, device):
    linear = mm.to(device).linear
    index = torch.tensor([5, 0, 77, 5], device=device)
    shape, expression = torch.randn(2, 80, device=device), torch.randn(2, 64, device=device)
    torch.testing.assert_close(
        linear.take(index).vertices(shape, expression), linear.vertices(shape, expression)[:, index]
    )
    torch.testing.assert_close(
        mm.to(device).vertices(shape, expression, subset=index), linear.vertices(shape, expression)[:, index]
    )


def test_network_buffers_evaluate_the_same_model(mm):
    buffers = FaceModelBuffers(mm)
    shape = torch.randn(2, 80, 1)
    assert torch.equal(buffers.linear.vertices(shape), mm.linear.vertices(shape))
    assert buffers.linear.exp_basis is None
    assert "linear_shape_basis" not in buffers.state_dict()


def test_bad_coefficients_are_named(mm):
    with pytest.raises(ValueError, match=r"shape coefficients must have shape \(80,\)"):
        mm.vertices(torch.zeros(2, 79))
    with pytest.raises(ValueError, match="expression coefficients"):
        mm.vertices(torch.zeros(2, 80), torch.zeros(2, 63))
    with pytest.raises(ValueError, match="no expression basis"):
        LinearFaceModel(mm.linear.mean, mm.linear.shape_basis).vertices(torch.zeros(80), torch.zeros(1, 64))
