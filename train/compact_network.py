"""A compact FNRMVSNet for the tests and CPU demonstrations of training (not for reconstruction).

The authors' network spends most of a CPU training step in its two DRN-D-38 backbones (about 5 GFLOP per
256x256 view each way) and in the 128x128 and 64x64 levels of its feature pyramids and adaptive bases. The
compact network keeps everything that training from scratch exercises: the regressor's branches and heads,
the step-size and adaptive-basis nets, the unrolled optimisation, the energy and the losses, the
feature-pyramid modules (``FPN``, under the same state-dict names, so train/initialisation.py applies as
it does to the full network), and replaces

* each DRN-D-38 backbone by :class:`CompactBackbone` (six strided 3x3 convolutions and 1x1 projections to
  the DRN's channels, about 0.1 GFLOP per view);
* each pyramid by an ``FPN`` over the four coarsest backbone maps only (its maps 8x8, 16x16 and 32x32);
* the three optimisation levels by the first one (pyramid level 2, 32x32 adaptive-basis UV map).

Its state dict is not the authors' (the backbones differ): it trains and is validated like theirs, and
its model files load into it (``compact_network(mm)``), not into the demo's FNRMVSNet.
"""

import torch
import torch.nn.functional as F
from torch import nn

from models.face_model.morphable_model import MorphableModel
from models.networks.drn import DRNFeatures
from models.networks.feature_pyramid import FPN
from models.networks.fnrmvs_net import FPN_GROUPS, FPN_OUT_CHANNELS, FNRMVSNet
from models.nrmvs.config import RELEASED_LEVELS, NRMVSConfig

# Channels of the seven DRNFeatures maps, coarsest (stride 64) first: DRN-D-38's, which the regressor's
# branches (512 at stride 32) and the pyramids' lateral convolutions expect.
DRN_MAP_CHANNELS = (512, 512, 256, 128, 64, 32, 16)
# Channels of the compact backbone's strided convolutions, stride 2 .. 64.
TRUNK_CHANNELS = (16, 32, 48, 64, 96, 128)
# The compact pyramids use this many of the coarsest backbone maps (outputs 8x8, 16x16, 32x32).
PYRAMID_MAPS = 4
# The compact optimisation: the released model's first level only (32x32 features and UV map).
COMPACT_NRMVS = NRMVSConfig(levels=RELEASED_LEVELS[:1])


class CompactBackbone(nn.Module):
    """Strided 3x3 conv + ReLU stages (stride 2 .. 64) with 1x1 projections to the DRN's channels.

    Input (B, 3, H, W) ImageNet-normalised; output :class:`DRNFeatures` with DRN-D-38's shapes (stride 1
    map: a 1x1 projection of the input).
    """

    def __init__(self) -> None:
        super().__init__()
        widths = (3, *TRUNK_CHANNELS)
        self.trunk = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i + 1], kernel_size=3, stride=2, padding=1) for i in range(len(TRUNK_CHANNELS))
        )
        # projections for strides 1, 2, ..., 64 (input, then each trunk stage)
        pairs = zip(widths, DRN_MAP_CHANNELS[::-1], strict=True)
        self.projections = nn.ModuleList(nn.Conv2d(width, channels, kernel_size=1) for width, channels in pairs)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # He initialisation: activations keep their scale, as DRN's do
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def freeze_batchnorm(self) -> None:
        """No BatchNorm here (the interface of models.networks.drn.RGBNet)."""

    def forward(self, x: torch.Tensor) -> DRNFeatures:
        maps = [F.relu(self.projections[0](x))]
        for stage, projection in zip(self.trunk, self.projections[1:], strict=True):
            x = F.relu(stage(x))
            maps.append(F.relu(projection(x)))
        return DRNFeatures(*reversed(maps))


def compact_pyramid() -> FPN:
    """An ``FPN`` over the :data:`PYRAMID_MAPS` coarsest backbone maps (later maps are ignored)."""
    return FPN(DRN_MAP_CHANNELS[:PYRAMID_MAPS], FPN_OUT_CHANNELS, FPN_GROUPS)


def compact_network(morphable_model: MorphableModel, n_shape_para: int = 199, n_exp_para: int = 29) -> FNRMVSNet:
    """The compact network of the module docstring, with fresh weights."""
    model = FNRMVSNet(morphable_model, n_shape_para=n_shape_para, n_exp_para=n_exp_para, config=COMPACT_NRMVS)
    model.regressor.rgb_net = CompactBackbone()
    model.opt_layer.rgb_net = CompactBackbone()
    model.opt_layer.fpn = compact_pyramid()
    model.opt_layer.basis_fpn = compact_pyramid()
    return model
