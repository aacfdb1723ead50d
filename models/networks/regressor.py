"""Multi-view regression of initial 3DMM coefficients and per-view poses (DFNRMVS' RegressionNet).

A DRN-D-38 backbone encodes every view; an identity branch works on the view-averaged 8x8
feature map and predicts one set of shape coefficients per sample; a per-view branch sees each
view's 8x8 map concatenated with the identity features and predicts expression and pose.
"""

from typing import NamedTuple

import torch
from torch import nn

from .blocks import BasicBlockGN
from .drn import DRNFeatures, RGBNet

# Shape coefficients kept by the regressor: the original zeroes entries 80.. of its 199-dim
# output (DFNRMVS cuts the BFM shape basis to 80 components).
N_ACTIVE_SHAPE_COEFFS = 80
# The branches work on the backbone's stride-32 map: 512 channels, 8x8 for 256x256 images.
BACKBONE_CHANNELS = 512
BRANCH_CHANNELS = 256
FEATURE_SIDE = 8
HIDDEN_FC = 256
# GroupNorm groups of the branch blocks (original: 16).
BRANCH_GROUPS = 16


class RegressionOutput(NamedTuple):
    """Outputs of ``RegressionNet.forward`` for N samples of V views."""

    shape_coeffs: torch.Tensor  # (N, n_shape_para, 1) normalised shape coefficients, [:, 80:] = 0
    exp_coeffs: torch.Tensor  # (N, V, n_exp_para, 1) normalised expression coefficients
    pose: torch.Tensor  # (N, V, 6): pitch, yaw, roll [rad], s_norm, tx_norm, ty_norm
    features: DRNFeatures  # backbone maps of all N * V images, each (N * V, C, h, w)


def _gn_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """One BasicBlockGN with a 1x1 conv + GroupNorm projection skip, wrapped as the original's."""
    skip = nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=1, padding=0, bias=False),
        nn.GroupNorm(BRANCH_GROUPS, out_ch),
    )
    return nn.Sequential(BasicBlockGN(in_ch, out_ch, downsample=skip, n_gn=BRANCH_GROUPS))


def _hidden_fc() -> list[nn.Module]:
    """Flattened 256x8x8 branch features -> 256 (Linear without bias, ReLU, Dropout 0.5)."""
    return [
        nn.Linear(BRANCH_CHANNELS * FEATURE_SIDE * FEATURE_SIDE, HIDDEN_FC, bias=False),
        nn.ReLU(inplace=True),
        nn.Dropout(p=0.5),
    ]


class RegressionNet(nn.Module):
    """Regresses shared shape coefficients and per-view expression / pose from V views.

    Args:
        n_shape_para: size of the shape head (the released checkpoint: 199).
        n_exp_para: size of the expression head (the released checkpoint: 29).

    The output heads start at zero as in the original. Its BatchNorm layers (in ``rgb_net``) stay
    in eval mode even under ``train()``.
    """

    def __init__(self, n_shape_para: int = 199, n_exp_para: int = 29) -> None:
        super().__init__()
        self.n_shape_para = n_shape_para
        self.n_exp_para = n_exp_para
        self.rgb_net = RGBNet()
        self.shared_branch = _gn_block(BACKBONE_CHANNELS, BRANCH_CHANNELS)
        self.iden_fc = nn.Sequential(*_hidden_fc(), nn.Linear(HIDDEN_FC, n_shape_para))
        self.per_view_branch = _gn_block(BACKBONE_CHANNELS + BRANCH_CHANNELS, BRANCH_CHANNELS)
        self.exp_pose_fc = nn.Sequential(*_hidden_fc())
        self.exp_fc = nn.Linear(HIDDEN_FC, n_exp_para)
        self.angles_fc = nn.Linear(HIDDEN_FC, 3)
        self.t_fc = nn.Linear(HIDDEN_FC, 2)
        self.s_fc = nn.Linear(HIDDEN_FC, 1)
        for head in (self.iden_fc[3], self.exp_fc, self.angles_fc, self.t_fc, self.s_fc):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def train(self, mode: bool = True) -> "RegressionNet":
        """Sets the training mode but keeps the backbone's BatchNorm layers in eval mode."""
        super().train(mode)
        self.rgb_net.freeze_batchnorm()
        return self

    def forward(self, images: torch.Tensor) -> RegressionOutput:
        """images: (N, V, 3, H, W) ImageNet-normalised, H and W such that the stride-32 map is 8x8
        (256x256 in DFNRMVS)."""
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"RegressionNet expects images of shape (N, V, 3, H, W); got {tuple(images.shape)}.")
        n, v, c, h, w = images.shape
        feats = self.rgb_net(images.reshape(n * v, c, h, w))
        feat8 = feats.stride32
        if feat8.shape[-2:] != (FEATURE_SIDE, FEATURE_SIDE):
            raise ValueError(
                f"RegressionNet needs an {FEATURE_SIDE}x{FEATURE_SIDE} stride-32 feature map (256x256 images); "
                f"got {tuple(feat8.shape[-2:])} from {h}x{w} images."
            )

        # Identity branch on the view average.
        avg_feat = feat8.view(n, v, *feat8.shape[1:]).mean(dim=1)  # (N, 512, 8, 8)
        shape_feat = self.shared_branch(avg_feat)  # (N, 256, 8, 8)
        shape_coeffs = self.iden_fc(shape_feat.flatten(1))  # (N, n_shape_para)
        # Quirk of the original (kept for equivalence): coefficients beyond the 80 the
        # morphable model uses are zeroed in place, so they neither output nor get gradients.
        shape_coeffs[:, N_ACTIVE_SHAPE_COEFFS:] = 0.0

        # Per-view branch: each view's features next to the shared identity features.
        shape_feat_per_view = shape_feat.unsqueeze(1).expand(n, v, *shape_feat.shape[1:])
        cat_feat = torch.cat([feat8, shape_feat_per_view.reshape(n * v, *shape_feat.shape[1:])], dim=1)
        hidden = self.exp_pose_fc(self.per_view_branch(cat_feat).flatten(1))  # (N * V, 256)
        exp_coeffs = self.exp_fc(hidden)
        pose = torch.cat([self.angles_fc(hidden), self.s_fc(hidden), self.t_fc(hidden)], dim=1)

        return RegressionOutput(
            shape_coeffs=shape_coeffs.view(n, self.n_shape_para, 1),
            exp_coeffs=exp_coeffs.view(n, v, self.n_exp_para, 1),
            pose=pose.view(n, v, 6),
            features=feats,
        )
