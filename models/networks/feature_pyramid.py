"""Feature pyramid network on top of the DRN maps (DFNRMVS' FPN / FPNBlock).

Top-down pathway: the coarsest map is projected to ``out_nch`` channels by a 1x1 convolution;
each level upsamples the previous merged map by 2 (nearest), adds a 1x1 lateral projection of the
finer backbone map, and refines the sum with a BasicBlockGN.
"""

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import BasicBlockGN


class FPNBlockOutput(NamedTuple):
    """One top-down step; both (B, out_nch, 2h, 2w)."""

    feature: torch.Tensor  # refined map, the pyramid output of this level
    merged: torch.Tensor  # upsampled previous map + lateral projection, passed to the next level


class FPNBlock(nn.Module):
    """One top-down level: nearest x2 upsampling + 1x1 lateral conv, then a BasicBlockGN."""

    def __init__(self, in_nch: int, out_nch: int, n_gn: int) -> None:
        super().__init__()
        self.lateral_conv = nn.Conv2d(in_nch, out_nch, kernel_size=1, stride=1, padding=0, bias=False)
        self.out_conv = BasicBlockGN(out_nch, out_nch, n_gn=n_gn)

    def forward(self, pre_feat: torch.Tensor, lateral_feat: torch.Tensor) -> FPNBlockOutput:
        """pre_feat (B, out_nch, h, w), lateral_feat (B, in_nch, 2h, 2w)."""
        merged = F.interpolate(pre_feat, scale_factor=2, mode="nearest") + self.lateral_conv(lateral_feat)
        return FPNBlockOutput(self.out_conv(merged), merged)


class FPN(nn.Module):
    """Feature pyramid over backbone maps given coarsest first.

    Args:
        in_nchs: channels of the backbone maps used, coarsest first; DFNRMVS uses
            (512, 512, 256, 128, 64, 32), i.e. ``RGBNet`` maps 4x4 .. 128x128 of a 256 image.
        out_nch: channels of every pyramid level.
        n_gn: GroupNorm groups in the refinement blocks.

    Forward: ``rgb_feats`` sequence of at least len(in_nchs) maps (B, in_nchs[i], h0 * 2**i, w0 * 2**i)
    (extra finer maps are ignored) -> tuple of len(in_nchs) - 1 maps (B, out_nch, h0 * 2**i, w0 * 2**i),
    i = 1 .. len(in_nchs) - 1 (for DFNRMVS: 8x8, 16x16, 32x32, 64x64, 128x128).
    """

    def __init__(self, in_nchs: Sequence[int] = (128, 64, 32, 16), out_nch: int = 64, n_gn: int = 8) -> None:
        super().__init__()
        self.in_nchs = tuple(in_nchs)
        self.coarsest_conv = nn.Conv2d(in_nchs[0], out_nch, kernel_size=1, stride=1, padding=0, bias=False)
        blocks = [FPNBlock(in_nch, out_nch, n_gn) for in_nch in in_nchs[1:]]
        for i, block in enumerate(blocks):
            self.add_module(f"layer{i}", block)  # the authors' checkpoint names
        self.blocks = tuple(blocks)  # the same modules in order (a plain tuple: not registered twice)

    @property
    def n_layers(self) -> int:
        return len(self.in_nchs) - 1

    def forward(self, rgb_feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        if len(rgb_feats) < len(self.in_nchs):
            raise ValueError(f"FPN needs {len(self.in_nchs)} feature maps (coarsest first); got {len(rgb_feats)}.")
        merged = self.coarsest_conv(rgb_feats[0])
        outputs = []
        for block, rgb_feat in zip(self.blocks, rgb_feats[1:], strict=False):
            feature, merged = block(merged, rgb_feat)
            outputs.append(feature)
        return tuple(outputs)
