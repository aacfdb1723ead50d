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

Two ways to take a step, chosen by ``create_graph``. Training (True) differentiates the energy with autograd
and keeps the second-order graph. Inference (False) needs no graph: every output is detached anyway, so the
whole optimisation runs without autograd, features and their slopes are read from per-level tables at
shared bilinear taps, and the gradients with respect to the identity, the poses and the adaptive
coefficients are written out (chain rule through the weak-perspective camera and the two linear bases).
Both give the same steps up to float32 rounding (tests/nrmvs/test_unrolled.py).
"""

import functools
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import torch
from torch import nn

from ..face_model.linear_model import LinearFaceModel
from ..geometry import camera
from ..geometry.visibility import backface_visibility
from .config import LevelConfig, NRMVSConfig
from .energy import (
    EnergyTerm,
    feature_metric_energy,
    feature_metric_energy_and_gradient,
    landmark_energy,
    landmark_energy_and_gradient,
)
from .feature_sampling import feature_tables, position_gradient, sample_at_vertices, sample_features
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
    """The networks of one level: the step-size net and the adaptive-basis net (with its ``apEV`` scales and
    ``read_basis``, :class:`~models.networks.adaptive_basis.AdaptiveBasisNet`)."""

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
        with torch.enable_grad():
            model, delta = self.model_space(shape_coeffs, adaptive_coeffs, pose.shape[1])
            return self.posed(model, pose), delta

    def model_space(self, shape_coeffs, adaptive_coeffs, n_views: int):
        """Depth-offset model-space vertices (N, V, n, 3) and the adaptive displacement (N, V, n, 3) or None."""
        n_samples = shape_coeffs.shape[0]
        n = self.face.num_vertices
        model = self.linear.vertices(shape_coeffs)  # (N, n, 3), shared by the views
        model = camera.remove_depth_offset(model).unsqueeze(1).expand(n_samples, n_views, n, 3)
        delta = None
        if adaptive_coeffs is not None:
            coeffs = adaptive_coeffs.squeeze(-1) * self.adaptive_std.view(1, 1, -1)  # (N, V, K)
            delta = (self.basis @ coeffs.transpose(1, 2)).transpose(1, 2).reshape(n_samples, n_views, n, 3)
            model = model + delta + self.frozen_delta
        return model, delta

    @staticmethod
    def posed(model: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """(N, V, n, 3) depth-offset model-space vertices and (N, V, 6) poses -> camera space (N, V, n, 3)."""
        n_samples, n_views, n, _ = model.shape
        posed = camera.transform_vertices(
            model.reshape(n_samples * n_views, n, 3), camera.denormalize_pose(pose.reshape(-1, 6))
        )
        return posed.view(n_samples, n_views, n, 3)

    def gradients(
        self, posed_gradient: torch.Tensor, model: torch.Tensor, pose: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Chain rule from camera-space vertices to the optimised variables (inference: no autograd graph).

        With ``P = R (s X) + t`` per view (rotation R and scale s from the pose, X = :meth:`model_space`):
        dE/dX = s R^T dE/dP, dE/dR = sum_k dE/dP_k (s X_k)^T, dE/ds = sum_k X_k . R^T dE/dP_k and
        dE/dt = sum_k dE/dP_k; the pose gradient follows from these through the (tiny) Euler-angle map.

        Args:
            posed_gradient: (N, V, n, 3) dE / d camera-space vertices.
            model: (N, V, n, 3) the :meth:`model_space` vertices the energy was evaluated at.
            pose: (N, V, 6) the normalised poses.
        Returns:
            dE / d shape coefficients (N, ks, 1), d pose (N, V, 6), d adaptive coefficients (N, V, K, 1).
        """
        n_samples, n_views, n, _ = model.shape
        flat_pose = pose.detach().reshape(-1, 6)
        with torch.enable_grad():
            leaf = flat_pose.clone().requires_grad_(True)
            params = camera.denormalize_pose(leaf)
            rotation = camera.euler_to_matrix(params.pitch, params.yaw, params.roll)  # (B, 3, 3)
        grad = posed_gradient.reshape(n_samples * n_views, n, 3)
        points = model.reshape(n_samples * n_views, n, 3)
        scale = params.scale.detach().view(-1, 1, 1)
        unrotated = torch.bmm(grad, rotation.detach())  # rows R^T dE/dP
        rotation_grad = torch.bmm(grad.transpose(1, 2), points) * scale  # sum_k dE/dP_k (s X_k)^T
        scale_grad = torch.linalg.vecdot(unrotated.reshape(len(grad), -1), points.reshape(len(grad), -1))
        shift_grad = grad.sum(dim=1)  # (B, 3)
        (pose_grad,) = torch.autograd.grad(
            [rotation, params.scale, params.tx, params.ty],
            leaf,
            [rotation_grad, scale_grad, shift_grad[:, 0], shift_grad[:, 1]],
        )
        model_grad = (unrotated * scale).view(n_samples, n_views, 3 * n)
        shape_grad = model_grad.sum(dim=1) @ self.linear.shape_basis  # (N, ks)
        adaptive_grad = None
        if self.basis is not None:
            adaptive_grad = torch.bmm(model_grad, self.basis) * self.adaptive_std.view(1, 1, -1)  # (N, V, K)
            adaptive_grad = adaptive_grad.unsqueeze(-1)
        return shape_grad.unsqueeze(-1), pose_grad.view(n_samples, n_views, 6), adaptive_grad


def _visibility(face: FaceTopology, vertices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(face-region visible, whole-mesh visible), each (N, V, n) bool."""
    n_samples, n_views, n, _ = vertices.shape
    full = backface_visibility(vertices.reshape(-1, n, 3), face.triangles, face.adjacent_triangles)
    full = full.view(n_samples, n_views, n)
    return full & face.face_region_mask, full


class _Mesh(NamedTuple):
    """The mesh at the current variables: camera-space vertices and adaptive displacement (N, V, n, 3), the
    visibility masks (N, V, n), and (inference only) the depth-offset model-space vertices."""

    vertices: torch.Tensor
    delta: torch.Tensor | None
    visible: torch.Tensor
    full_visible: torch.Tensor
    model: torch.Tensor | None


class _Variables(NamedTuple):
    """shape (N, ks, 1), pose (N, V, 6), adaptive (N, V, K, 1) or None before the first level."""

    shape: torch.Tensor
    pose: torch.Tensor
    adaptive: torch.Tensor | None


class _StepGradient(NamedTuple):
    feature_term: EnergyTerm
    landmark_term: EnergyTerm
    gradients: _Variables


class _Level:
    """One level's fixed inputs: the face model, its vertex model, the energy's features, the landmarks."""

    def __init__(
        self,
        face: FaceTopology,
        vertex_model: _VertexModel,
        feature_map: torch.Tensor,
        landmarks: torch.Tensor,
        config: NRMVSConfig,
        create_graph: bool,
    ) -> None:
        self.face = face
        self.vertex_model = vertex_model
        self.landmarks = landmarks
        self.config = config
        self.create_graph = create_graph
        self.region = face.face_region_mask.nonzero().squeeze(1)  # (m,) face-region vertex indices, increasing
        self.feature_map = feature_map  # (N, V, C, h, w)
        self.tables = None if create_graph else feature_tables(feature_map.flatten(0, 1))

    def mesh(self, variables: _Variables) -> _Mesh:
        """The mesh at ``variables`` (with the graph in training)."""
        if self.create_graph:
            vertices, delta = self.vertex_model.vertices(variables.shape, variables.pose, variables.adaptive)
            model = None
        else:
            model, delta = self.vertex_model.model_space(variables.shape, variables.adaptive, variables.pose.shape[1])
            vertices = self.vertex_model.posed(model, variables.pose)
        visible, full_visible = _visibility(self.face, vertices)
        return _Mesh(vertices, delta, visible, full_visible, model)

    def gradient(self, mesh: _Mesh, variables: _Variables, image_size: tuple[int, int]) -> _StepGradient:
        """The energy terms at ``mesh`` and the gradient of the weighted energy (times N) w.r.t. ``variables``."""
        if self.create_graph:
            return self._autograd_gradient(mesh, variables, image_size)
        return self._analytic_gradient(mesh, variables, image_size)

    def _autograd_gradient(self, mesh: _Mesh, variables: _Variables, image_size: tuple[int, int]) -> _StepGradient:
        face, config = self.face, self.config
        with torch.enable_grad():
            # Only face-region vertices can be co-visible: sampling the others would only feed zeros.
            region_vertices = mesh.vertices[:, :, self.region]
            vertex_features = sample_at_vertices(self.feature_map, region_vertices, image_size)
            feature_term = feature_metric_energy(vertex_features, mesh.visible[:, :, self.region])
            landmark_visible = mesh.full_visible[:, :, face.landmark_indices]
            landmark_term = landmark_energy(
                mesh.vertices, self.landmarks, face.landmark_indices, landmark_visible, mesh.visible, image_size
            )
            weighted = config.feature_weight * feature_term.value + config.landmark_weight * landmark_term.value
            energy = weighted * mesh.vertices.shape[0]
            gradients = torch.autograd.grad(energy, list(variables), create_graph=True)
        return _StepGradient(feature_term, landmark_term, _Variables(*gradients))

    def _analytic_gradient(self, mesh: _Mesh, variables: _Variables, image_size: tuple[int, int]) -> _StepGradient:
        face, config = self.face, self.config
        height, width = image_size
        n_samples, n_views, n, _ = mesh.vertices.shape
        # The feature term only reads vertices that two views of a sample see (the others are masked out of
        # every pair): sample those face-region vertices only.
        region_visible = mesh.visible[:, :, self.region]
        rows = ((region_visible.sum(dim=1) >= 2).any(dim=0)).nonzero().squeeze(1)
        used = self.region[rows]
        samples = sample_features(self.tables, mesh.vertices[:, :, used], image_size)
        features = samples.values.view(n_samples, n_views, len(used), self.tables.values.shape[1])
        feature = feature_metric_energy_and_gradient(features, region_visible[:, :, rows])
        taps = samples.taps
        del samples, features  # the pair differences hold what the gradient needs
        projected = camera.to_image(mesh.vertices, height, width)[..., :2]
        landmark = landmark_energy_and_gradient(
            projected,
            self.landmarks,
            face.landmark_indices,
            mesh.full_visible[:, :, face.landmark_indices],
            mesh.visible,
            image_size,
        )
        # d energy / d image position (u, v) of every vertex, then to camera space: u = x + W/2, v = H/2 - 1 - y
        image_grad = landmark.gradient.mul_(config.landmark_weight * n_samples)
        feature_grad = position_gradient(self.tables, taps, feature.pairs, image_size, n_views)
        image_grad.index_add_(2, used, feature_grad.mul_(config.feature_weight * n_samples))
        posed_grad = torch.stack(
            [image_grad[..., 0], -image_grad[..., 1], torch.zeros_like(image_grad[..., 0])], dim=-1
        )
        gradients = self.vertex_model.gradients(posed_grad, mesh.model, variables.pose)
        return _StepGradient(feature.term, landmark.term, _Variables(*gradients))


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
        create_graph: keep the graph of the gradient steps (training); False for inference, where every
            recorded tensor is detached and no autograd graph is built.
    Returns:
        :class:`~models.nrmvs.records.NRMVSResult`.

    Under ``torch.autocast`` (the reduced-precision mode) only the adaptive-basis CNNs run in reduced precision:
    the vertices, the energy and its gradients stay in the dtype of ``images`` (feature maps are cast to it).
    """
    if len(level_modules) != len(config.levels):
        raise ValueError(f"{len(level_modules)} level modules for {len(config.levels)} configured levels")
    device = images.device.type
    cnn_precision = _AutocastState(torch.is_autocast_enabled(device), torch.get_autocast_dtype(device), device)
    arguments = (face, energy_features, basis_features, level_modules, images, raw_images, landmarks, pose, config)
    with torch.autocast(device, enabled=False), torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
        return _optimise(*arguments, cnn_precision=cnn_precision, create_graph=create_graph)


class _AutocastState(NamedTuple):
    """The caller's autocast state for ``device``, restored around the adaptive-basis CNNs."""

    enabled: bool
    dtype: torch.dtype
    device: str

    def context(self) -> torch.autocast:
        return torch.autocast(self.device, dtype=self.dtype, enabled=self.enabled)


def _optimise(
    face: FaceTopology,
    energy_features: Sequence[torch.Tensor],
    basis_features: Sequence[torch.Tensor],
    level_modules: Sequence[LevelModules],
    images: torch.Tensor,
    raw_images: torch.Tensor,
    landmarks: torch.Tensor,
    pose: torch.Tensor,
    config: NRMVSConfig,
    cnn_precision: _AutocastState,
    create_graph: bool,
) -> NRMVSResult:
    # Inference records detached tensors so that finished steps do not keep their graphs alive.
    keep = (lambda tensor: tensor) if create_graph else torch.Tensor.detach
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

    mesh = _Mesh(vertices, None, visible, full_visible, None)
    variables = _Variables(shape_coeffs, pose.detach(), None)
    frozen_delta = torch.zeros_like(vertices)
    for level, modules in zip(config.levels, level_modules, strict=True):
        if mesh.delta is not None:
            frozen_delta = frozen_delta + mesh.delta.detach()
        maps = [pyramid[level.level].to(images.dtype) for pyramid in (energy_features, basis_features)]
        maps = [feature.view(n_samples, n_views, *feature.shape[1:]) for feature in maps]
        record, mesh, variables = _run_level(
            face,
            level,
            modules,
            maps,
            mesh,
            variables,
            frozen_delta,
            (images, raw_images, landmarks),
            config,
            cnn_precision,
            create_graph,
        )
        result.levels.append(record)
    return result


def _run_level(
    face: FaceTopology,
    level: LevelConfig,
    modules: LevelModules,
    maps: Sequence[torch.Tensor],
    mesh: _Mesh,
    variables: _Variables,
    frozen_delta: torch.Tensor,
    views: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    config: NRMVSConfig,
    cnn_precision: _AutocastState,
    create_graph: bool,
) -> tuple[LevelRecord, _Mesh, _Variables]:
    """One level from ``mesh`` / ``variables`` (the previous level's last ones); returns its record and its last
    mesh and variables. ``maps``: the level's energy and basis feature maps, each (N, V, C, h, w); ``views``:
    the images, the raw images and the landmarks."""
    keep = (lambda tensor: tensor) if create_graph else torch.Tensor.detach
    images, raw_images, landmarks = views
    n_samples, n_views, _, height, width = images.shape
    image_size = (height, width)
    feature_map, basis_map = maps
    basis_net = modules.basis_net
    with cnn_precision.context():
        basis, basis_uv = basis_net(basis_map, mesh.vertices.detach(), mesh.visible.unsqueeze(2), height, width)
    # inference records the compact UV form (see LevelRecord); the basis itself lives while the level runs
    recorded = basis if create_graph else functools.partial(basis_net.read_basis, basis_uv)
    record = LevelRecord(level=level.level, adaptive_basis=recorded)
    vertex_model = _VertexModel(face, basis, basis_net.apEV, frozen_delta)
    context = _Level(face, vertex_model, feature_map, landmarks, config, create_graph)

    adaptive = torch.zeros(n_samples, n_views, config.num_adaptive, 1, device=images.device, dtype=images.dtype)
    variables = _Variables(variables.shape.detach(), variables.pose.detach(), adaptive)
    if create_graph:
        variables = _Variables(*(tensor.requires_grad_(True) for tensor in variables))
    mesh = context.mesh(variables)

    for _ in range(config.steps_per_level):
        step = context.gradient(mesh, variables, image_size)
        variables, raw_step = _descend(modules, level, step, variables, create_graph)
        colors = sample_at_vertices(images, mesh.vertices.detach(), image_size)
        mesh = context.mesh(variables)
        record.steps.append(
            StepRecord(
                shape_coeffs=keep(variables.shape),
                pose=keep(variables.pose),
                adaptive_coeffs=keep(variables.adaptive),
                vertices=keep(mesh.vertices),
                image_vertices=keep(camera.to_image(mesh.vertices, height, width)),
                visible=mesh.visible,
                full_visible=mesh.full_visible,
                colors=colors,
                raw_step_size=keep(raw_step),
                delta_vertices=keep(mesh.delta),
                feature_energy=step.feature_term.value.detach(),
                landmark_energy=step.landmark_term.value.detach(),
            )
        )
    record.final_colors = sample_at_vertices(raw_images, mesh.vertices.detach(), image_size)
    return record, mesh, variables


def _descend(
    modules: LevelModules, level: LevelConfig, step: _StepGradient, variables: _Variables, create_graph: bool
) -> tuple[_Variables, torch.Tensor]:
    """One gradient step with the step sizes the level's step net predicts; returns the new variables and
    the step net's raw (tanh) output (N, 4)."""
    steps = modules.step_net(
        (step.feature_term.abs_residuals.mean(dim=1), step.landmark_term.abs_residuals.mean(dim=1)),
        level.step_scales,
        level.step_biases,
    )
    shape_step, _, pose_step, adaptive_step = steps.steps
    gradients = step.gradients
    with torch.set_grad_enabled(create_graph):
        updated = _Variables(
            variables.shape - shape_step.view(-1, 1, 1) * gradients.shape,
            variables.pose - pose_step.view(-1, 1, 1) * gradients.pose,
            variables.adaptive - adaptive_step.view(-1, 1, 1, 1) * gradients.adaptive,
        )
    return updated, steps.raw
