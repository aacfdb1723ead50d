"""DRN-D-38 image feature extractor, laid out as the authors' ``RGBNet``.

Dilated Residual Network, variant D with 38 layers (Yu et al., CVPR 2017), without the classifier
and without pretrained weights. Its nine DRN stages are grouped into ``block0`` .. ``block6``
exactly as DFNRMVS' ``RGBNet`` does, so the state-dict keys (``block0.0.0.weight``, ...) match the
authors' checkpoint under ``regressor.rgb_net.*`` and ``opt_layer.rgb_net.*``.
"""

import math
from typing import NamedTuple

import torch
from torch import nn

from .blocks import BasicBlock

# DRN-D-38 (drn_d_38 in the DRN reference code): channels and depth of stages layer0..layer8;
# layer0 is one 7x7 convolution, layers 1, 2, 7, 8 are plain convolutions, 3-6 residual blocks.
DRN_D38_CHANNELS = (16, 16, 32, 64, 128, 256, 512, 512, 512)
DRN_D38_DEPTHS = (1, 1, 1, 3, 4, 6, 3, 1, 1)


class DRNFeatures(NamedTuple):
    """The seven feature maps of ``RGBNet``, coarsest first (the authors' order).

    Shapes for a (B, 3, 256, 256) input; each side is ceil(input side / stride) in general.
    """

    stride64: torch.Tensor  # block6: (B, 512, 4, 4)
    stride32: torch.Tensor  # block5: (B, 512, 8, 8)
    stride16: torch.Tensor  # block4: (B, 256, 16, 16)
    stride8: torch.Tensor  # block3: (B, 128, 32, 32)
    stride4: torch.Tensor  # block2: (B, 64, 64, 64)
    stride2: torch.Tensor  # block1: (B, 32, 128, 128)
    stride1: torch.Tensor  # block0: (B, 16, 256, 256)


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, kernel_size=kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]


def _conv_stage(in_ch: int, out_ch: int, n_convs: int, stride: int) -> nn.Sequential:
    """DRN-D plain stage: ``n_convs`` 3x3 conv-BN-ReLU triples, the first one strided."""
    modules: list[nn.Module] = []
    for i in range(n_convs):
        modules += _conv_bn_relu(in_ch if i == 0 else out_ch, out_ch, 3, stride if i == 0 else 1)
    return nn.Sequential(*modules)


def _residual_stage(in_ch: int, out_ch: int, n_blocks: int, stride: int) -> nn.Sequential:
    """DRN residual stage: ``n_blocks`` BasicBlocks, the first strided with a 1x1 projection skip."""
    projection = nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_ch),
    )
    blocks = [BasicBlock(in_ch, out_ch, stride, projection)]
    blocks += [BasicBlock(out_ch, out_ch) for _ in range(n_blocks - 1)]
    return nn.Sequential(*blocks)


class RGBNet(nn.Module):
    """DRN-D-38 backbone returning its seven intermediate feature maps.

    Input: images (B, 3, H, W), ImageNet-normalised. Output: ``DRNFeatures`` (coarsest first).
    ``block0`` = stem 7x7 conv + layer1 (stride 1), ``block1`` .. ``block5`` = layer2 .. layer6
    (stride 2 each), ``block6`` = layer7 (stride 2) + layer8.
    """

    def __init__(self) -> None:
        super().__init__()
        ch, depth = DRN_D38_CHANNELS, DRN_D38_DEPTHS
        self.block0 = nn.Sequential(
            nn.Sequential(*_conv_bn_relu(3, ch[0], 7, 1)),
            _conv_stage(ch[0], ch[1], depth[1], stride=1),
        )
        self.block1 = _conv_stage(ch[1], ch[2], depth[2], stride=2)
        self.block2 = _residual_stage(ch[2], ch[3], depth[3], stride=2)
        self.block3 = _residual_stage(ch[3], ch[4], depth[4], stride=2)
        self.block4 = _residual_stage(ch[4], ch[5], depth[5], stride=2)
        self.block5 = _residual_stage(ch[5], ch[6], depth[6], stride=2)
        self.block6 = nn.Sequential(
            _conv_stage(ch[6], ch[7], depth[7], stride=2),
            _conv_stage(ch[7], ch[8], depth[8], stride=1),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """DRN's initialisation: conv weights ~ N(0, 2 / (k_h * k_w * C_out)); BatchNorm at identity."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))

    def freeze_batchnorm(self) -> None:
        """Puts every BatchNorm layer in eval mode (running statistics used, not updated)."""
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()

    def forward(self, x: torch.Tensor) -> DRNFeatures:
        """x: (B, 3, H, W) -> the seven feature maps, coarsest (block6) first."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"RGBNet expects images of shape (B, 3, H, W); got {tuple(x.shape)}.")
        maps = []
        for block in (self.block0, self.block1, self.block2, self.block3, self.block4, self.block5, self.block6):
            x = block(x)
            maps.append(x)
        return DRNFeatures(*reversed(maps))
