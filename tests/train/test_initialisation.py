"""Tests of train/initialisation.py: the start-up values, and that loaded weights are never touched."""

import math

import pytest
import torch

from models.face_model.procedural import synthetic_morphable_model
from models.networks.checkpoint import save_state_dict
from models.networks.fnrmvs_net import FNRMVSNet
from train.config import TrainConfig
from train.initialisation import FEATURE_SCALE, INITIAL_STEP_TANH, initialise_for_training, is_untrained
from train.train import build_model

from .tiny_training import compact

GRID_SIDE = 12


@pytest.fixture(scope="module")
def mm():
    return synthetic_morphable_model(GRID_SIDE, GRID_SIDE)


@pytest.fixture(scope="module")
def models(mm):
    """A fresh network and a copy given the start-up values."""
    torch.manual_seed(0)
    fresh = FNRMVSNet(mm)
    initialised = FNRMVSNet(mm)
    initialised.load_state_dict(fresh.state_dict())
    initialise_for_training(initialised)
    return fresh, initialised


def _pyramid_inputs() -> list[torch.Tensor]:
    """Random post-ReLU backbone maps of unit scale (as the DRN's), coarsest first, at small sizes (2 .. 64)."""
    generator = torch.Generator().manual_seed(1)
    channels = (512, 512, 256, 128, 64, 32)
    return [torch.randn(1, c, 2 ** (i + 1), 2 ** (i + 1), generator=generator).relu() for i, c in enumerate(channels)]


def test_energy_features_start_scaled_and_the_basis_features_do_not(models) -> None:
    fresh, initialised = models
    inputs = _pyramid_inputs()
    with torch.no_grad():
        for before, after in zip(fresh.opt_layer.fpn(inputs), initialised.opt_layer.fpn(inputs), strict=True):
            assert before.abs().max() > 0.1
            # exact but for GroupNorm's epsilon (1e-5 against variances of ~1e-2 after scaling): 1% of the range
            torch.testing.assert_close(after, FEATURE_SCALE * before, rtol=1e-2, atol=1e-2 * after.abs().max().item())
        for before, after in zip(
            fresh.opt_layer.basis_fpn(inputs), initialised.opt_layer.basis_fpn(inputs), strict=True
        ):
            assert torch.equal(before, after)


def test_step_sizes_start_below_their_untrained_values(models) -> None:
    fresh, initialised = models
    residuals = (torch.rand(3, 128), torch.rand(3, 2))
    for level in initialised.opt_layer.config.levels:
        untrained = getattr(fresh.opt_layer, f"step_net{level.level}")(residuals, level.step_scales, level.step_biases)
        started = getattr(initialised.opt_layer, f"step_net{level.level}")(
            residuals, level.step_scales, level.step_biases
        )
        for scale, bias, before, after in zip(
            level.step_scales, level.step_biases, untrained.steps, started.steps, strict=True
        ):
            torch.testing.assert_close(before, torch.full_like(before, 10.0**bias))
            torch.testing.assert_close(after, torch.full_like(after, 10.0 ** (scale * INITIAL_STEP_TANH + bias)))
            assert (after < before).all()


def test_only_the_pyramid_and_step_outputs_change(models) -> None:
    fresh, initialised = models
    before = fresh.state_dict()
    changed = {k for k, v in initialised.state_dict().items() if not torch.equal(v, before[k])}
    pyramid = {k for k in changed if k.startswith("opt_layer.fpn.")}
    # coarsest conv; lateral conv and last GroupNorm weight of 5 levels (the GroupNorm biases start at zero)
    assert len(pyramid) == 1 + 2 * 5
    assert all(k.startswith(("opt_layer.fpn.", "opt_layer.step_net")) for k in changed)
    assert {k for k in changed if "step_net" in k} == {f"opt_layer.step_net{i}.net.8.bias" for i in (2, 3, 4)}
    assert is_untrained(fresh) and not is_untrained(initialised)
    bias = initialised.state_dict()["opt_layer.step_net2.net.8.bias"]
    assert torch.allclose(bias, torch.full_like(bias, math.atanh(INITIAL_STEP_TANH)))


def test_build_model_leaves_trained_weights_exactly_as_loaded(mm, tmp_path) -> None:
    """An --init checkpoint with trained step-size nets (here every weight moved off its initial value, as
    training does) loads unchanged; a never-trained one (a fresh state dict) gets the start-up values.
    On the compact network (train/compact_network.py: the same optimisation layer, cheaper backbones)."""
    torch.manual_seed(0)
    trained = compact(mm, TrainConfig())
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    save_state_dict(trained, tmp_path / "trained.pth")
    config = TrainConfig(
        stage="optimizer", data="d", mm="m", out=str(tmp_path / "out"), init=str(tmp_path / "trained.pth")
    )
    model, initialised = build_model(config, mm, compact)
    assert not initialised
    expected = trained.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())

    save_state_dict(compact(mm, TrainConfig()), tmp_path / "untrained.pth")
    config.init = str(tmp_path / "untrained.pth")
    model, initialised = build_model(config, mm, compact)
    assert initialised and not is_untrained(model)
    config.initialise = False
    model, initialised = build_model(config, mm, compact)
    assert not initialised and is_untrained(model)
