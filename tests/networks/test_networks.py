"""Network modules of FNRMVSNet: checkpoint layout, weight rule, and numerical equivalence with the
authors' code on the reference case (../shared/reference)."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.face_model.morphable_model import MorphableModel
from models.networks.adaptive_basis import AdaptiveBasisNet
from models.networks.drn import RGBNet
from models.networks.feature_pyramid import FPN
from models.networks.fnrmvs_net import FNRMVSNet
from models.networks.step_size_net import StepSizeNet
from tools.face3d_writer import make_tiny_model, write_face3d_dir
from tools.reference_weights import fill_with_reference_rule, key_seed, rule_kind, rule_tensor

N_VERTICES = 3600  # the synthetic morphable model of ../shared/reference
UV_SIZES = (32, 64, 128)
N_EXP = 64  # expression components DFNRMVS keeps


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> MorphableModel:
    """A few-hundred-vertex morphable model written by the tests in the original file layout."""
    return MorphableModel.load(write_face3d_dir(tmp_path_factory.mktemp("tiny"), make_tiny_model()))


def _read_expression_basis(reference_dir: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Out/Exp_Pca.bin and Out/std_exp.txt as WEIGHTS_RULE.md describes: (3n, 64) basis, (64,) std."""
    with open(reference_dir / "Out" / "Exp_Pca.bin", "rb") as f:
        exp_dim = int(np.fromfile(f, dtype="<i4", count=1)[0])
        np.fromfile(f, dtype="<f4", count=3 * n)  # mean expression, unused
        components = np.fromfile(f, dtype="<f4", count=exp_dim * 3 * n).reshape(exp_dim, 3 * n)
    std = np.loadtxt(reference_dir / "Out" / "std_exp.txt").reshape(exp_dim, -1)[:N_EXP].astype(np.float32)
    basis = np.ascontiguousarray(components.T[:, :N_EXP]).astype(np.float32)
    return torch.from_numpy(basis), torch.from_numpy(std.reshape(N_EXP))


@pytest.fixture(scope="module")
def key_contract(reference_dir: Path) -> list[dict]:
    return json.loads((reference_dir / "state_dict_keys.json").read_text())["keys"]


@pytest.fixture(scope="module")
def reference_model(reference_dir: Path) -> FNRMVSNet:
    """FNRMVSNet on the synthetic morphable model with the rule-built weights, in eval mode."""
    torch.manual_seed(0)
    model = FNRMVSNet(MorphableModel.from_face3d_dir(reference_dir))
    fill_with_reference_rule(model)
    return model.eval()


@pytest.fixture(scope="module")
def reference_case(reference_dir: Path) -> tuple[dict, dict]:
    inputs = np.load(reference_dir / "case_v2" / "inputs.npz")
    outputs = np.load(reference_dir / "case_v2" / "outputs.npz")
    return dict(inputs), dict(outputs)


# --- checkpoint layout and weight rule -------------------------------------------------------------


def test_state_dict_matches_checkpoint_contract(key_contract: list[dict], reference_dir: Path) -> None:
    model = FNRMVSNet(MorphableModel.from_face3d_dir(reference_dir))
    state = model.state_dict()
    got = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()]
    want = [(e["key"], e["shape"], e["dtype"]) for e in key_contract]
    assert got == want

    dtypes = {"float32": torch.float32, "int64": torch.int64}
    checkpoint = {e["key"]: torch.full(e["shape"], 3, dtype=dtypes[e["dtype"]]) for e in key_contract}
    model.load_state_dict(checkpoint, strict=True)
    assert torch.all(model.opt_layer.adap_B_net3.apEV == 3)
    assert torch.all(model.regressor.rgb_net.block6[1][0].weight == 3)


def test_constructor_values_of_kept_entries(tiny_model: MorphableModel) -> None:
    mm = tiny_model
    model = FNRMVSNet(mm)
    level2 = model.opt_layer.adap_B_net2
    assert torch.equal(level2.adapBias, mm.exp_basis.view(1, 3 * mm.num_vertices, N_EXP))
    assert torch.equal(level2.apEV, mm.exp_std.view(1, N_EXP, 1))
    for level in (3, 4):
        net = getattr(model.opt_layer, f"adap_B_net{level}")
        assert net.adapBias is None
        assert torch.all(net.apEV == 1000.0)
    # zero-initialised heads of the original
    assert torch.count_nonzero(model.regressor.angles_fc.weight) == 0
    assert torch.count_nonzero(model.opt_layer.step_net4.net[8].bias) == 0
    assert torch.count_nonzero(level2.net[6].weight) == 0
    assert torch.count_nonzero(model.opt_layer.adap_B_net3.net[6].weight) > 0


def test_rule_kinds_and_seeds_match_contract(key_contract: list[dict]) -> None:
    shapes = {e["key"]: e["shape"] for e in key_contract}
    for entry in key_contract:
        key = entry["key"]
        sibling = shapes.get(key.removesuffix(".bias") + ".weight") if key.endswith(".bias") else None
        assert rule_kind(key, entry["shape"], sibling) == entry["kind"], key
        if "seed" in entry:
            assert key_seed(key) == entry["seed"], key
    with pytest.raises(ValueError, match="constructor"):
        rule_tensor("opt_layer.adap_B_net3.apEV", (1, 64, 1), torch.float32)


def test_rule_bias_offset_and_gain() -> None:
    key = "regressor.angles_fc.bias"
    bias = rule_tensor(key, (3,), torch.float32, sibling_weight_shape=(3, 256))
    randn = np.random.default_rng(key_seed(key)).standard_normal(3)
    np.testing.assert_array_equal(bias.numpy(), (randn * 0.01 + np.array([0.0, 0.5, 0.0])).astype(np.float32))
    key = "opt_layer.adap_B_net3.net.6.weight"
    weight = rule_tensor(key, (192, 128, 1, 1), torch.float32)
    randn = np.random.default_rng(key_seed(key)).standard_normal((192, 128, 1, 1))
    np.testing.assert_array_equal(weight.numpy(), (randn * (5.0 / np.sqrt(128))).astype(np.float32))


def test_rule_reproduces_checksums(reference_model: FNRMVSNet, reference_dir: Path) -> None:
    checksums = json.loads((reference_dir / "state_dict_checksums.json").read_text())
    state = reference_model.state_dict()
    assert list(state) == list(checksums)
    for key, tensor in state.items():
        values = tensor.double()
        got = [values.sum().item(), values.abs().sum().item()]
        np.testing.assert_allclose(got, checksums[key], rtol=1e-12, atol=1e-9, err_msg=key)


# --- equivalence with the original on case_v2 -------------------------------------------------------


def test_regressor_reproduces_reference(reference_model: FNRMVSNet, reference_case: tuple[dict, dict]) -> None:
    inputs, outputs = reference_case
    with torch.no_grad():
        out = reference_model.regressor(torch.from_numpy(inputs["img"]))
    np.testing.assert_allclose(out.pose.numpy(), outputs["regressor_pose"], rtol=0, atol=5e-6)
    np.testing.assert_allclose(out.shape_coeffs.numpy(), outputs["regressor_sp_norm"], rtol=0, atol=5e-6)
    np.testing.assert_allclose(out.exp_coeffs.numpy(), outputs["regressor_ep_norm"], rtol=0, atol=5e-6)
    assert torch.count_nonzero(out.shape_coeffs[:, 80:]) == 0
    assert out.features.stride32.shape == (2, 512, 8, 8)


def test_adaptive_bases_reproduce_reference(reference_model: FNRMVSNet, reference_case: tuple[dict, dict]) -> None:
    """Levels 2-4 fed with the reference's meshes and visibility at the start of each level."""
    inputs, outputs = reference_case
    opt = reference_model.opt_layer
    images = torch.from_numpy(inputs["img"])
    n, v = images.shape[:2]
    start_of_level = {2: "0", 3: "l2_it3", 4: "l3_it3"}
    rows = torch.from_numpy(outputs["adap_B_row_index"])
    with torch.no_grad():
        pyramid = opt.basis_fpn(opt.rgb_net(images.flatten(0, 1)))
        for level, stage in start_of_level.items():
            feat = pyramid[level]
            result = getattr(opt, f"adap_B_net{level}")(
                feat.view(n, v, *feat.shape[1:]),
                torch.from_numpy(outputs[f"opt_verts_{stage}"]),
                torch.from_numpy(outputs[f"vis_mask_{stage}"]),
                256,
                256,
            )
            np.testing.assert_allclose(
                result.basis[:, rows].numpy(), outputs[f"adap_B_l{level}_rows"], rtol=0, atol=5e-4, err_msg=str(level)
            )


# --- small modules on random data ------------------------------------------------------------------


def test_drn_feature_shapes() -> None:
    with torch.no_grad():
        feats = RGBNet().eval()(torch.randn(2, 3, 64, 64))
    channels = (512, 512, 256, 128, 64, 32, 16)
    sides = (1, 2, 4, 8, 16, 32, 64)
    assert [tuple(f.shape) for f in feats] == [(2, c, s, s) for c, s in zip(channels, sides, strict=True)]


def test_train_mode_overrides(tiny_model: MorphableModel) -> None:
    model = FNRMVSNet(tiny_model).train()
    assert model.training and model.opt_layer.training and model.opt_layer.fpn.training
    assert not any(m.training for m in model.regressor.modules())
    batchnorms = [m for m in model.opt_layer.rgb_net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batchnorms and not any(m.training for m in batchnorms)
    assert model.opt_layer.rgb_net.block2[0].conv1.training


def test_fpn_top_down_merge() -> None:
    torch.manual_seed(0)
    fpn = FPN(in_nchs=(16, 8, 4), out_nch=6, n_gn=2)
    feats = [torch.randn(2, 16, 3, 3), torch.randn(2, 8, 6, 6), torch.randn(2, 4, 12, 12), torch.randn(2, 2, 24, 24)]
    out = fpn(feats)
    assert [tuple(f.shape) for f in out] == [(2, 6, 6, 6), (2, 6, 12, 12)]
    merged0 = F.interpolate(fpn.coarsest_conv(feats[0]), scale_factor=2) + fpn.layer0.lateral_conv(feats[1])
    torch.testing.assert_close(out[0], fpn.layer0.out_conv(merged0))
    merged1 = F.interpolate(merged0, scale_factor=2) + fpn.layer1.lateral_conv(feats[2])
    torch.testing.assert_close(out[1], fpn.layer1.out_conv(merged1))
    with pytest.raises(ValueError, match="3 feature maps"):
        fpn(feats[:2])


def test_step_sizes() -> None:
    torch.manual_seed(0)
    net = StepSizeNet(in_nchs=(5, 2), nch=8, out_nchs=(1, 2, 1))
    inputs = (torch.randn(3, 5), torch.randn(3, 2))
    scales, biases = (2.0, 4.0, 2.0), (0.0, -1.0, -2.5)
    zero = net(inputs, scales, biases)
    assert torch.count_nonzero(zero.raw) == 0
    torch.testing.assert_close(zero.steps[2], torch.full((3, 1), 10.0**-2.5))

    nn.init.normal_(net.net[8].weight)
    out = net(inputs, scales, biases)
    raw = torch.tanh(net.net[:9](torch.cat(inputs, dim=1)))
    torch.testing.assert_close(out.raw, raw)
    expected = (10.0 ** (2.0 * raw[:, :1]), 10.0 ** (4.0 * raw[:, 1:3] - 1.0), 10.0 ** (2.0 * raw[:, 3:] - 2.5))
    for got, want in zip(out.steps, expected, strict=True):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="one scale and one bias"):
        net(inputs, scales[:2], biases)


def _random_uv_table(size: int, n: int, gen: torch.Generator) -> SimpleNamespace:
    return SimpleNamespace(
        vertex_uv=torch.rand(n, 3, generator=gen) * (size - 1),
        pixel_vert_idx=torch.randint(0, n, (size, size, 3), generator=gen),
        pixel_vert_weights=torch.rand(size, size, 3, generator=gen),
    )


def _small_basis_net(n: int, size: int, exp_init: bool, face_region: torch.Tensor | None = None) -> AdaptiveBasisNet:
    gen = torch.Generator().manual_seed(1)
    table = _random_uv_table(size, n, gen)
    return AdaptiveBasisNet(
        size,
        table.vertex_uv,
        table.pixel_vert_idx,
        table.pixel_vert_weights,
        face_region if face_region is not None else torch.rand(n, generator=gen) > 0.5,
        exp_basis=torch.randn(3 * n, 4, generator=gen) if exp_init else None,
        exp_std=torch.rand(4, generator=gen) if exp_init else None,
        n_adap_para=4,
        feat_channels=8,
        n_planes=8,
        n_gn=2,
    )


def test_uv_splat_of_constant_feature_is_weight_sum() -> None:
    net = _small_basis_net(n=40, size=16, exp_init=False)
    uv = net.splat_to_uv(torch.full((2, 3, 40), 2.5))
    weight_sum = net.pixel_vert_weights.sum(dim=-1).view(1, 1, 16, 16)
    torch.testing.assert_close(uv, (2.5 * weight_sum).expand(2, 3, 16, 16))
    # a one-hot vertex feature lands with that vertex's barycentric weight
    one_hot = torch.zeros(1, 1, 40)
    one_hot[0, 0, 7] = 1.0
    expected = (net.pixel_vert_weights[0, 0] * (net.pixel_vert_idx == 7)).sum(dim=-1)
    torch.testing.assert_close(net.splat_to_uv(one_hot)[0, 0], expected)


def test_adaptive_basis_shapes_and_initialisation() -> None:
    torch.manual_seed(0)
    n, size = 40, 16
    feat = torch.randn(2, 3, 8, 10, 10)
    vert = torch.randn(2, 3, n, 3) * 60.0
    vis = (torch.rand(2, 3, 1, n) > 0.5).to(torch.uint8)

    level2 = _small_basis_net(n, size, exp_init=True)
    out = level2(feat, vert, vis, 256, 256)
    assert out.basis.shape == (2, 3 * n, 4) and out.basis_uv.shape == (2, 12, size, size)
    # the last layer starts at zero: the basis is the expression basis
    assert torch.count_nonzero(out.basis_uv) == 0
    torch.testing.assert_close(out.basis, level2.adapBias.expand(2, 3 * n, 4), rtol=0, atol=0)
    ap_norm = torch.randn(5, 4, 1)
    torch.testing.assert_close(level2.denormalize(ap_norm), ap_norm * level2.apEV)

    level3 = _small_basis_net(n, size, exp_init=False)
    out = level3(feat, vert, vis, 256, 256)
    assert out.basis.shape == (2, 3 * n, 4) and torch.count_nonzero(out.basis) > 0
    torch.testing.assert_close(level3.denormalize(torch.ones(1, 4, 1)), torch.full((1, 4, 1), 1000.0))
    # vertex v, coordinate c, parameter k sits at UV channel c * K + k sampled at the vertex's UV position
    uv_grid = level3.uv_grid[0, 11].view(1, 1, 1, 2).expand(2, 1, 1, 2)
    sampled = F.grid_sample(out.basis_uv, uv_grid, align_corners=True).view(2, 3, 4)
    torch.testing.assert_close(out.basis[:, 33:36], sampled)

    with pytest.raises(ValueError, match="vis_mask"):
        level3(feat, vert, vis[:, :2], 256, 256)


def test_invisible_face_features_are_dropped() -> None:
    """With every vertex in the face region and none visible, only vertex positions reach the UV map."""
    torch.manual_seed(0)
    n = 40
    net = _small_basis_net(n, 16, exp_init=False, face_region=torch.ones(n, dtype=torch.bool))
    vert = torch.randn(1, 2, n, 3) * 60.0
    hidden = torch.zeros(1, 2, 1, n, dtype=torch.uint8)
    a = net(torch.randn(1, 2, 8, 12, 12), vert, hidden, 256, 256).basis
    b = net(torch.randn(1, 2, 8, 12, 12), vert, hidden, 256, 256).basis
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = net(torch.randn(1, 2, 8, 12, 12), vert, torch.ones_like(hidden), 256, 256).basis
    assert not torch.allclose(a, c)


def test_adaptive_basis_inference_path_matches_the_autograd_path() -> None:
    """Without autograd the basis comes from table gathers on channels-last tensors: the same values."""
    torch.manual_seed(0)
    n, size = 40, 16
    feat = torch.randn(2, 3, 8, 10, 10)
    vert = torch.randn(2, 3, n, 3) * 60.0
    vis = torch.rand(2, 3, 1, n) > 0.5
    for exp_init in (True, False):
        net = _small_basis_net(n, size, exp_init=exp_init)
        torch.nn.init.normal_(net.net[-1].weight)  # a basis beyond the expression initialisation
        reference = net(feat, vert, vis, 256, 256)
        with torch.no_grad():
            ours = net(
                feat.flatten(0, 1).contiguous(memory_format=torch.channels_last).view_as(feat), vert, vis, 256, 256
            )
        torch.testing.assert_close(ours.basis, reference.basis.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.basis_uv, reference.basis_uv.detach(), rtol=1e-5, atol=1e-5)
        assert ours.basis_uv.is_contiguous(memory_format=torch.channels_last)
