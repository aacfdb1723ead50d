"""Module tree of DFNRMVS' FNRMVSNet: the regressor plus the learned non-rigid MVS optimiser.

Attribute names and construction order reproduce the authors' state-dict layout, so their
``2views_model.pth`` loads strictly (same keys, same shapes).
"""

from dataclasses import dataclass

import torch
from torch import nn

from models.adaptive_basis import AdaptiveBasisNet
from models.drn import RGBNet
from models.face_model_buffers import FaceModelBuffers
from models.feature_pyramid import FPN
from models.mesh_geometry import correct_landmark_vertices
from models.morphable_model import MorphableModel
from models.nrmvs import NRMVSResult, run_nrmvs
from models.regressor import RegressionNet, RegressionOutput
from models.step_size_net import StepSizeNet

# Feature pyramids over RGBNet maps 4x4 .. 128x128 (of a 256 image), 128 channels, 8 GN groups.
FPN_IN_CHANNELS = (512, 512, 256, 128, 64, 32)
FPN_OUT_CHANNELS = 128
FPN_GROUPS = 8
# Step-size nets: inputs = mean feature residual (128) + mean landmark residual (2);
# one step per parameter group (shape, expression, pose, adaptive).
STEP_NET_INPUTS = (FPN_OUT_CHANNELS, 2)
STEP_NET_WIDTH = 128
STEP_NET_OUTPUTS = (1, 1, 1, 1)
# Adaptive basis: K = 64 vectors; levels 2, 3, 4 work on UV images of these sides.
N_ADAP_PARA = 64
ADAPTIVE_LEVEL_UV_SIZES = {2: 32, 3: 64, 4: 128}
# Only level 2 starts from the expression PCA (the original's exp_basis_init=True).
EXPRESSION_INIT_LEVEL = 2


class NRMVSOptimization(nn.Module):
    """Learned optimiser: feature extractor, two pyramids, step-size nets, adaptive-basis nets.

    Submodules: ``rgb_net`` (DRN-D-38), ``fpn`` (features for the feature-metric loss),
    ``basis_fpn`` (features for the adaptive bases), ``step_net2..4`` and ``adap_B_net2..4`` (one
    per optimisation level, on the 32x32, 64x64 and 128x128 pyramid maps). The backbone's
    BatchNorm layers stay in eval mode under ``train()``.
    """

    def __init__(self, morphable_model: MorphableModel) -> None:
        super().__init__()
        mm = morphable_model
        self.face = FaceModelBuffers(mm)
        self.rgb_net = RGBNet()
        self.fpn = FPN(FPN_IN_CHANNELS, FPN_OUT_CHANNELS, FPN_GROUPS)
        self.basis_fpn = FPN(FPN_IN_CHANNELS, FPN_OUT_CHANNELS, FPN_GROUPS)
        for level in ADAPTIVE_LEVEL_UV_SIZES:
            setattr(self, f"step_net{level}", StepSizeNet(STEP_NET_INPUTS, STEP_NET_WIDTH, STEP_NET_OUTPUTS))
        for level, size in ADAPTIVE_LEVEL_UV_SIZES.items():
            table = mm.uv_tables[size]
            expression = level == EXPRESSION_INIT_LEVEL
            net = AdaptiveBasisNet(
                size,
                table.vertex_uv,
                table.pixel_vert_idx,
                table.pixel_vert_weights,
                mm.face_region_mask,
                exp_basis=mm.exp_basis[:, :N_ADAP_PARA] if expression else None,
                exp_std=mm.exp_std[:N_ADAP_PARA] if expression else None,
                n_adap_para=N_ADAP_PARA,
                feat_channels=FPN_OUT_CHANNELS,
                n_planes=FPN_OUT_CHANNELS,
                n_gn=FPN_GROUPS,
            )
            setattr(self, f"adap_B_net{level}", net)

    def train(self, mode: bool = True) -> "NRMVSOptimization":
        """Sets the training mode but keeps ``rgb_net``'s BatchNorm layers in eval mode."""
        super().train(mode)
        self.rgb_net.freeze_batchnorm()
        return self


class FNRMVSNet(nn.Module):
    """DFNRMVS: ``regressor`` (initial pose) and ``opt_layer`` (the learned optimisation).

    Args:
        morphable_model: the 3DMM (:class:`~models.morphable_model.MorphableModel`) the checkpoint was
            trained with; its tensors are kept as non-persistent buffers of ``opt_layer.face``.
        n_shape_para, n_exp_para: regressor head sizes (released checkpoint: 199 and 29).

    ``train()`` keeps the regressor entirely in eval mode (it is not trained jointly).
    """

    def __init__(self, morphable_model: MorphableModel, n_shape_para: int = 199, n_exp_para: int = 29) -> None:
        super().__init__()
        self.regressor = RegressionNet(n_shape_para=n_shape_para, n_exp_para=n_exp_para)
        self.opt_layer = NRMVSOptimization(morphable_model)

    def train(self, mode: bool = True) -> "FNRMVSNet":
        super().train(mode)
        self.regressor.eval()
        return self

    def forward(
        self,
        images: torch.Tensor,
        raw_images: torch.Tensor,
        landmarks: torch.Tensor,
        create_graph: bool | None = None,
    ) -> "FNRMVSOutput":
        """Reconstruct one mesh per view.

        Args:
            images: (N, V, 3, 256, 256) ImageNet-normalised views of one face per sample.
            raw_images: (N, V, 3, 256, 256) the same views in [0, 1] (for the recorded colours).
            landmarks: (N, V, 68, 2) iBUG landmarks in pixels of the 256 crop (x right, y down).
            create_graph: keep second-order graphs through the gradient steps; defaults to
                ``self.training`` (the authors' ``create_graph=self.training``).
        Returns:
            :class:`FNRMVSOutput`.
        """
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"images must have shape (N, V, 3, H, W), got {tuple(images.shape)}")
        if raw_images.shape != images.shape:
            raise ValueError(f"raw_images has shape {tuple(raw_images.shape)}, images {tuple(images.shape)}")
        if landmarks.shape != (*images.shape[:2], 68, 2):
            raise ValueError(f"landmarks must have shape {(*images.shape[:2], 68, 2)}, got {tuple(landmarks.shape)}")
        if images.shape[1] < 2:
            raise ValueError("DFNRMVS needs at least two views per sample (the feature-metric term compares views)")
        with torch.no_grad():
            regression = self.regressor(images)
        if create_graph is None:
            create_graph = self.training
        result = run_nrmvs(self.opt_layer, images, raw_images, landmarks, regression.pose, create_graph=create_graph)
        face = self.opt_layer.face
        corrected = [
            correct_landmark_vertices(
                level.steps[-1].vertices.flatten(0, 1),
                face.landmark_indices,
                face.neighbour_vertices,
                face.neighbour_counts,
            ).view_as(level.steps[-1].vertices)
            for level in result.levels
        ]
        return FNRMVSOutput(regression=regression, optimisation=result, corrected_vertices=corrected)


@dataclass
class FNRMVSOutput:
    """What :meth:`FNRMVSNet.forward` returns (N samples, V views, n vertices).

    regression: the regressor's outputs (only its ``pose`` is used by the optimisation).
    optimisation: every stage of the learned optimisation (:class:`~models.nrmvs.NRMVSResult`).
    corrected_vertices: per level, the last step's vertices (N, V, n, 3) after the demo's landmark
        correction (``correct_landmark_verts``); the last entry is the reconstruction.
    """

    regression: RegressionOutput
    optimisation: NRMVSResult
    corrected_vertices: list[torch.Tensor]

    @property
    def vertices(self) -> torch.Tensor:
        """(N, V, n, 3) final meshes, camera space of the 256 crop in pixels (x right, y up, origin at centre)."""
        return self.corrected_vertices[-1]
