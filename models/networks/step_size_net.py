"""Step-size prediction for the unrolled gradient descent (DFNRMVS' StepSizeNet).

An MLP maps the absolute residuals of a step to one log-step per parameter group; the step of
group g is ``10 ** (scales[g] * tanh(raw_g) + biases[g])``.
"""

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn


class StepSizes(NamedTuple):
    """Outputs of ``StepSizeNet.forward`` for a batch of N."""

    steps: tuple[torch.Tensor, ...]  # per group g: (N, out_nchs[g]), 10 ** (scales[g] * raw_g + biases[g])
    raw: torch.Tensor  # (N, sum(out_nchs)) the MLP's tanh output, in (-1, 1)


class StepSizeNet(nn.Module):
    """MLP (Linear + SELU) x 4, Linear, Tanh, as ``net`` with the original's Sequential indices.

    Args:
        in_nchs: widths of the inputs, concatenated along dim 1 (DFNRMVS: feature residual 128,
            landmark residual 2).
        nch: hidden width.
        out_nchs: outputs per parameter group (DFNRMVS: (1, 1, 1, 1) for sp, ep, pose, ap).

    The last Linear starts at zero as in the original (all steps 10 ** biases).
    """

    def __init__(
        self, in_nchs: Sequence[int] = (128, 2), nch: int = 128, out_nchs: Sequence[int] = (199, 29, 6)
    ) -> None:
        super().__init__()
        self.in_nchs = tuple(in_nchs)
        self.out_nchs = tuple(out_nchs)
        layers: list[nn.Module] = []
        width = sum(self.in_nchs)
        for _ in range(4):
            layers += [nn.Linear(width, nch), nn.SELU(inplace=True)]
            width = nch
        layers += [nn.Linear(nch, sum(self.out_nchs)), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        nn.init.zeros_(self.net[-2].weight)
        nn.init.zeros_(self.net[-2].bias)

    def forward(self, inputs: Sequence[torch.Tensor], scales: Sequence[float], biases: Sequence[float]) -> StepSizes:
        """inputs: tensors (N, in_nchs[i]); scales, biases: one number per group of ``out_nchs``."""
        if len(scales) != len(self.out_nchs) or len(biases) != len(self.out_nchs):
            raise ValueError(
                f"StepSizeNet needs one scale and one bias per group ({len(self.out_nchs)}); "
                f"got {len(scales)} scales and {len(biases)} biases."
            )
        raw = self.net(torch.cat(tuple(inputs), dim=1))
        groups = torch.split(raw, self.out_nchs, dim=1)
        steps = tuple(torch.pow(10.0, s * g + b) for g, s, b in zip(groups, scales, biases, strict=True))
        return StepSizes(steps, raw)
