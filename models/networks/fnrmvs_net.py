"""Module tree of DFNRMVS' FNRMVSNet: the regressor plus the learned non-rigid MVS optimiser.

Attribute names and construction order reproduce the authors' state-dict layout, so their
``2views_model.pth`` loads strictly (same keys, same shapes).
"""

from dataclasses import dataclass

import torch
from torch import nn

from ..face_model.landmark_layout import NUM_LANDMARKS
from ..face_model.morphable_model import MorphableModel
from ..geometry.mesh_ops import correct_landmark_vertices
from ..nrmvs.config import NRMVSConfig
from ..nrmvs.records import NRMVSResult
from ..nrmvs.unrolled import LevelModules, unrolled_optimisation
from .adaptive_basis import AdaptiveBasisNet
from .drn import RGBNet
from .face_model_buffers import FaceModelBuffers
from .feature_pyramid import FPN
from .regressor import RegressionNet, RegressionOutput
from .step_size_net import StepSizeNet

# Feature pyramids over RGBNet maps 4x4 .. 128x128 (of a 256 image), 128 channels, 8 GN groups; the
# pyramid uses the first FPN_BACKBONE_MAPS backbone maps, coarsest first.
FPN_IN_CHANNELS = (512, 512, 256, 128, 64, 32)
FPN_BACKBONE_MAPS = len(FPN_IN_CHANNELS)
FPN_OUT_CHANNELS = 128
FPN_GROUPS = 8
# Step-size nets: inputs = mean feature residual (128) + mean landmark residual (x, y);
# one step per parameter group (shape, expression, pose, adaptive).
STEP_NET_INPUTS = (FPN_OUT_CHANNELS, 2)
STEP_NET_WIDTH = 128
STEP_NET_OUTPUTS = (1, 1, 1, 1)
# The authors' regressor heads (sized for the full BFM; their outputs are not used, see models/nrmvs).
REGRESSOR_SHAPE_PARAMS = 199
REGRESSOR_EXPRESSION_PARAMS = 29
# The network compares views: at least this many per sample.
MIN_VIEWS = 2


class NRMVSOptimization(nn.Module):
    """Learned optimiser: feature extractor, two pyramids, and per level a step-size net and an adaptive-basis net.

    Submodules: ``rgb_net`` (DRN-D-38), ``fpn`` (features for the feature-metric energy), ``basis_fpn``
    (features for the adaptive bases), ``step_net{L}`` and ``adap_B_net{L}`` for each level L of
    ``config`` (the released model: 2, 3, 4 on the 32x32, 64x64 and 128x128 pyramid maps). The backbone's
    BatchNorm layers stay in eval mode under ``train()``. ``face`` holds the morphable model's tensors
    as non-persistent buffers (``bfm`` is the authors' name for it).
    """

    def __init__(self, morphable_model: MorphableModel, config: NRMVSConfig | None = None) -> None:
        super().__init__()
        mm = morphable_model
        self.config = config or NRMVSConfig()
        missing = [level.uv_size for level in self.config.levels if level.uv_size not in mm.uv_tables]
        if missing:
            raise ValueError(f"the morphable model has no UV rasterisation table of size {missing[0]}")
        self.face = FaceModelBuffers(mm)
        self.rgb_net = RGBNet()
        self.fpn = FPN(FPN_IN_CHANNELS, FPN_OUT_CHANNELS, FPN_GROUPS)
        self.basis_fpn = FPN(FPN_IN_CHANNELS, FPN_OUT_CHANNELS, FPN_GROUPS)
        step_nets = [StepSizeNet(STEP_NET_INPUTS, STEP_NET_WIDTH, STEP_NET_OUTPUTS) for _ in self.config.levels]
        basis_nets = [self._basis_net(mm, level.uv_size, level.expression_init) for level in self.config.levels]
        # Registered under the authors' checkpoint names (all step nets first, as their construction order).
        for level, net in zip(self.config.levels, step_nets, strict=True):
            self.add_module(f"step_net{level.level}", net)
        for level, net in zip(self.config.levels, basis_nets, strict=True):
            self.add_module(f"adap_B_net{level.level}", net)
        # A plain tuple (not registered a second time): the per-level nets in level order.
        self.level_modules = tuple(LevelModules(s, b) for s, b in zip(step_nets, basis_nets, strict=True))

    def _basis_net(self, mm: MorphableModel, uv_size: int, expression_init: bool) -> AdaptiveBasisNet:
        table = mm.uv_tables[uv_size]
        count = self.config.num_adaptive
        return AdaptiveBasisNet(
            uv_size,
            table.vertex_uv,
            table.pixel_vert_idx,
            table.pixel_vert_weights,
            mm.face_region_mask,
            exp_basis=mm.exp_basis[:, :count] if expression_init else None,
            exp_std=mm.exp_std[:count] if expression_init else None,
            n_adap_para=count,
            feat_channels=FPN_OUT_CHANNELS,
            n_planes=FPN_OUT_CHANNELS,
            n_gn=FPN_GROUPS,
        )

    @property
    def bfm(self) -> FaceModelBuffers:
        """The face model's tensors under the authors' name (``model.opt_layer.bfm``)."""
        return self.face

    def train(self, mode: bool = True) -> "NRMVSOptimization":
        """Sets the training mode but keeps ``rgb_net``'s BatchNorm layers in eval mode."""
        super().train(mode)
        self.rgb_net.freeze_batchnorm()
        return self

    def forward(
        self,
        images: torch.Tensor,
        raw_images: torch.Tensor,
        landmarks: torch.Tensor,
        pose: torch.Tensor,
        create_graph: bool = False,
    ) -> NRMVSResult:
        """Optimise the meshes of N samples of V views from an initial pose.

        Args:
            images: (N, V, 3, H, W) ImageNet-normalised views. raw_images: the same in [0, 1].
            landmarks: (N, V, 68, 2) landmarks in pixels (x right, y down).
            pose: (N, V, 6) initial normalised pose (the regressor's).
            create_graph: keep second-order graphs through the gradient steps (training). Without it
                (inference) nothing is differentiable: everything runs without autograd, the convolutions
                on channels-last tensors.
        Returns:
            :class:`~models.nrmvs.records.NRMVSResult`.
        """
        with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
            n_samples, n_views, channels, height, width = images.shape
            flat = images.reshape(n_samples * n_views, channels, height, width)
            energy_pyramid, basis_pyramid = self._pyramids(flat if create_graph else _channels_last(flat))
            return unrolled_optimisation(
                self.face,
                energy_pyramid,
                basis_pyramid,
                self.level_modules,
                images,
                raw_images,
                landmarks,
                pose,
                self.config,
                create_graph=create_graph,
            )

    def _pyramids(self, images: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """The two feature pyramids of (B, 3, H, W) images (the backbone maps are freed on return)."""
        backbone = self.rgb_net(images)[:FPN_BACKBONE_MAPS]
        return self.fpn(backbone), self.basis_fpn(backbone)


class FNRMVSNet(nn.Module):
    """DFNRMVS: ``regressor`` (initial pose) and ``opt_layer`` (the learned optimisation).

    Args:
        morphable_model: the 3DMM (:class:`~models.face_model.morphable_model.MorphableModel`) the checkpoint
            was trained with; its tensors are kept as non-persistent buffers of ``opt_layer.face``.
        n_shape_para, n_exp_para: regressor head sizes (released checkpoint: 199 and 29).
        config: the optimisation's levels, steps and weights (default: the released model's).

    ``train()`` keeps the regressor entirely in eval mode (it is not trained jointly).
    """

    def __init__(
        self,
        morphable_model: MorphableModel,
        n_shape_para: int = REGRESSOR_SHAPE_PARAMS,
        n_exp_para: int = REGRESSOR_EXPRESSION_PARAMS,
        config: NRMVSConfig | None = None,
    ) -> None:
        super().__init__()
        self.regressor = RegressionNet(n_shape_para=n_shape_para, n_exp_para=n_exp_para)
        self.opt_layer = NRMVSOptimization(morphable_model, config)

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
        *,
        reduced_precision: torch.dtype | None = None,
    ) -> "FNRMVSOutput":
        """Reconstruct one mesh per view.

        Args:
            images: (N, V, 3, 256, 256) ImageNet-normalised views of one face per sample.
            raw_images: (N, V, 3, 256, 256) the same views in [0, 1] (for the recorded colours).
            landmarks: (N, V, 68, 2) iBUG landmarks in pixels of the 256 crop (x right, y down).
            create_graph: keep second-order graphs through the gradient steps; defaults to
                ``self.training`` (the authors' ``create_graph=self.training``).
            reduced_precision: opt-in: run the convolutional networks under ``torch.autocast`` with this
                dtype (``torch.bfloat16`` on CPU, ``torch.float16`` or ``torch.bfloat16`` on CUDA); the
                optimisation's vertices, energy and gradients stay in float32. None (default): float32
                throughout, the faithful mode. Calling the model inside ``torch.autocast`` does the same.
        Returns:
            :class:`FNRMVSOutput`.
        """
        if reduced_precision is not None:
            with torch.autocast(images.device.type, dtype=reduced_precision):
                return self.forward(images, raw_images, landmarks, create_graph)
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"images must have shape (N, V, 3, H, W), got {tuple(images.shape)}")
        if raw_images.shape != images.shape:
            raise ValueError(f"raw_images has shape {tuple(raw_images.shape)}, images {tuple(images.shape)}")
        expected = (*images.shape[:2], NUM_LANDMARKS, 2)
        if landmarks.shape != expected:
            raise ValueError(f"landmarks must have shape {expected}, got {tuple(landmarks.shape)}")
        if images.shape[1] < MIN_VIEWS:
            raise ValueError(
                f"DFNRMVS needs at least {MIN_VIEWS} views per sample (the feature-metric term compares views)"
            )
        if create_graph is None:
            create_graph = self.training
        with torch.no_grad():
            regression = self.regressor(images if create_graph else _channels_last(images))
        pose = regression.pose.to(images.dtype)  # float32 also when the regressor ran under autocast
        result = self.opt_layer(images, raw_images, landmarks, pose, create_graph=create_graph)
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


def _channels_last(images: torch.Tensor) -> torch.Tensor:
    """Images (..., C, H, W) in channels-last memory order (oneDNN's fastest CPU convolutions); same values."""
    if images.dim() == 5:
        return images.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    return images.contiguous(memory_format=torch.channels_last)


@dataclass
class FNRMVSOutput:
    """What :meth:`FNRMVSNet.forward` returns (N samples, V views, n vertices).

    regression: the regressor's outputs (only its ``pose`` is used by the optimisation).
    optimisation: every stage of the learned optimisation (:class:`~models.nrmvs.records.NRMVSResult`).
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

    def nested(self, name: str) -> list:
        """The authors' nested per-stage lists for ``train/losses.py``: ``[initial, [level-1 steps], ...]``.

        name: "vertices" (their ``opt_verts``), "image_vertices" (``opt_verts_img``), "visible"
        (``opt_vis_masks``, face region) or "full_visible" (``opt_full_face_vis_masks``).
        """
        result = self.optimisation
        initial = {
            "vertices": result.initial_vertices,
            "image_vertices": result.initial_image_vertices,
            "visible": result.initial_visible,
            "full_visible": result.initial_full_visible,
        }
        if name not in initial:
            raise ValueError(f"name must be one of {', '.join(initial)}, got {name!r}")
        return [initial[name], *([getattr(step, name) for step in level.steps] for level in result.levels)]
