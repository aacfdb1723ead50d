"""The unrolled learned optimisation of DFNRMVS (Bai et al., CVPR 2020, Sec. 3.2-3.4).

Starting from the mean face posed by the regressor, each level of :class:`~models.nrmvs.config.NRMVSConfig`
takes ``steps_per_level`` gradient steps on

* the identity coefficients (shared by the views),
* the per-view weak-perspective pose (6), and
* per-view coefficients of an *adaptive basis* predicted for that level from the current mesh,

of ``feature_weight * feature-metric + landmark_weight * landmark`` (scaled by the batch size N), with
step sizes predicted by the level's step-size net from the mean absolute residuals.

What the released model really does, reproduced here on purpose:

* the regressor's shape and expression are thrown away; the optimisation restarts from zero identity and
  only the regressor's pose is used;
* expression coefficients never enter the vertices (the authors subtract them from themselves), so they
  stay zero: expression is modelled by the first level's adaptive basis instead;
* each level restarts the adaptive coefficients at zero and freezes the previous levels' adaptive
  displacement (in model space, before posing);
* the colours recorded after a step are sampled at the vertices *before* that step's update.
"""

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import torch
from torch import nn

from ..face_model.linear_model import LinearFaceModel
from ..geometry import camera
from ..geometry.visibility import backface_visibility
from .config import NRMVSConfig
from .energy import feature_metric_energy, landmark_energy
from .feature_sampling import sample_at_vertices
from .records import LevelRecord, NRMVSResult, StepRecord


class FaceTopology(Protocol):
    """The face model as the optimisation reads it (``models.networks.face_model_buffers.FaceModelBuffers``)."""

    num_vertices: int
    triangles: torch.Tensor
    adjacent_triangles: torch.Tensor
    landmark_indices: torch.Tensor
    face_region_mask: torch.Tensor

    @property
    def linear(self) -> LinearFaceModel: ...


class LevelModules(NamedTuple):
    """The networks of one level: the step-size net and the adaptive-basis net (with its ``apEV`` scales)."""

    step_net: nn.Module
    basis_net: nn.Module


class _VertexModel:
    """How the optimised variables of one level map to vertices: the face model plus the level's
    adaptive basis and the frozen displacement of the earlier levels (no basis before the first level)."""

    def __init__(self, face: FaceTopology, basis=None, adaptive_std=None, frozen_delta=None) -> None:
        self.face = face
        self.linear = face.linear
        self.basis = basis  # (N, 3n, K) or None
        self.adaptive_std = adaptive_std  # (1, K, 1)
        self.frozen_delta = frozen_delta  # (N, V, n, 3) model space

    def vertices(self, shape_coeffs, pose, adaptive_coeffs):
        """Camera-space vertices (N, V, n, 3) and this level's adaptive displacement (N, V, n, 3) or None."""
        n_samples, n_views = pose.shape[:2]
        n = self.face.num_vertices
        with torch.enable_grad():
            model = self.linear.vertices(shape_coeffs)  # (N, n, 3), shared by the views
            model = camera.remove_depth_offset(model).unsqueeze(1).expand(n_samples, n_views, n, 3)
            delta = None
            if adaptive_coeffs is not None:
                coeffs = adaptive_coeffs.squeeze(-1) * self.adaptive_std.view(1, 1, -1)  # (N, V, K)
                delta = (self.basis @ coeffs.transpose(1, 2)).transpose(1, 2).reshape(n_samples, n_views, n, 3)
                model = model + delta + self.frozen_delta
            posed = camera.transform_vertices(
                model.reshape(n_samples * n_views, n, 3), camera.denormalize_pose(pose.reshape(-1, 6))
            )
            return posed.view(n_samples, n_views, n, 3), delta


def _visibility(face: FaceTopology, vertices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(face-region visible, whole-mesh visible), each (N, V, n) bool."""
    n_samples, n_views, n, _ = vertices.shape
    full = backface_visibility(vertices.reshape(-1, n, 3), face.triangles, face.adjacent_triangles)
    full = full.view(n_samples, n_views, n)
    return full & face.face_region_mask, full


def unrolled_optimisation(
    face: FaceTopology,
    energy_features: Sequence[torch.Tensor],
    basis_features: Sequence[torch.Tensor],
    level_modules: Sequence[LevelModules],
    images: torch.Tensor,
    raw_images: torch.Tensor,
    landmarks: torch.Tensor,
    pose: torch.Tensor,
    config: NRMVSConfig,
    create_graph: bool = False,
) -> NRMVSResult:
    """Run the levels of ``config`` from the regressor's pose.

    Args:
        face: the face model's tensors (shape model, topology, masks).
        energy_features, basis_features: feature pyramids (indexable by pyramid level), each map
            (N * V, C, h, w), for the feature-metric energy and for the adaptive bases.
        level_modules: per level of ``config.levels``, its step-size and adaptive-basis nets.
        images: (N, V, 3, H, W) ImageNet-normalised views. raw_images: the same in [0, 1].
        landmarks: (N, V, 68, 2) detected landmarks in pixels (x right, y down).
        pose: (N, V, 6) initial normalised pose (the regressor's).
        create_graph: keep the graph of the gradient steps (training); False for inference.
    Returns:
        :class:`~models.nrmvs.records.NRMVSResult`.
    """
    if len(level_modules) != len(config.levels):
        raise ValueError(f"{len(level_modules)} level modules for {len(config.levels)} configured levels")
    # Inference records detached tensors so that finished steps do not keep their graphs alive.
    keep = (lambda tensor: tensor) if create_graph else torch.Tensor.detach
    region = face.face_region_mask.nonzero().squeeze(1)  # (m,) face-region vertex indices, increasing
    n_samples, n_views, _, height, width = images.shape
    image_size = (height, width)
    shape_dim = face.linear.shape_basis.shape[1]
    shape_coeffs = torch.zeros(n_samples, shape_dim, 1, device=images.device, dtype=images.dtype)

    vertices, _ = _VertexModel(face).vertices(shape_coeffs, pose, None)
    visible, full_visible = _visibility(face, vertices)
    result = NRMVSResult(
        initial_vertices=keep(vertices),
        initial_image_vertices=keep(camera.to_image(vertices, height, width)),
        initial_visible=visible,
        initial_full_visible=full_visible,
        initial_colors=sample_at_vertices(images, vertices.detach(), image_size),
        initial_raw_colors=sample_at_vertices(raw_images, vertices.detach(), image_size),
    )

    pose = pose.detach()
    frozen_delta = torch.zeros_like(vertices)
    delta = None
    for level, modules in zip(config.levels, level_modules, strict=True):
        feature_map = energy_features[level.level]
        basis_map = basis_features[level.level]
        feature_map = feature_map.view(n_samples, n_views, *feature_map.shape[1:])
        basis_map = basis_map.view(n_samples, n_views, *basis_map.shape[1:])
        if delta is not None:
            frozen_delta = frozen_delta + delta.detach()
        basis_net = modules.basis_net
        basis = basis_net(basis_map, vertices.detach(), visible.unsqueeze(2), height, width).basis
        record = LevelRecord(level=level.level, adaptive_basis=keep(basis))
        vertex_model = _VertexModel(face, basis, basis_net.apEV, frozen_delta)

        shape_coeffs = shape_coeffs.detach().requires_grad_(True)
        pose = pose.detach().requires_grad_(True)
        adaptive = torch.zeros(n_samples, n_views, config.num_adaptive, 1, device=images.device, dtype=images.dtype)
        adaptive.requires_grad_(True)
        vertices, delta = vertex_model.vertices(shape_coeffs, pose, adaptive)
        visible, full_visible = _visibility(face, vertices)

        for _ in range(config.steps_per_level):
            with torch.enable_grad():
                # Only face-region vertices can be co-visible: sampling the others would only feed zeros.
                region_vertices = vertices[:, :, region]
                vertex_features = sample_at_vertices(feature_map, region_vertices, image_size)
                feature_term = feature_metric_energy(vertex_features, visible[:, :, region])
                landmark_visible = full_visible[:, :, face.landmark_indices]
                landmark_term = landmark_energy(
                    vertices, landmarks, face.landmark_indices, landmark_visible, visible, image_size
                )
                weighted = config.feature_weight * feature_term.value + config.landmark_weight * landmark_term.value
                energy = weighted * n_samples
                shape_grad, pose_grad, adaptive_grad = torch.autograd.grad(
                    energy, [shape_coeffs, pose, adaptive], create_graph=create_graph
                )
            steps = modules.step_net(
                (feature_term.abs_residuals.mean(dim=1), landmark_term.abs_residuals.mean(dim=1)),
                level.step_scales,
                level.step_biases,
            )
            shape_step, _, pose_step, adaptive_step = steps.steps
            with torch.enable_grad():
                shape_coeffs = shape_coeffs - shape_step.view(-1, 1, 1) * shape_grad
                pose = pose - pose_step.view(-1, 1, 1) * pose_grad
                adaptive = adaptive - adaptive_step.view(-1, 1, 1, 1) * adaptive_grad
            colors = sample_at_vertices(images, vertices.detach(), image_size)
            vertices, delta = vertex_model.vertices(shape_coeffs, pose, adaptive)
            visible, full_visible = _visibility(face, vertices)
            record.steps.append(
                StepRecord(
                    shape_coeffs=keep(shape_coeffs),
                    pose=keep(pose),
                    adaptive_coeffs=keep(adaptive),
                    vertices=keep(vertices),
                    image_vertices=keep(camera.to_image(vertices, height, width)),
                    visible=visible,
                    full_visible=full_visible,
                    colors=colors,
                    raw_step_size=keep(steps.raw),
                    delta_vertices=keep(delta),
                    feature_energy=feature_term.value.detach(),
                    landmark_energy=landmark_term.value.detach(),
                )
            )
        record.final_colors = sample_at_vertices(raw_images, vertices.detach(), image_size)
        result.levels.append(record)
    return result
