"""Residual building blocks shared by the DRN backbone and the DFNRMVS heads.

``BasicBlock`` (BatchNorm) and ``BasicBlockGN`` (GroupNorm) are the two-convolution residual
blocks of DRN / ResNet. Attribute names (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``downsample``)
follow the authors' modules so that state-dict keys match their checkpoint.
"""

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, padding: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution without bias (the bias is folded into the following norm layer)."""
    return nn.Conv2d(
        in_planes, out_planes, kernel_size=3, stride=stride, padding=padding, bias=False, dilation=dilation
    )


class _ResidualBlock(nn.Module):
    """conv3x3 -> norm -> ReLU -> conv3x3 -> norm, plus the (optionally projected) input, then ReLU.

    Args:
        inplanes: input channels C_in.
        planes: output channels C_out.
        stride: stride of the first convolution.
        downsample: module applied to the input for the skip path (needed when the stride is not 1
            or C_in != C_out); ``None`` for the identity.
        dilation: dilations of the first and second convolution (padding equals the dilation, so
            the spatial size only changes through ``stride``).
        norm: builds the normalisation layer for a channel count.

    Input (B, C_in, H, W); output (B, C_out, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: tuple[int, int] = (1, 1),
        *,
        norm: Callable[[int], nn.Module],
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, padding=dilation[0], dilation=dilation[0])
        self.bn1 = norm(planes)
        self.conv2 = conv3x3(planes, planes, padding=dilation[1], dilation=dilation[1])
        self.bn2 = norm(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip)


class BasicBlock(_ResidualBlock):
    """Residual block with BatchNorm2d (the DRN backbone's block)."""

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: tuple[int, int] = (1, 1),
    ) -> None:
        super().__init__(inplanes, planes, stride, downsample, dilation, norm=nn.BatchNorm2d)


class BasicBlockGN(_ResidualBlock):
    """Residual block with GroupNorm of ``n_gn`` groups (the DFNRMVS heads' block)."""

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: tuple[int, int] = (1, 1),
        n_gn: int = 8,
    ) -> None:
        super().__init__(inplanes, planes, stride, downsample, dilation, norm=partial(nn.GroupNorm, n_gn))
