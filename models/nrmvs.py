"""The learned non-rigid multi-view stereo optimisation of DFNRMVS (Bai et al., CVPR 2020, Sec. 3.2-3.4).

Starting from the mean face posed by the regressor, three feature-pyramid levels (32x32, 64x64 and
128x128 features of a 256x256 input) each take three gradient steps on

* the identity coefficients (80, shared by the views),
* the per-view weak-perspective pose (6), and
* per-view coefficients (64) of an *adaptive basis* predicted for that level from the current mesh
  (level 2's basis starts from the expression PCA; levels 3 and 4 are free),

of the energy ``0.25 * feature-metric + 0.025 * landmark`` (scaled by the batch size N), with step sizes
``10 ** (s * tanh(raw) + b)`` predicted by a small network from the mean absolute residuals.

What the released model really does, reproduced here on purpose:

* the regressor's shape and expression (199 / 29 coefficients, heads sized for the full BFM) are thrown
  away; the optimisation restarts from zero identity and only the regressor's pose is used;
* expression coefficients never enter the vertices (the authors subtract them from themselves), so they
  stay zero: expression is modelled by the level-2 adaptive basis instead;
* each level restarts the adaptive coefficients at zero and freezes the previous levels' adaptive
  displacement (in model space, before posing);
* the colours recorded after a step are sampled at the vertices *before* that step's update.
"""

from dataclasses import dataclass, field

import torch
from torch import nn

from models import camera
from models.feature_sampling import sample_at_vertices
from models.mesh_geometry import backface_visibility
from models.nrmvs_energy import feature_metric_energy, landmark_energy

# Energy weights and step-size parameters of the released model (NRMVSOptimization.gradient_descent /
# forward). Groups of the step-size nets: (shape, expression, pose, adaptive).
FEATURE_WEIGHT = 0.25
LANDMARK_WEIGHT = 0.025
LEVELS = (2, 3, 4)
STEPS_PER_LEVEL = 3
STEP_SCALES = {2: (2.0, 2.0, 2.0, 4.0), 3: (4.0, 4.0, 4.0, 4.0), 4: (4.0, 4.0, 4.0, 4.0)}
STEP_BIASES = {2: (0.0, 0.0, -2.5, 0.0), 3: (0.0, 0.0, -2.5, 0.0), 4: (0.0, 0.0, -2.5, 0.0)}
NUM_ADAPTIVE = 64


@dataclass
class StepRecord:
    """One gradient step of one level (N samples, V views, n vertices).

    shape_coeffs (N, 80, 1), pose (N, V, 6), adaptive_coeffs (N, V, 64, 1): parameters after the step.
    vertices / image_vertices (N, V, n, 3): the mesh after the step (camera / image space, pixels).
    visible (N, V, n) bool: visible face-region vertices after the step; full_visible: whole mesh.
    colors (N, V, 3, n): normalised-image colours sampled at the vertices *before* the step.
    raw_step_size (N, 4): tanh output of the step net (shape, expression, pose, adaptive).
    delta_vertices (N, V, n, 3): this level's adaptive displacement after the step (model space).
    feature_energy, landmark_energy: scalars, the energy terms evaluated before the step.
    """

    shape_coeffs: torch.Tensor
    pose: torch.Tensor
    adaptive_coeffs: torch.Tensor
    vertices: torch.Tensor
    image_vertices: torch.Tensor
    visible: torch.Tensor
    full_visible: torch.Tensor
    colors: torch.Tensor
    raw_step_size: torch.Tensor
    delta_vertices: torch.Tensor
    feature_energy: torch.Tensor
    landmark_energy: torch.Tensor


@dataclass
class LevelRecord:
    """One pyramid level: its adaptive basis (N, 3n, 64), its steps, and colours (N, V, 3, n) of the
    [0, 1] images at the level's final vertices."""

    level: int
    adaptive_basis: torch.Tensor
    steps: list[StepRecord] = field(default_factory=list)
    final_colors: torch.Tensor | None = None


@dataclass
class NRMVSResult:
    """Everything the optimisation computes.

    initial_vertices / initial_image_vertices (N, V, n, 3): the regressor-posed mean face.
    initial_visible / initial_full_visible (N, V, n) bool; initial_colors (N, V, 3, n) from the
    normalised images; initial_raw_colors (N, V, 3, n) from the [0, 1] images.
    levels: one :class:`LevelRecord` per level (2, 3, 4).
    """

    initial_vertices: torch.Tensor
    initial_image_vertices: torch.Tensor
    initial_visible: torch.Tensor
    initial_full_visible: torch.Tensor
    initial_colors: torch.Tensor
    initial_raw_colors: torch.Tensor
    levels: list[LevelRecord] = field(default_factory=list)

    @property
    def steps(self) -> list[StepRecord]:
        """The 9 steps in order."""
        return [step for level in self.levels for step in level.steps]

    @property
    def stage_vertices(self) -> list[torch.Tensor]:
        """Vertices (N, V, n, 3) after each stage: the initial mesh, then every step (10 in all)."""
        return [self.initial_vertices, *(step.vertices for step in self.steps)]

    @property
    def final_vertices(self) -> torch.Tensor:
        """(N, V, n, 3) camera-space vertices after the last step (before the demo's landmark correction)."""
        return self.levels[-1].steps[-1].vertices if self.levels else self.initial_vertices


class _VertexModel:
    """How the optimised variables of one level map to vertices: the face model plus the level's
    adaptive basis and the frozen displacement of the earlier levels (no basis before the first level)."""

    def __init__(self, face, basis=None, adaptive_std=None, frozen_delta=None):
        self.face = face
        self.basis = basis  # (N, 3n, 64) or None
        self.adaptive_std = adaptive_std  # (1, 64, 1)
        self.frozen_delta = frozen_delta  # (N, V, n, 3) model space

    def vertices(self, shape_coeffs, pose, adaptive_coeffs):
        """Camera-space vertices (N, V, n, 3) and this level's adaptive displacement (N, V, n, 3) or None."""
        n_samples, n_views = pose.shape[:2]
        n = self.face.num_vertices
        with torch.enable_grad():
            model = self.face.shape_vertices(shape_coeffs)  # (N, n, 3), shared by the views
            offset = model.new_tensor([0.0, 0.0, camera.MODEL_DEPTH_OFFSET])
            model = (model - offset).unsqueeze(1).expand(n_samples, n_views, n, 3)
            delta = None
            if adaptive_coeffs is not None:
                coeffs = adaptive_coeffs.squeeze(-1) * self.adaptive_std.view(1, 1, -1)  # (N, V, 64)
                delta = (self.basis @ coeffs.transpose(1, 2)).transpose(1, 2).reshape(n_samples, n_views, n, 3)
                model = model + delta + self.frozen_delta
            posed = camera.transform_vertices(
                model.reshape(n_samples * n_views, n, 3), camera.denormalize_pose(pose.reshape(-1, 6))
            )
            return posed.view(n_samples, n_views, n, 3), delta


def _visibility(face, vertices):
    n_samples, n_views, n, _ = vertices.shape
    full = backface_visibility(vertices.reshape(-1, n, 3), face.triangles, face.adjacent_triangles)
    full = full.view(n_samples, n_views, n)
    return full & face.face_region_mask, full


def run_nrmvs(
    layer: nn.Module,
    images: torch.Tensor,
    raw_images: torch.Tensor,
    landmarks: torch.Tensor,
    pose: torch.Tensor,
    create_graph: bool = False,
) -> NRMVSResult:
    """Run the three-level learned optimisation.

    Args:
        layer: the ``opt_layer`` module (rgb_net, fpn, basis_fpn, step_net2..4, adap_B_net2..4, face).
        images: (N, V, 3, H, W) ImageNet-normalised views. raw_images: the same in [0, 1].
        landmarks: (N, V, 68, 2) detected landmarks in pixels (x right, y down).
        pose: (N, V, 6) initial normalised pose (the regressor's).
        create_graph: keep the graph of the gradient steps (training); False for inference.
    Returns:
        :class:`NRMVSResult`.
    """
    face = layer.face
    # Inference records detached tensors so that finished steps do not keep their graphs alive.
    keep = (lambda tensor: tensor) if create_graph else torch.Tensor.detach
    region = face.face_region_mask.nonzero().squeeze(1)  # (m,) face-region vertex indices, increasing
    n_samples, n_views, channels, height, width = images.shape
    image_size = (height, width)
    shape_coeffs = torch.zeros(n_samples, face.shape_std.shape[0], 1, device=images.device, dtype=images.dtype)
    vertex_model = _VertexModel(face)

    vertices, _ = vertex_model.vertices(shape_coeffs, pose, None)
    visible, full_visible = _visibility(face, vertices)
    result = NRMVSResult(
        initial_vertices=keep(vertices),
        initial_image_vertices=keep(camera.to_image(vertices, height, width)),
        initial_visible=visible,
        initial_full_visible=full_visible,
        initial_colors=sample_at_vertices(images, vertices.detach(), image_size),
        initial_raw_colors=sample_at_vertices(raw_images, vertices.detach(), image_size),
    )

    features = layer.rgb_net(images.reshape(n_samples * n_views, channels, height, width))
    energy_pyramid = layer.fpn(features[:6])
    basis_pyramid = layer.basis_fpn(features[:6])

    pose = pose.detach()
    frozen_delta = torch.zeros_like(vertices)
    delta = None
    for level in LEVELS:
        feature_map = energy_pyramid[level]
        basis_map = basis_pyramid[level]
        feature_map = feature_map.view(n_samples, n_views, *feature_map.shape[1:])
        basis_map = basis_map.view(n_samples, n_views, *basis_map.shape[1:])
        if delta is not None:
            frozen_delta = frozen_delta + delta.detach()
        basis_net = getattr(layer, f"adap_B_net{level}")
        basis = basis_net(basis_map, vertices.detach(), visible.unsqueeze(2), height, width).basis
        record = LevelRecord(level=level, adaptive_basis=keep(basis))
        vertex_model = _VertexModel(face, basis, basis_net.apEV, frozen_delta)

        shape_coeffs = shape_coeffs.detach().requires_grad_(True)
        pose = pose.detach().requires_grad_(True)
        adaptive = torch.zeros(n_samples, n_views, NUM_ADAPTIVE, 1, device=images.device, dtype=images.dtype)
        adaptive.requires_grad_(True)
        vertices, delta = vertex_model.vertices(shape_coeffs, pose, adaptive)
        visible, full_visible = _visibility(face, vertices)

        step_net = getattr(layer, f"step_net{level}")
        for _ in range(STEPS_PER_LEVEL):
            with torch.enable_grad():
                # Only face-region vertices can be co-visible: sampling the others would only feed zeros.
                region_vertices = vertices[:, :, region]
                vertex_features = sample_at_vertices(feature_map, region_vertices, image_size)
                feature_term = feature_metric_energy(vertex_features, visible[:, :, region])
                landmark_visible = full_visible[:, :, face.landmark_indices]
                landmark_term = landmark_energy(
                    vertices, landmarks, face.landmark_indices, landmark_visible, visible, image_size
                )
                energy = (FEATURE_WEIGHT * feature_term.value + LANDMARK_WEIGHT * landmark_term.value) * n_samples
                shape_grad, pose_grad, adaptive_grad = torch.autograd.grad(
                    energy, [shape_coeffs, pose, adaptive], create_graph=create_graph
                )
            steps = step_net(
                (feature_term.abs_residuals.mean(dim=1), landmark_term.abs_residuals.mean(dim=1)),
                STEP_SCALES[level],
                STEP_BIASES[level],
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
